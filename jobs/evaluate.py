"""``aerialdet evaluate``: detections GeoParquet vs ground-truth GeoParquet, whole scenes."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _scene_key(uri: str) -> str:
    return uri if uri.startswith("s3://") else str(Path(uri).resolve())


@click.command(
    "evaluate", epilog="\b\nExample:\n  $ aerialdet evaluate out/ data/synth/labels.parquet --iou 0.5 --json"
)
@click.argument("detections")
@click.argument("ground_truth")
@click.option(
    "--iou",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="IoU for precision/recall.",
)
@click.option(
    "--score-threshold",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Score for precision/recall.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate_command(
    detections: str, ground_truth: str, iou: float, score_threshold: float, as_json: bool
) -> None:
    """COCO mAP, AP50, precision and recall of DETECTIONS against GROUND_TRUTH, per class and overall.

    Scenes are matched by their `scene` column (resolved local path, or file
    name when the paths differ); boxes are compared in the detections' CRS.
    """
    import numpy as np

    from pipeline.query import QueryError, read_detections
    from retinanet.evaluate import ImageBoxes, evaluate_detections

    try:
        dt = read_detections(detections)
        gt = read_detections(ground_truth)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if dt.crs and gt.crs and dt.crs != gt.crs:
        gt = gt.to_crs(dt.crs)
    gt_keys = {_scene_key(s) for s in gt["scene"]}
    by_name = {Path(s).name: _scene_key(s) for s in gt["scene"]}
    dt = dt.assign(
        key=[
            _scene_key(s) if _scene_key(s) in gt_keys else by_name.get(Path(s).name, _scene_key(s))
            for s in dt["scene"]
        ]
    )
    gt = gt.assign(key=[_scene_key(s) for s in gt["scene"]])
    class_names = sorted(set(gt["label"]) | set(dt["label"]))
    scenes = sorted(set(gt["key"]))
    unmatched = sorted(set(dt["key"]) - set(scenes))
    gts, dts = [], []
    for key in scenes:
        g, d = gt[gt["key"] == key], dt[dt["key"] == key]
        gts.append(
            ImageBoxes(
                g.geometry.bounds.to_numpy(), np.array([class_names.index(x) for x in g["label"]], int)
            )
        )
        dts.append(
            ImageBoxes(
                d.geometry.bounds.to_numpy(),
                np.array([class_names.index(x) for x in d["label"]], int),
                d["score"].to_numpy(),
            )
        )
    metrics = evaluate_detections(gts, dts, class_names, iou=iou, score_threshold=score_threshold)
    result = {
        "iou": iou,
        "score_threshold": score_threshold,
        "num_scenes": len(scenes),
        "scenes_without_ground_truth": unmatched,
        **metrics,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{len(scenes)} scene(s); precision/recall at IoU {iou}, score >= {score_threshold}")
    click.echo(f"{'class':<14}{'mAP':>7}{'AP50':>7}{'prec':>7}{'recall':>8}{'gt':>7}{'det':>7}")
    for name in [*class_names, "overall"]:
        m = metrics[name]
        click.echo(
            f"{name:<14}{m['map']:>7.3f}{m['ap50']:>7.3f}{m['precision']:>7.3f}{m['recall']:>8.3f}{m['num_gt']:>7}{m['num_det']:>7}"
        )
    if unmatched:
        click.echo(
            f"warning: {len(unmatched)} scene(s) have detections but no ground truth: {unmatched[:3]}",
            err=True,
        )
