import numpy as np
import pytest

from retinanet.evaluate import ImageBoxes, evaluate_detections


def boxes(*b):
    return np.array(b, float).reshape(-1, 4)


def test_perfect_detections():
    gt = [ImageBoxes(boxes([0, 0, 10, 10], [20, 20, 30, 30]), np.array([0, 1]))]
    dt = [ImageBoxes(boxes([0, 0, 10, 10], [20, 20, 30, 30]), np.array([0, 1]), np.array([0.9, 0.8]))]
    m = evaluate_detections(gt, dt, ["car", "tree"])
    assert m["overall"]["map"] == pytest.approx(1.0) and m["overall"]["ap50"] == pytest.approx(1.0)
    assert m["overall"]["precision"] == 1.0 and m["overall"]["recall"] == 1.0


def test_false_positive_ranked_first_by_hand():
    # sorted by score: FP (0.8) then TP (0.6); 2 GT.  PR points: (r=0,p=0), (r=.5,p=.5).
    # 101-point interpolated AP = 51 recall points at p=0.5 / 101 = 0.2525
    gt = [ImageBoxes(boxes([0, 0, 10, 10], [20, 20, 30, 30]), np.array([0, 0]))]
    dt = [ImageBoxes(boxes([0, 0, 10, 10], [50, 50, 60, 60]), np.array([0, 0]), np.array([0.6, 0.8]))]
    m = evaluate_detections(gt, dt, ["car"], score_threshold=0.5)
    assert m["car"]["ap50"] == pytest.approx(51 / 101 * 0.5)
    assert (m["car"]["tp"], m["car"]["fp"], m["car"]["fn"]) == (1, 1, 1)
    assert m["car"]["precision"] == 0.5 and m["car"]["recall"] == 0.5
    # a score threshold above the TP leaves only the FP
    m = evaluate_detections(gt, dt, ["car"], score_threshold=0.7)
    assert (m["car"]["tp"], m["car"]["fp"]) == (0, 1)


def test_iou_threshold_for_precision_recall():
    # IoU of [0,0,10,10] and [0,0,10,6] is 0.6: a match at 0.5, not at 0.7
    gt = [ImageBoxes(boxes([0, 0, 10, 10]), np.array([0]))]
    dt = [ImageBoxes(boxes([0, 0, 10, 6]), np.array([0]), np.array([0.9]))]
    assert evaluate_detections(gt, dt, ["car"], iou=0.5)["car"]["tp"] == 1
    assert evaluate_detections(gt, dt, ["car"], iou=0.7)["car"]["tp"] == 0
    # COCO mAP averages IoU 0.5..0.95: matched at 0.5, 0.55, 0.6 -> 3/10
    assert evaluate_detections(gt, dt, ["car"])["car"]["map"] == pytest.approx(0.3)


def test_wrong_class_is_not_a_match_and_missing_class_is_minus_one():
    gt = [ImageBoxes(boxes([0, 0, 10, 10]), np.array([0]))]
    dt = [ImageBoxes(boxes([0, 0, 10, 10]), np.array([1]), np.array([0.9]))]
    m = evaluate_detections(gt, dt, ["car", "tree"])
    assert m["car"]["recall"] == 0.0 and m["tree"]["ap50"] == -1.0 and m["tree"]["fp"] == 1
    assert m["overall"]["ap50"] == 0.0  # mean over classes with ground truth


def test_many_detections_per_image_not_capped_at_100():
    n = 300
    xy = np.stack([np.arange(n) * 20.0, np.zeros(n)], 1)
    b = np.concatenate([xy, xy + 10], 1)
    gt = [ImageBoxes(b, np.zeros(n, int))]
    dt = [ImageBoxes(b, np.zeros(n, int), np.linspace(0.5, 1, n))]
    assert evaluate_detections(gt, dt, ["car"])["car"]["ap50"] == pytest.approx(1.0)
