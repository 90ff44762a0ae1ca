"""The review queue: what to look at first so that an hour of review moves the model most.

First the detections whose score lies closest to their class's decision
threshold (the model's calibrated ``score_thresholds``): those are the ones
the model is least sure of, where a yes or no changes the labels most.
Then, when a second detection output is given (another run or model on the
same scenes), the map cells where the two disagree, most disagreements
first: a box one output has at its threshold and the other has not (no box
of the same class at IoU >= ``MATCH_IOU``).  Detections already reviewed
are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

MATCH_IOU = 0.5


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One stop of the queue.

    Attributes:
        kind: ``detection`` or ``cell`` (a map cell where two outputs disagree).
        bounds_crs: what to look at, (xmin, ymin, xmax, ymax) in the dataset CRS.
        detection_id: the detection (None for a cell).
        reason: one line shown to the reviewer.
    """

    kind: str
    bounds_crs: tuple[float, float, float, float]
    detection_id: str | None
    reason: str


def threshold_order(
    labels: np.ndarray, scores: np.ndarray, thresholds: Mapping[str, float], default: float = 0.5
) -> np.ndarray:
    """Indices of detections by ``|score - threshold of its class|``, closest first (stable).

    Example:
        >>> threshold_order(np.array(["a", "a", "b"]), np.array([0.9, 0.35, 0.1]), {"a": 0.3, "b": 0.5}).tolist()
        [1, 2, 0]
    """
    thr = np.array([thresholds.get(str(name), default) for name in labels], np.float64)
    return np.argsort(np.abs(np.asarray(scores, np.float64) - thr), kind="stable")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[len(a), len(b)]`` of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    iou: np.ndarray = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)
    return iou


def unmatched(
    boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray
) -> np.ndarray:
    """Which boxes of ``a`` (bool ``[len(a)]``) have no box of ``b`` of their class at IoU >= ``MATCH_IOU``."""
    out = np.ones(len(boxes_a), bool)
    if len(boxes_a) and len(boxes_b):
        same = np.asarray(labels_a)[:, None] == np.asarray(labels_b)[None, :]
        out = ~((_iou(np.asarray(boxes_a, float), np.asarray(boxes_b, float)) >= MATCH_IOU) & same).any(
            axis=1
        )
    return out


def disagreement_cells(disagreeing_boxes: np.ndarray, cell_crs: float) -> list[tuple[tuple[float, ...], int]]:
    """Grid cells of edge ``cell_crs`` holding the centres of ``disagreeing_boxes``, most first.

    Example:
        >>> disagreement_cells(np.array([[1, 1, 2, 2], [3, 3, 4, 4], [15, 1, 16, 2]]), 10.0)
        [((0.0, 0.0, 10.0, 10.0), 2), ((10.0, 0.0, 20.0, 10.0), 1)]
    """
    if not len(disagreeing_boxes):
        return []
    boxes = np.asarray(disagreeing_boxes, np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    cells, counts = np.unique(np.floor(centres / cell_crs).astype(np.int64), axis=0, return_counts=True)
    order = np.lexsort((cells[:, 1], cells[:, 0], -counts))
    return [
        (
            (
                float(cells[i, 0] * cell_crs),
                float(cells[i, 1] * cell_crs),
                float((cells[i, 0] + 1) * cell_crs),
                float((cells[i, 1] + 1) * cell_crs),
            ),
            int(counts[i]),
        )
        for i in order
    ]


def _kept(frame: Any, thresholds: Mapping[str, float]) -> Any:
    thr = frame["label"].map(lambda name: thresholds.get(name, 0.5))
    return frame[frame["score"] >= thr]


def review_queue(
    detections: Any,
    thresholds: Mapping[str, float],
    reviewed: Set[str],
    *,
    other: Any = None,
    other_thresholds: Mapping[str, float] | None = None,
    cell_crs: float = 100.0,
) -> list[QueueItem]:
    """The queue: unreviewed detections closest to their threshold, then the cells where outputs disagree.

    Args:
        detections: DataFrame with ``id``, ``label``, ``score``, ``xmin``..``ymax`` (dataset CRS).
        thresholds: class -> decision threshold of the model that made ``detections``.
        reviewed: ids of the detections already decided on (left out).
        other: a second output's detections (same columns, same CRS), or None.
        other_thresholds: its model's thresholds (default: ``thresholds``).
        cell_crs: edge of a disagreement cell, dataset CRS units.
    """
    todo = detections[~detections["id"].isin(list(reviewed))]
    order = threshold_order(todo["label"].to_numpy(), todo["score"].to_numpy(), thresholds)
    items = []
    for rec in todo.iloc[order].itertuples(index=False):
        thr = thresholds.get(rec.label, 0.5)
        bounds = (float(rec.xmin), float(rec.ymin), float(rec.xmax), float(rec.ymax))
        items.append(
            QueueItem("detection", bounds, rec.id, f"{rec.label} {rec.score:.3f}, threshold {thr:.3f}")
        )
    if other is not None:
        cols = ["xmin", "ymin", "xmax", "ymax"]
        a, b = _kept(detections, thresholds), _kept(other, other_thresholds or thresholds)
        boxes_a, boxes_b = a[cols].to_numpy(float), b[cols].to_numpy(float)
        la, lb = a["label"].to_numpy(), b["label"].to_numpy()
        odd = np.concatenate(
            [boxes_a[unmatched(boxes_a, la, boxes_b, lb)], boxes_b[unmatched(boxes_b, lb, boxes_a, la)]]
        )
        for (xmin, ymin, xmax, ymax), count in disagreement_cells(odd, cell_crs):
            reason = f"{count} box(es) the two outputs disagree on"
            items.append(QueueItem("cell", (xmin, ymin, xmax, ymax), None, reason))
    return items
