"""Detection metrics on tiles or whole scenes: COCO mAP, AP50, precision/recall.

Matching and AP are pycocotools' ``COCOeval`` (the reference implementation),
fed in memory.  Boxes may be in pixels (tiles) or CRS units (scenes): COCO's
area ranges are ignored (only ``all`` is reported) so units do not matter.

* ``map``: mean AP over IoU 0.50:0.95 (COCO), over classes with ground truth.
* ``ap50``: AP at IoU 0.5.
* ``precision`` / ``recall``: at one IoU (``iou``, default 0.5) and one score
  threshold (``score_threshold``): detections at or above it are matched
  greedily by score to ground truth by COCOeval's matcher.

Per class and overall (``overall`` pools all classes' matches for
precision/recall; its ``map``/``ap50`` are the means over classes).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes of one image (tile or scene).

    Attributes:
        boxes_xyxy: float ``[N, 4]`` (x1, y1, x2, y2), any consistent unit.
        labels: int ``[N]`` class ids.
        scores: float ``[N]`` for detections; None for ground truth.
    """

    boxes_xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None


@contextlib.contextmanager
def _quiet_pycocotools() -> Iterator[None]:
    """Silence pycocotools' progress prints.

    Ray workers re-route ``print``, so redirecting ``sys.stdout`` alone is not enough.
    """
    from pycocotools import coco, cocoeval

    for module in (coco, cocoeval):
        module.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in (coco, cocoeval):
            del module.print  # type: ignore[attr-defined]


def _coco_boxes(
    boxes_xyxy: np.ndarray, labels: np.ndarray, img_id: int, scores: np.ndarray | None
) -> list[dict[str, Any]]:
    """COCO records (``bbox`` as x, y, w, h; ``category_id`` = label + 1) of one image."""
    records = []
    boxes = np.asarray(boxes_xyxy, float).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for k, (box, label) in enumerate(zip(boxes, labels)):
        w, h = box[2] - box[0], box[3] - box[1]
        record = {
            "image_id": img_id,
            "category_id": int(label) + 1,
            "bbox": [box[0], box[1], w, h],
            "area": w * h,
        }
        if scores is not None:
            record["score"] = float(scores[k])
        records.append(record)
    return records


def _coco_datasets(
    gts: Sequence[ImageBoxes], dts: Sequence[ImageBoxes], num_classes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """In-memory COCO ground-truth and detection datasets, one image per entry."""
    images, annotations, results = [], [], []
    for img_id, (gt, dt) in enumerate(zip(gts, dts), start=1):
        images.append({"id": img_id})
        annotations += _coco_boxes(gt.boxes_xyxy, gt.labels, img_id, None)
        scores = dt.scores if dt.scores is not None else np.ones(len(dt.labels))
        results += _coco_boxes(dt.boxes_xyxy, dt.labels, img_id, np.asarray(scores).reshape(-1))
    categories = [{"id": k + 1} for k in range(num_classes)]
    gt_set = {
        "images": images,
        "annotations": [dict(a, id=i + 1, iscrowd=0) for i, a in enumerate(annotations)],
        "categories": categories,
    }
    dt_set = {
        "images": images,
        "annotations": [dict(r, id=i + 1, iscrowd=0) for i, r in enumerate(results)],
        "categories": categories,
    }
    return gt_set, dt_set


def _coco_eval(
    gts: Sequence[ImageBoxes],
    dts: Sequence[ImageBoxes],
    num_classes: int,
    iou_thrs: np.ndarray,
    max_dets: int,
) -> Any:
    """Run pycocotools' ``COCOeval`` (evaluate + accumulate) quietly, area range ``all`` only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_set, dt_set = _coco_datasets(gts, dts, num_classes)
    with contextlib.redirect_stdout(io.StringIO()), _quiet_pycocotools():
        gt_coco, dt_coco = COCO(), COCO()
        gt_coco.dataset, dt_coco.dataset = gt_set, dt_set
        gt_coco.createIndex()
        dt_coco.createIndex()
        ev = COCOeval(gt_coco, dt_coco, iouType="bbox")
        ev.params.iouThrs = iou_thrs
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [[0.0, 1e18]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(precision: np.ndarray) -> float:
    """Mean of valid (> -1) entries of a COCOeval precision slice; -1 when none."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


@dataclass
class _Counts:
    """Per-class counts at one IoU and score threshold (int ``[K]`` each)."""

    tp: np.ndarray
    fp: np.ndarray
    num_gt: np.ndarray
    num_det: np.ndarray


def _match_counts(ev: Any, num_classes: int, score_threshold: float) -> _Counts:
    """TP / FP / GT / detections per class from COCOeval's per-image matches (one IoU)."""
    c = _Counts(*(np.zeros(num_classes, int) for _ in range(4)))
    for e in ev.evalImgs:
        if e is None:
            continue
        k = e["category_id"] - 1
        c.num_gt[k] += int((~np.asarray(e["gtIgnore"], bool)).sum())
        scores = np.asarray(e["dtScores"])
        matched = np.asarray(e["dtMatches"])[0] > 0 if len(scores) else np.zeros(0, bool)
        ignored = np.asarray(e["dtIgnore"])[0].astype(bool) if len(scores) else np.zeros(0, bool)
        above = (scores >= score_threshold) & ~ignored
        c.tp[k] += int((matched & above).sum())
        c.fp[k] += int((~matched & above).sum())
        c.num_det[k] += int(above.sum())
    return c


def _summary(
    precision: np.ndarray, sel: slice | int, t: int, f: int, g: int, d: int
) -> dict[str, float | int]:
    """One row of the result: AP from the COCO precision array, P/R from the counts."""
    return {
        "map": _ap(precision[:, :, sel]),
        "ap50": _ap(precision[0, :, sel]),
        "precision": t / (t + f) if t + f else 0.0,
        "recall": t / g if g else 0.0,
        "num_gt": g,
        "num_det": d,
        "tp": t,
        "fp": f,
        "fn": g - t,
    }


def evaluate_detections(
    ground_truth: Sequence[ImageBoxes],
    detections: Sequence[ImageBoxes],
    class_names: Sequence[str],
    *,
    iou: float = 0.5,
    score_threshold: float = 0.5,
    max_dets: int = 10000,
) -> dict[str, dict[str, float | int]]:
    """COCO mAP/AP50 and precision/recall at (``iou``, ``score_threshold``).

    Args:
        ground_truth: one entry per image.
        detections: one entry per image, same order, with scores.
        class_names: names of the class ids.
        iou: IoU for precision/recall.
        score_threshold: minimum score for precision/recall.
        max_dets: detections per image considered (COCO's default 100 is too
            few for aerial scenes).

    Returns:
        ``{"overall": {...}, "<class>": {...}}`` each with ``map``, ``ap50``,
        ``precision``, ``recall``, ``num_gt``, ``num_det``, ``tp``, ``fp``, ``fn``.
        AP is -1 for a class with no ground truth.

    Example:
        >>> gt = [ImageBoxes(np.array([[0, 0, 10, 10]]), np.array([0]))]
        >>> dt = [ImageBoxes(np.array([[0, 0, 10, 10]]), np.array([0]), np.array([0.9]))]
        >>> round(evaluate_detections(gt, dt, ["car"])["overall"]["ap50"], 6)
        1.0
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection images")
    num_classes = len(class_names)
    ev = _coco_eval(ground_truth, detections, num_classes, np.linspace(0.5, 0.95, 10), max_dets)
    precision = ev.eval["precision"]  # (T, R, K, A=1, M=1)
    # precision/recall at one IoU and score: COCOeval's per-image matches
    ev_pr = _coco_eval(ground_truth, detections, num_classes, np.array([iou]), max_dets)
    c = _match_counts(ev_pr, num_classes, score_threshold)
    out: dict[str, dict[str, float | int]] = {}
    for k, name in enumerate(class_names):
        out[name] = _summary(precision, k, int(c.tp[k]), int(c.fp[k]), int(c.num_gt[k]), int(c.num_det[k]))
    with_gt = [out[name] for k, name in enumerate(class_names) if c.num_gt[k] > 0]
    overall = _summary(
        precision, slice(None), int(c.tp.sum()), int(c.fp.sum()), int(c.num_gt.sum()), int(c.num_det.sum())
    )
    overall["map"] = float(np.mean([m["map"] for m in with_gt])) if with_gt else -1.0
    overall["ap50"] = float(np.mean([m["ap50"] for m in with_gt])) if with_gt else -1.0
    out["overall"] = overall
    return out
