"""The matching helper of the GPU-vs-CPU tests, checked on hand-made detections (no GPU needed)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detection import Precision
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import TileDetections
from tests.unit.pipeline.box_matching import TOLERANCES, detection_differences, greedy_match

TILE = tile_scene("s", 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))[0]
FP32 = TOLERANCES[Precision.FP32]
BOXES = [[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0], [2.0, 2.0, 22.0, 22.0]]


def _dets(boxes, scores, labels):
    return TileDetections(TILE, np.array(boxes, np.float32).reshape(-1, 4), scores, labels)


REFERENCE = _dets(BOXES, [0.9, 0.8, 0.6], [0, 1, 0])


def test_the_same_detections_in_another_order_agree():
    other = _dets(BOXES[::-1], [0.6, 0.8, 0.9], [0, 1, 0])
    assert sorted(greedy_match(REFERENCE, other, 0.9)) == [(0, 2, 1.0), (1, 1, 1.0), (2, 0, 1.0)]
    assert detection_differences(REFERENCE, other, FP32, score_threshold=0.2) == []


def test_greedy_match_takes_the_best_pair_first_and_each_box_once():
    # other 0 overlaps reference 0 (IoU 1) and reference 2 (IoU ~0.68): it goes to reference 0
    other = _dets([BOXES[0]], [0.9], [0])
    assert greedy_match(REFERENCE, other, 0.5) == [(0, 0, 1.0)]
    assert greedy_match(REFERENCE, _dets([], [], []), 0.5) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda b, s, lab: (b + np.array([1.5, 0, 0, 0]) * (np.arange(3) == 1)[:, None], s, lab),
            "corners 1.500 px",
        ),
        (lambda b, s, lab: (b, s - np.array([0, 0.03, 0]), lab), "score 0.030"),
        (
            lambda b, s, lab: (b, s, np.array([0, 0, 0])),
            "reference 1 unmatched",
        ),  # another label never matches
        (lambda b, s, lab: (b[:2], s[:2], lab[:2]), "reference 2 unmatched: label 0, score 0.600"),
        (lambda b, s, lab: (b + np.array([0, 0, 5.0, 0]), s, lab), "unmatched"),  # IoU < 0.9
    ],
)
def test_each_broken_tolerance_is_reported(change, problem):
    boxes, scores, labels = change(np.array(BOXES), np.array([0.9, 0.8, 0.6]), np.array([0, 1, 0]))
    problems = detection_differences(REFERENCE, _dets(boxes, scores, labels), FP32, score_threshold=0.2)
    assert any(problem in p for p in problems), problems


def test_a_detection_on_the_score_cut_may_go_unmatched():
    reference = _dets([*BOXES, [40.0, 0.0, 50.0, 10.0]], [0.9, 0.8, 0.6, 0.21], [0, 1, 0, 1])
    assert detection_differences(reference, REFERENCE, FP32, score_threshold=0.2) == []
    assert detection_differences(reference, REFERENCE, FP32, score_threshold=0.1) != []


def test_reduced_precision_lets_a_share_go_unmatched_and_no_more():
    many = [[float(x), 0.0, x + 4.0, 4.0] for x in range(0, 60, 6)]  # 10 disjoint boxes
    reference = _dets(many, [0.9] * 10, [0] * 10)
    bf16 = TOLERANCES[Precision.BF16]  # 15 % of 10 + 9 detections: two unmatched
    assert detection_differences(reference, _dets(many[1:], [0.9] * 9, [0] * 9), bf16, 0.2) == []
    assert detection_differences(reference, _dets(many[3:], [0.9] * 7, [0] * 7), bf16, 0.2) != []
    assert detection_differences(reference, _dets(many[1:], [0.9] * 9, [0] * 9), FP32, 0.2) != []


def test_reduced_precisions_are_looser_than_fp32():
    fp16, bf16 = TOLERANCES[Precision.FP16], TOLERANCES[Precision.BF16]
    assert FP32.box_px < fp16.box_px < bf16.box_px and FP32.score < fp16.score < bf16.score
    assert FP32.unmatched_share == 0 < fp16.unmatched_share < bf16.unmatched_share
    assert FP32.iou == fp16.iou == bf16.iou == 0.9
