"""``aerialdet evaluate``: detections GeoParquet vs ground-truth vector file, whole scenes.

Ground truth is any vector file geopandas reads (GeoParquet, GeoPackage,
Shapefile, ...; a folder or glob of GeoParquet files) with a ``label`` column
and polygon geometries, in any CRS: it is reprojected to the detections' CRS
(a file without a CRS is taken to be in the detections' CRS).  Boxes are
compared as the bounds of each geometry.

Which scene a ground-truth object belongs to:

* with a ``scene`` column (what ``aerialdet synth`` writes): by the resolved
  path, or by file name when the paths differ;
* without one (the way GIS users hold ground truth): by location.  Every scene
  that the detections name (in their rows, and in each file's metadata, so
  scenes with no detection count too) gets a footprint, taken from, in order:
  the ``footprint`` the detections file records, the raster's header (when the
  raster can still be opened), else the extent of that scene's detections
  (``retinanet.scene_ground_truth``, a ``geopandas.sjoin`` of centroids).  An
  object belongs to each scene whose footprint holds its centroid.  Objects
  outside every footprint are counted and reported, not scored.  A footprint
  taken from the detections' extent is smaller than the scene, so objects the
  model missed near its edges are not counted: recall there is an upper bound,
  and the command says so.

Scenes with detections but no ground truth are listed and left out.

Pixel-space ground truth (COCO ``.json``, Pascal VOC ``.xml`` or a folder of
them, DeepForest ``.csv``), as labelling tools write it for image chips, is
compared with the detections' scene-pixel boxes (``xmin_px`` .. ``ymax_px``),
whatever the georeferencing; images are matched by path, else by file name.
Images of the ground truth without detections count as misses.

Operating point: ``--score`` for every class; else, with ``--model``, the
best-F1 score per class that training stored in the checkpoint
(``score_thresholds`` in ``meta.json``); else 0.5.  ``--pr-curve FILE``
draws precision against recall per class with the operating point marked.
``--map Alive=Tree,Dead=Tree`` renames ground-truth classes first, as
``aerialdet train --map`` does (ground truth labelled ``Alive``/``Dead``
scored against a ``Tree`` model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from jobs.options import UserError, class_map_option, finite_float_range
from pipeline.errors import first_line

EPILOG = """\b
Examples:
  $ aerialdet evaluate out/ data/synth/labels.parquet --iou 0.5 --json
  $ aerialdet evaluate out/ trees.gpkg --score 0.3
  $ aerialdet evaluate out/ trees.gpkg --model runs/trees --pr-curve pr.png
  $ aerialdet evaluate out/ chips/annotations.xml --iou 0.4
  $ aerialdet evaluate out/ neon_labels.csv --map Alive=Tree,Dead=Tree
"""

PIXEL_LABEL_SUFFIXES = (".json", ".xml", ".csv")
PX_COLUMNS = ("xmin_px", "ymin_px", "xmax_px", "ymax_px")


def _read_detections(path: str) -> Any:
    """Detections as a GeoDataFrame (``pipeline.query``); a bad path is a ``UserError``."""
    from pipeline.query import read_detections
    from pipeline.query_sql import QueryError

    try:
        return read_detections(path)
    except QueryError as exc:
        raise UserError(first_line(exc)) from None


def _read_vector(path: str) -> Any:
    """Any vector file (or a folder/glob of GeoParquet files) as one GeoDataFrame."""
    import geopandas as gpd
    import pandas as pd

    from pipeline.query import dataset_files

    if any(ch in path for ch in "*?[") or Path(path).is_dir():
        frames = [gpd.read_parquet(f) for f in dataset_files(path)]
        return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
    if not Path(path).exists():
        raise UserError(f"{path}: no such file or directory")
    if Path(path).suffix.lower() in (".parquet", ".geoparquet"):
        return gpd.read_parquet(path)
    return gpd.read_file(path)


def _read_ground_truth(path: str, crs: Any) -> Any:
    """Ground truth with a ``label`` column and polygons, in ``crs``.

    Raises:
        UserError: unreadable file, no ``label`` column, or geometries that are not polygons.
    """
    expected = "expected GeoParquet, GeoPackage or Shapefile with 'label' and polygon 'geometry'"
    try:
        gt = _read_vector(path)
    except UserError:
        raise
    except Exception as exc:  # pyarrow, pyogrio and geopandas each raise their own errors
        raise UserError(f"{path}: cannot read ground truth ({first_line(exc)}); {expected}") from None
    if "label" not in gt.columns:
        raise UserError(f"{path}: no 'label' column (columns: {', '.join(map(str, gt.columns))}); {expected}")
    kinds = gt.geometry.geom_type.fillna("no geometry")
    bad = kinds[~kinds.isin(["Polygon", "MultiPolygon"])]
    if len(bad):
        found = ", ".join(f"{n} {kind}" for kind, n in bad.value_counts().items())
        raise UserError(f"{path}: ground truth must be polygons (boxes); found {found}")
    if gt.crs is None:
        click.echo(f"warning: {path} has no CRS; taken to be the detections' ({crs.to_string()})", err=True)
        gt = gt.set_crs(crs)
    gt = gt.to_crs(crs) if gt.crs != crs else gt
    return gt.assign(label=gt["label"].astype(str))


def _renamed(names: Any, rename: tuple[tuple[str, str], ...], path: str) -> dict[str, str]:
    """``--map`` as a dict, after checking that every name it renames is a ground-truth class of ``path``."""
    found = {str(n) for n in names}
    unknown = [f"{s}={t}" for s, t in rename if s not in found]
    if unknown:
        raise UserError(
            f"--map {','.join(unknown)}: {path} has no object labelled so (its labels: "
            f"{', '.join(sorted(found)) or 'none'}); check the spelling (names are case-sensitive)"
        )
    return dict(rename)


def _is_pixel_labels(path: str) -> bool:
    """Whether ``path`` is COCO/VOC/CSV ground truth in image pixels (a folder of VOC XML included)."""
    p = Path(path)
    return p.suffix.lower() in PIXEL_LABEL_SUFFIXES or (p.is_dir() and any(p.glob("*.xml")))


def _pixel_image_boxes(
    dt: Any, path: str, rename: tuple[tuple[str, str], ...] = ()
) -> tuple[list[Any], list[Any], list[str], dict[str, Any]]:
    """(ground truth, detections) ``ImageBoxes`` per labeled image, in image pixels; class names; info."""
    import numpy as np

    from retinanet.errors import LabelError
    from retinanet.evaluate import ImageBoxes
    from retinanet.labeled_tiles import read_labels
    from retinanet.scene_ground_truth import matched_keys, scene_key

    try:
        labels = read_labels([path])
    except LabelError as exc:
        raise UserError(str(exc)) from None
    missing = [c for c in PX_COLUMNS if c not in dt.columns]
    if missing:
        raise UserError(f"the detections have no pixel boxes ({', '.join(missing)}); re-run aerialdet detect")
    mapping = _renamed(labels.class_names, rename, path)
    gt_names = [mapping.get(n, n) for n in labels.class_names]
    class_names = sorted(set(gt_names) | set(dt["label"].astype(str)))
    by_path = {scene_key(im.path): im for im in labels.images}
    keys = matched_keys(dt["scene"], [im.path for im in labels.images])
    dt = dt.assign(key=keys)
    gts, dts = [], []
    for key, im in sorted(by_path.items()):
        names = [gt_names[k] for k in im.labels]
        d = dt[dt["key"] == key]
        gts.append(ImageBoxes(im.boxes_xyxy_px, np.array([class_names.index(n) for n in names], int)))
        d_ids = np.array([class_names.index(str(n)) for n in d["label"]], int)
        dts.append(ImageBoxes(d[list(PX_COLUMNS)].to_numpy(float), d_ids, d["score"].to_numpy(float)))
    info = {"matched_by": "image", "label_rows_left_out": len(labels.issues)}
    unmatched = sorted(set(keys) - set(by_path))
    return gts, dts, class_names, {**info, "unmatched": unmatched, "num_scenes": len(by_path)}


def _model_thresholds(model: str) -> dict[str, float]:
    """The calibrated per-class score thresholds stored in a checkpoint (or run) by training."""
    from retinanet.checkpoint import CheckpointError, check_score_thresholds, read_meta, resolve_checkpoint

    try:
        ckpt, _ = resolve_checkpoint(model)
        meta = read_meta(ckpt)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    thresholds = meta.get("score_thresholds")
    if not thresholds:
        raise click.BadParameter(
            f"{ckpt} holds no calibrated score_thresholds (written by training with validation boxes); "
            "pass --score instead",
            param_hint="--model",
        )
    try:  # the one check (read_meta has already run it; a dict that passed it stays valid)
        names = (meta.get("config") or {}).get("class_names") or list(thresholds)
        return check_score_thresholds(thresholds, names, str(ckpt))
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None


def _plot_pr(
    gts: list[Any], dts: list[Any], class_names: list[str], iou: float, out: str, score: Any
) -> None:
    """Precision/recall curve per class (PNG), the operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from retinanet.evaluate import pr_curves

    target = Path(out)
    if not target.parent.is_dir():
        raise UserError(f"--pr-curve {out}: folder {target.parent} does not exist")
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, curve in pr_curves(gts, dts, class_names, iou=iou).items():
        if not curve.num_gt:
            continue
        (line,) = ax.plot(curve.recall, curve.precision, label=f"{name} ({curve.num_gt} gt)")
        t = score.get(name, 0.5) if isinstance(score, dict) else score
        at = np.flatnonzero(curve.scores >= t)
        if len(at):
            ax.plot(curve.recall[at[-1]], curve.precision[at[-1]], "o", color=line.get_color())
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"IoU {iou}; dot: operating point",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def _warn(info: dict[str, Any], unmatched: list[str]) -> None:
    """Warnings on stderr: what was not scored, and where recall is only an upper bound."""
    outside = info.get("ground_truth_outside_scenes")
    from_detections, no_footprint = info.get("footprints_from_detections"), info.get("no_footprint")
    warnings = [
        (unmatched, f"{len(unmatched)} scene(s) have detections but no ground truth: {unmatched[:3]}"),
        (outside, f"{outside} ground-truth object(s) lie outside every scene"),
        (
            from_detections,
            "raster not readable, footprint = extent of the detections (recall is an upper bound) "
            f"for: {(from_detections or [])[:3]}",
        ),
        (no_footprint, f"no footprint (raster not readable, no detections) for: {(no_footprint or [])[:3]}"),
    ]
    for when, message in warnings:
        if when:
            click.echo(f"warning: {message}", err=True)


def _print_table(result: dict[str, Any], class_names: list[str]) -> None:
    score = result["score_threshold"]
    if isinstance(score, dict):
        score = "calibrated per class (" + ", ".join(f"{k} {v:.3f}" for k, v in sorted(score.items())) + ")"
    click.echo(f"{result['num_scenes']} scene(s); precision/recall at IoU {result['iou']}, score >= {score}")
    click.echo(f"{'class':<14}{'mAP':>7}{'AP50':>7}{'prec':>7}{'recall':>8}{'gt':>7}{'det':>7}")
    for name in [*class_names, "overall"]:
        m = result[name]
        click.echo(
            f"{name:<14}{m['map']:>7.3f}{m['ap50']:>7.3f}{m['precision']:>7.3f}{m['recall']:>8.3f}"
            f"{m['num_gt']:>7}{m['num_det']:>7}"
        )


@click.command("evaluate", epilog=EPILOG)
@click.argument("detections")
@click.argument("ground_truth")
@click.option(
    "--iou",
    default=0.5,
    show_default=True,
    type=finite_float_range(0.0, 1.0),
    help="IoU for precision/recall (> 0).",
)
@click.option(
    "--score-threshold",
    "--score",
    "score_threshold",
    default=None,
    type=finite_float_range(0.0, 1.0),
    help="Operating point: the score at or above which a detection counts for precision/recall "
    "[default: the --model's calibrated score per class, else 0.5].",
)
@click.option(
    "--model",
    default=None,
    help="Checkpoint or training run whose calibrated per-class score thresholds set the operating point.",
)
@click.option(
    "--pr-curve", default=None, type=click.Path(dir_okay=False), help="Write a precision/recall PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--by-gsd",
    is_flag=True,
    help="Also score each group of scenes of one GSD (from each scene's header) on its own: AP50 per GSD.",
)
@class_map_option(
    "Rename ground-truth classes first, e.g. Alive=Tree,Dead=Tree to score ground truth labelled "
    "Alive/Dead against a Tree model (each name must occur in GROUND_TRUTH)."
)
def evaluate_command(
    detections: str,
    ground_truth: str,
    iou: float,
    score_threshold: float | None,
    model: str | None,
    pr_curve: str | None,
    as_json: bool,
    class_map: tuple[tuple[str, str], ...] = (),
    by_gsd: bool = False,
) -> None:
    """COCO mAP, AP50, precision and recall of DETECTIONS against GROUND_TRUTH, per class and overall.

    DETECTIONS is what `aerialdet detect` wrote (a folder, file or glob).
    GROUND_TRUTH is a vector file of labelled polygons in any CRS; it is
    matched to scenes by its `scene` column, or by location when it has none.
    It may also be COCO .json, Pascal VOC .xml (or a folder of them) or
    DeepForest .csv, compared in image pixels.
    """
    from retinanet.evaluate import evaluate_detections

    if iou <= 0:
        raise click.BadParameter(f"must be > 0, got {iou}", param_hint="--iou")
    score: float | dict[str, float] = score_threshold if score_threshold is not None else 0.5
    if score_threshold is None and model is not None:
        score = _model_thresholds(model)
    dt = _read_detections(detections)
    if _is_pixel_labels(ground_truth):
        gts, dts, class_names, info = _pixel_image_boxes(dt, ground_truth, class_map)
        unmatched, num_scenes = info.pop("unmatched"), info.pop("num_scenes")
        scenes = None
    else:
        gts, dts, class_names, unmatched, info = _vector_image_boxes(dt, detections, ground_truth, class_map)
        num_scenes, scenes = len(gts), info.pop("scenes")
    metrics = evaluate_detections(gts, dts, class_names, iou=iou, score_threshold=score)
    if by_gsd:  # retinanet.evaluate_gsd: the scenes' GSDs from their headers
        metrics["by_gsd"] = _by_gsd(gts, dts, scenes, class_names, iou, score, ground_truth)
    result = {
        "iou": iou,
        "score_threshold": score,
        "num_scenes": num_scenes,
        "scenes_without_ground_truth": unmatched,
        **info,
        **metrics,
    }
    if pr_curve:
        _plot_pr(gts, dts, class_names, iou, pr_curve, score)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_table(result, class_names)
        if by_gsd:
            from retinanet.evaluate_gsd import gsd_table

            click.echo("\n".join(gsd_table(result["by_gsd"])))
    _warn(info, unmatched)


def _vector_image_boxes(
    dt: Any, detections: str, ground_truth: str, rename: tuple[tuple[str, str], ...] = ()
) -> tuple[list[Any], list[Any], list[str], list[str], dict[str, Any]]:
    """Vector ground truth in any CRS: per scene (ground truth, detections) ``ImageBoxes``, classes, unmatched, info."""
    from retinanet.scene_ground_truth import image_boxes, keys_by_location, keys_by_scene_column

    gt = _read_ground_truth(ground_truth, dt.crs)
    if rename:
        gt = gt.assign(label=gt["label"].replace(_renamed(gt["label"].unique(), rename, ground_truth)))
    if "scene" in gt.columns:
        dt, gt, info = keys_by_scene_column(dt, gt)
    else:
        dt, gt, info = keys_by_location(detections, dt, gt)
    scenes = sorted(set(gt["key"]))
    if not scenes:
        raise UserError(
            f"{ground_truth}: no ground-truth object lies in a scene of {detections} "
            f"(matched by {info['matched_by']}); do both cover the same scenes?"
        )
    class_names = sorted(set(gt["label"]) | set(dt["label"]))
    unmatched = sorted(set(dt["key"]) - set(scenes))
    gts, dts = image_boxes(dt, gt, scenes, class_names)
    return gts, dts, class_names, unmatched, {**info, "scenes": scenes}


def _by_gsd(
    gts: list[Any],
    dts: list[Any],
    scenes: list[str] | None,
    names: list[str],
    iou: float,
    score: Any,
    gt_path: str,
) -> dict[str, Any]:
    """``--by-gsd``: the overall figures per GSD group of the scored scenes (vector ground truth only)."""
    from retinanet.evaluate_gsd import ap_by_gsd

    if scenes is None:
        raise click.BadParameter(
            f"{gt_path}: pixel-space labels are scored per image, not per scene GSD; use vector ground truth",
            param_hint="--by-gsd",
        )
    return ap_by_gsd(gts, dts, scenes, names, iou=iou, score_threshold=score)
