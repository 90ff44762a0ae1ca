"""The review queue: closest to the threshold first, reviewed ones left out, then where outputs disagree."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.review_queue import disagreement_cells, review_queue, threshold_order, unmatched


def _frame(rows):
    return pd.DataFrame(rows, columns=["id", "label", "score", "xmin", "ymin", "xmax", "ymax"])


DETS = _frame(
    [
        ("far", "car", 0.95, 0, 0, 10, 10),
        ("near", "car", 0.31, 20, 0, 30, 10),
        ("tree-near", "tree", 0.58, 40, 0, 50, 10),
        ("low", "car", 0.05, 60, 0, 70, 10),
    ]
)
THRESHOLDS = {"car": 0.3, "tree": 0.6}


def test_closest_to_its_own_class_threshold_first():
    order = [item.detection_id for item in review_queue(DETS, THRESHOLDS, set())]
    assert order == ["near", "tree-near", "low", "far"]


def test_reviewed_detections_are_left_out():
    order = [item.detection_id for item in review_queue(DETS, THRESHOLDS, {"near", "low"})]
    assert order == ["tree-near", "far"]


def test_then_the_cells_where_two_outputs_disagree_most_first():
    other = _frame(
        [
            ("o1", "car", 0.9, 0, 0, 10, 10),  # agrees with "far"
            ("o2", "car", 0.9, 20, 0, 30, 10),  # agrees with "near"
            ("o3", "car", 0.9, 210, 210, 220, 220),  # only in the other output
            ("o4", "car", 0.9, 230, 230, 240, 240),  # only in the other output, same cell
        ]
    )
    items = review_queue(DETS, THRESHOLDS, set(), other=other, cell_crs=100.0)
    cells = [i for i in items if i.kind == "cell"]
    assert [i.kind for i in items[:4]] == ["detection"] * 4
    # "tree-near" (0.58 < 0.6) is not kept by the first output; "low" neither: neither counts
    assert [(c.bounds_crs, c.reason.split()[0]) for c in cells] == [((200.0, 200.0, 300.0, 300.0), "2")]


def test_unmatched_needs_same_class_and_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    b = np.array([[1, 0, 11, 10]], float)  # IoU 0.82 with a[0]
    assert unmatched(a, np.array(["car", "tree", "car"]), b, np.array(["car"])).tolist() == [
        False,
        True,
        True,
    ]
    assert unmatched(a, np.array(["car"] * 3), b[:0], np.array([])).tolist() == [True, True, True]


def test_threshold_order_is_stable_for_ties():
    assert threshold_order(np.array(["a", "a"]), np.array([0.6, 0.4]), {"a": 0.5}).tolist() == [0, 1]
    assert disagreement_cells(np.zeros((0, 4)), 10.0) == []
