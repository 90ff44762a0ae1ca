"""``evaluate --by-gsd``: AP50 per group of scenes of one GSD (issue 21: does a model hold across resolutions?).

Each scene's GSD comes from its header (``pipeline.resolution.pixel_size_m``
through ``pipeline.reading.read_header``: the geometric mean of its pixel
sides), rounded to 4 significant digits so the scenes of one survey form one
group; a scene whose header cannot be read, or whose pixel size cannot be
known, is in the group ``unknown``.  Each group is scored on its own scenes
(``retinanet.evaluate.evaluate_detections``, its ``overall`` figures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

UNKNOWN = "unknown"


def scene_gsd_m(uri: str) -> float | None:
    """A scene's GSD, metres (geometric mean of its pixel sides); None when its header cannot tell."""
    from pipeline.errors import PipelineError
    from pipeline.reading import ReadConfig, read_header
    from pipeline.resolution import pixel_size_m

    try:
        header = read_header(uri, ReadConfig())
    except PipelineError:
        return None
    if header.crs_wkt is None:
        return None
    sides = pixel_size_m(header.transform, header.crs_wkt, header.width_px, header.height_px)
    return None if sides is None else float(f"{math.sqrt(sides[0] * sides[1]):.4g}")


def gsd_groups(scenes: Sequence[str]) -> dict[str, list[int]]:
    """Scene indices per GSD group (``"0.15"`` m, ..., ``unknown``), finest first.

    Example:
        >>> gsd_groups(["/no/such.tif"])
        {'unknown': [0]}
    """
    groups: dict[float, list[int]] = {}
    unknown: list[int] = []
    for i, uri in enumerate(scenes):
        gsd = scene_gsd_m(uri)
        (unknown if gsd is None else groups.setdefault(gsd, [])).append(i)
    out = {f"{gsd:g}": groups[gsd] for gsd in sorted(groups)}
    return {**out, UNKNOWN: unknown} if unknown else out


def ap_by_gsd(
    ground_truth: Sequence[Any],
    detections: Sequence[Any],
    scenes: Sequence[str],
    class_names: Sequence[str],
    *,
    iou: float,
    score_threshold: float | Mapping[str, float],
) -> dict[str, dict[str, float | int]]:
    """The ``overall`` figures (``ap50``, ``map``, precision, recall, ...) per GSD group, with ``num_scenes``.

    Args:
        ground_truth: ``ImageBoxes`` per scene.
        detections: ``ImageBoxes`` per scene, same order.
        scenes: the scene URIs, same order.
        class_names: names of the class ids.
        iou: IoU for precision/recall.
        score_threshold: as ``evaluate_detections`` takes it.
    """
    from retinanet.evaluate import evaluate_detections

    out: dict[str, dict[str, float | int]] = {}
    for group, picks in gsd_groups(scenes).items():
        gts, dts = [ground_truth[i] for i in picks], [detections[i] for i in picks]
        overall = evaluate_detections(gts, dts, class_names, iou=iou, score_threshold=score_threshold)[
            "overall"
        ]
        out[group] = {"num_scenes": len(picks), **overall}
    return out


def gsd_table(by_gsd: Mapping[str, Mapping[str, float | int]]) -> list[str]:
    """``evaluate``'s per-GSD lines: group, scenes, mAP, AP50, precision, recall, gt, det."""
    lines = [f"{'GSD (m)':<14}{'scenes':>7}{'mAP':>7}{'AP50':>7}{'prec':>7}{'recall':>8}{'gt':>7}{'det':>7}"]
    for group, m in by_gsd.items():
        lines.append(
            f"{group:<14}{m['num_scenes']:>7}{m['map']:>7.3f}{m['ap50']:>7.3f}{m['precision']:>7.3f}"
            f"{m['recall']:>8.3f}{m['num_gt']:>7}{m['num_det']:>7}"
        )
    return lines
