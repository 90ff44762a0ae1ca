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


def _coco_eval(
    gts: Sequence[ImageBoxes],
    dts: Sequence[ImageBoxes],
    num_classes: int,
    iou_thrs: np.ndarray,
    max_dets: int,
):  # type: ignore[no-untyped-def]
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    ann_id = 1
    for img_id, (gt, dt) in enumerate(zip(gts, dts), start=1):
        images.append({"id": img_id})
        for box, label in zip(
            np.asarray(gt.boxes_xyxy, float).reshape(-1, 4), np.asarray(gt.labels).reshape(-1)
        ):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": int(label) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            ann_id += 1
        scores = dt.scores if dt.scores is not None else np.ones(len(dt.labels))
        for box, label, score in zip(
            np.asarray(dt.boxes_xyxy, float).reshape(-1, 4), np.asarray(dt.labels).reshape(-1), scores
        ):
            w, h = box[2] - box[0], box[3] - box[1]
            results.append(
                {
                    "image_id": img_id,
                    "category_id": int(label) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "score": float(score),
                    "area": w * h,
                }
            )
    gt_coco = COCO()
    gt_coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1} for k in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()), _quiet_pycocotools():
        gt_coco.createIndex()
        dt_coco = COCO()
        dt_coco.dataset = {
            "images": images,
            "annotations": [dict(r, id=i + 1, iscrowd=0) for i, r in enumerate(results)],
            "categories": gt_coco.dataset["categories"],
        }
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
    coco_thrs = np.linspace(0.5, 0.95, 10)
    ev = _coco_eval(ground_truth, detections, num_classes, coco_thrs, max_dets)
    precision = ev.eval["precision"]  # (T, R, K, A=1, M=1)

    # precision/recall at one IoU and score: COCOeval's per-image matches
    ev_pr = _coco_eval(ground_truth, detections, num_classes, np.array([iou]), max_dets)
    tp = np.zeros(num_classes, int)
    fp = np.zeros(num_classes, int)
    num_gt = np.zeros(num_classes, int)
    num_det = np.zeros(num_classes, int)
    for e in ev_pr.evalImgs:
        if e is None:
            continue
        k = e["category_id"] - 1
        gt_ignore = np.asarray(e["gtIgnore"], bool)
        num_gt[k] += int((~gt_ignore).sum())
        scores = np.asarray(e["dtScores"])
        matched = np.asarray(e["dtMatches"])[0] > 0 if len(scores) else np.zeros(0, bool)
        ignored = np.asarray(e["dtIgnore"])[0].astype(bool) if len(scores) else np.zeros(0, bool)
        above = (scores >= score_threshold) & ~ignored
        tp[k] += int((matched & above).sum())
        fp[k] += int((~matched & above).sum())
        num_det[k] += int(above.sum())

    def summary(sel: slice | int, t: int, f: int, g: int, d: int) -> dict[str, float | int]:
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

    out: dict[str, dict[str, float | int]] = {}
    per_class_map, per_class_ap50 = [], []
    for k, name in enumerate(class_names):
        out[name] = summary(k, int(tp[k]), int(fp[k]), int(num_gt[k]), int(num_det[k]))
        if num_gt[k] > 0:
            per_class_map.append(out[name]["map"])
            per_class_ap50.append(out[name]["ap50"])
    overall = summary(slice(None), int(tp.sum()), int(fp.sum()), int(num_gt.sum()), int(num_det.sum()))
    overall["map"] = float(np.mean(per_class_map)) if per_class_map else -1.0
    overall["ap50"] = float(np.mean(per_class_ap50)) if per_class_ap50 else -1.0
    out["overall"] = overall
    return out
