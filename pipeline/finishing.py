"""One scene's last stage: its tiles' detections -> merged, filtered, georeferenced, written.

``finish_scene`` is a plain function (no Ray): ``ray_stages`` runs it as one
Ray task per scene, so merging and writing happen on the cluster's workers
while the driver goes on collecting the next scenes' tiles; unit tests call
it directly.  Everything it needs travels in ``FinishSettings`` (small,
picklable: the output CRS as WKT, the output location as a string) and it
returns a ``SceneOutcome``; it never raises for a scene's own problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pyproj import CRS

from pipeline.merging import MergeConfig, MergedBoxes, merge_scene
from pipeline.output import OutputExistsError, scene_output_name, write_scene_detections
from pipeline.storage import open_store
from pipeline.types import SceneInfo, TileDetections


@dataclass(frozen=True, slots=True)
class FinishSettings:
    """What every scene's finish needs; the same for all scenes of a run.

    Attributes:
        out_dir: output folder or ``s3://bucket/prefix``.
        out_crs_wkt: the dataset's CRS.
        merge: cross-tile merge settings.
        class_names: names indexed by label id.
        min_score_per_class: keep detections scoring at least this for their
            class (``--min-score``, else the model's calibrated scores); None
            keeps every detection.
        model_id: checkpoint id, written in each row.
        run_id: this run's id, written in each row.
        replace: replace an existing output (``--overwrite``).
    """

    out_dir: str
    out_crs_wkt: str
    merge: MergeConfig
    class_names: tuple[str, ...]
    min_score_per_class: tuple[float, ...] | None
    model_id: str
    run_id: str
    replace: bool


@dataclass(frozen=True, slots=True)
class SceneOutcome:
    """How finishing one scene went.

    Attributes:
        status: ``done``, ``exists`` (another run wrote it first) or ``failed``.
        output: the file written (or found), else None.
        num_detections: rows written.
        error: why it failed (names the scene), else None.
        storage_retries: S3 requests retried while writing.
        seconds: time spent merging and writing.
    """

    status: str
    output: str | None = None
    num_detections: int = 0
    error: str | None = None
    storage_retries: int = 0
    seconds: float = 0.0


def keep_scores(merged: MergedBoxes, min_score_per_class: tuple[float, ...] | None) -> MergedBoxes:
    """Drop detections scoring below their class's minimum; ``None`` keeps all."""
    if min_score_per_class is None:
        return merged
    keep = merged.scores >= np.asarray(min_score_per_class, np.float32)[merged.labels]
    return MergedBoxes(merged.boxes_xyxy_px[keep], merged.scores[keep], merged.labels[keep])


def finish_scene(scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> SceneOutcome:
    """Merge one scene's tile detections, keep those above the score floor, write its GeoParquet.

    Args:
        scene: the scene's header.
        tiles: every inferred tile's detections, tile pixels.
        settings: the run's merge, score and output settings.

    Returns:
        ``done`` with the file and its row count; ``exists`` when another run
        wrote the scene first (theirs is kept); ``failed`` with the reason.
    """
    started = time.time()
    store = open_store(settings.out_dir)
    try:
        merged = keep_scores(merge_scene(tiles, settings.merge), settings.min_score_per_class)
        path = write_scene_detections(
            store,
            scene,
            merged,
            class_names=settings.class_names,
            out_crs=CRS.from_wkt(settings.out_crs_wkt),
            model_id=settings.model_id,
            run_id=settings.run_id,
            replace=settings.replace,
        )
        outcome = SceneOutcome("done", str(path), len(merged))
    except OutputExistsError:
        outcome = SceneOutcome("exists", store.uri(scene_output_name(scene.uri)))
    except Exception as exc:
        outcome = SceneOutcome(
            "failed", error=f"{scene.uri}: merging/writing failed: {type(exc).__name__}: {exc}"
        )
    return SceneOutcome(
        outcome.status,
        outcome.output,
        outcome.num_detections,
        outcome.error,
        storage_retries=store.retries,
        seconds=round(time.time() - started, 3),
    )
