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
from collections.abc import Iterator, Mapping, Sequence
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
        module.print = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for module in (coco, cocoeval):
            del module.print


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


def _match_counts(ev: Any, num_classes: int, score_thresholds: np.ndarray) -> _Counts:
    """TP / FP / GT / detections per class from COCOeval's per-image matches (one IoU).

    ``score_thresholds``: float ``[K]``, the operating point of each class.
    """
    c = _Counts(*(np.zeros(num_classes, int) for _ in range(4)))
    for e in ev.evalImgs:
        if e is None:
            continue
        k = e["category_id"] - 1
        c.num_gt[k] += int((~np.asarray(e["gtIgnore"], bool)).sum())
        scores = np.asarray(e["dtScores"])
        matched = np.asarray(e["dtMatches"])[0] > 0 if len(scores) else np.zeros(0, bool)
        ignored = np.asarray(e["dtIgnore"])[0].astype(bool) if len(scores) else np.zeros(0, bool)
        above = (scores >= score_thresholds[k]) & ~ignored
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
    score_threshold: float | Mapping[str, float] = 0.5,
    max_dets: int = 10000,
) -> dict[str, dict[str, float | int]]:
    """COCO mAP/AP50 and precision/recall at (``iou``, ``score_threshold``).

    Args:
        ground_truth: one entry per image.
        detections: one entry per image, same order, with scores.
        class_names: names of the class ids.
        iou: IoU for precision/recall.
        score_threshold: minimum score for precision/recall: one for all
            classes, or one per class name (e.g. a checkpoint's calibrated
            ``score_thresholds``; classes not named use 0.5).
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
    if isinstance(score_threshold, Mapping):
        thresholds = np.array([float(score_threshold.get(name, 0.5)) for name in class_names])
    else:
        thresholds = np.full(num_classes, float(score_threshold))
    c = _match_counts(ev_pr, num_classes, thresholds)
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


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall of one class as the score threshold falls.

    Attributes:
        scores: float ``[D]`` detection scores, descending (threshold i keeps scores[:i + 1]).
        precision: float ``[D]``.
        recall: float ``[D]``.
        num_gt: ground-truth boxes of the class.
    """

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_gt: int

    def best_f1(self) -> dict[str, float]:
        """The operating point of best F1: ``score_threshold``, ``f1``, ``precision``, ``recall``.

        Without detections or ground truth: threshold 0.5 and F1 0 (nothing to calibrate on).
        """
        if not len(self.scores) or not self.num_gt:
            return {"score_threshold": 0.5, "f1": 0.0, "precision": 0.0, "recall": 0.0}
        f1 = 2 * self.precision * self.recall / np.maximum(self.precision + self.recall, 1e-12)
        # among equal scores only the last index keeps them all: take that one
        last_of_score = np.r_[self.scores[1:] != self.scores[:-1], True]
        i = int(np.argmax(np.where(last_of_score, f1, -1.0)))
        return {
            "score_threshold": float(self.scores[i]),
            "f1": float(f1[i]),
            "precision": float(self.precision[i]),
            "recall": float(self.recall[i]),
        }


def pr_curves(
    ground_truth: Sequence[ImageBoxes],
    detections: Sequence[ImageBoxes],
    class_names: Sequence[str],
    *,
    iou: float = 0.5,
    max_dets: int = 10000,
) -> dict[str, PRCurve]:
    """Per class, precision and recall at every score threshold (COCOeval's matches at ``iou``).

    Example:
        >>> gt = [ImageBoxes(np.array([[0, 0, 10, 10], [20, 0, 30, 10]]), np.array([0, 0]))]
        >>> dt = [ImageBoxes(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0, 0]), np.array([0.9, 0.8]))]
        >>> c = pr_curves(gt, dt, ["tree"])["tree"]
        >>> c.precision.tolist(), c.recall.tolist(), c.best_f1()["score_threshold"]
        ([1.0, 0.5], [0.5, 0.5], 0.9)
    """
    num_classes = len(class_names)
    ev = _coco_eval(ground_truth, detections, num_classes, np.array([iou]), max_dets)
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    matched: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, int)
    for e in ev.evalImgs:
        if e is None:
            continue
        k = e["category_id"] - 1
        num_gt[k] += int((~np.asarray(e["gtIgnore"], bool)).sum())
        if len(e["dtScores"]):
            keep = ~np.asarray(e["dtIgnore"])[0].astype(bool)
            scores[k].append(np.asarray(e["dtScores"], float)[keep])
            matched[k].append((np.asarray(e["dtMatches"])[0] > 0)[keep])
    out = {}
    for k, name in enumerate(class_names):
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        m = np.concatenate(matched[k]) if matched[k] else np.zeros(0, bool)
        order = np.argsort(-s, kind="stable")
        s, m = s[order], m[order]
        tp, fp = np.cumsum(m), np.cumsum(~m)
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / max(int(num_gt[k]), 1)
        out[name] = PRCurve(s, precision.astype(float), recall.astype(float), int(num_gt[k]))
    return out


def best_f1_thresholds(
    ground_truth: Sequence[ImageBoxes],
    detections: Sequence[ImageBoxes],
    class_names: Sequence[str],
    *,
    iou: float = 0.4,
) -> dict[str, dict[str, float]]:
    """Score calibration: per class, the score threshold of best F1 at ``iou``.

    IoU 0.4 by default: hand-drawn boxes of tree crowns (and other objects
    without sharp edges) disagree with each other by about that much, and it
    is the IoU DeepForest evaluates its tree crowns at; a detector scored at
    0.5 there is penalised for annotator noise.

    Returns:
        ``{class: {"score_threshold", "f1", "precision", "recall"}}``.
    """
    curves = pr_curves(ground_truth, detections, class_names, iou=iou)
    return {name: curve.best_f1() for name, curve in curves.items()}
