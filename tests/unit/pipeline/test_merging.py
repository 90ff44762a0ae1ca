import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.merging import MergeConfig, MergeStrategy, ios_suppress, merge_scene
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import TileDetections

CFG = TilingConfig(tile_size_px=128, overlap_px=32)  # stride 96; cores split at 112


def tile_views(tiles, objects, score=0.9):
    """What a perfect detector sees: each object clipped to each tile (truncated boxes included)."""
    out = []
    for t in tiles:
        boxes, labels = [], []
        for x1, y1, x2, y2, lab in objects:
            cx1, cy1 = max(x1, t.col_off_px), max(y1, t.row_off_px)
            cx2 = min(x2, t.col_off_px + t.valid_width_px)
            cy2 = min(y2, t.row_off_px + t.valid_height_px)
            if cx2 > cx1 and cy2 > cy1:
                boxes.append([cx1 - t.col_off_px, cy1 - t.row_off_px, cx2 - t.col_off_px, cy2 - t.row_off_px])
                labels.append(lab)
        out.append(TileDetections(t, np.array(boxes, float).reshape(-1, 4), [score] * len(boxes), labels))
    return out


OBJECTS = [
    (100, 20, 120, 40, 0),  # straddles the vertical seam (tiles 0|1 overlap 96..128)
    (90, 90, 110, 110, 1),  # on the four-tile corner
    (118, 50, 134, 60, 0),  # crosses the right edge of tile 0 (truncated there)
    (10, 10, 20, 20, 2),  # inside one tile only
    (180, 150, 200, 170, 1),
]


@pytest.mark.parametrize("strategy", ["core", "edge"])
def test_each_object_reported_once(strategy):
    tiles = tile_scene("s", 250, 250, CFG)
    merged = merge_scene(tile_views(tiles, OBJECTS), MergeConfig(strategy=strategy))
    got = sorted(map(tuple, merged.boxes_xyxy_px.astype(int).tolist()))
    assert got == sorted((x1, y1, x2, y2) for x1, y1, x2, y2, _ in OBJECTS)


def test_plain_iou_nms_leaves_truncated_duplicates():
    tiles = tile_scene("s", 250, 250, CFG)
    merged = merge_scene(tile_views(tiles, OBJECTS), MergeConfig(strategy="iou", ios_threshold=1.0))
    assert len(merged) > len(OBJECTS)  # the reason the default is not plain NMS


def test_class_aware_by_default_and_agnostic_on_request():
    t = tile_scene("s", 100, 100, TilingConfig(tile_size_px=128, overlap_px=32))[0]
    dets = [TileDetections(t, [[10, 10, 30, 30], [11, 10, 31, 30]], [0.9, 0.8], [0, 1])]
    assert len(merge_scene(dets)) == 2
    assert len(merge_scene(dets, MergeConfig(class_agnostic=True))) == 1


def _reference_greedy_nms(boxes, scores, thr):
    order = list(np.argsort(-scores))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            b = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (a + b - inter) <= thr:
                rest.append(j)
        order = rest
    return sorted(keep)


def test_seam_merge_matches_reference_nms():
    """Boxes crowded on a seam, from both tiles: the merge equals greedy NMS over them."""
    rng = np.random.default_rng(0)
    n = 80
    cx, cy = rng.uniform(100, 124, n), rng.uniform(10, 118, n)
    w, h = rng.uniform(4, 20, n), rng.uniform(4, 20, n)
    boxes = (
        np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32).astype(np.float64)
    )
    scores = rng.uniform(0.1, 1, n).astype(np.float32)
    tiles = tile_scene("s", 224, 128, CFG)  # tile 0 at 0..128, tile 1 at 96..224, cores split at 112
    assert [t.col_off_px for t in tiles] == [0, 96]
    dets = []
    for t, mine in zip(tiles, (cx < 112, cx >= 112)):
        local = boxes[mine] - [t.col_off_px, 0, t.col_off_px, 0]
        assert local.min() >= 0 and local[:, 2].max() <= 128  # each box lies whole in its tile
        dets.append(TileDetections(t, local, scores[mine], np.zeros(mine.sum())))
    merged = merge_scene(dets, MergeConfig(ios_threshold=1.0))
    expected = _reference_greedy_nms(boxes, scores, 0.5)
    assert len(expected) < n  # the case exercises suppression
    got = sorted(map(tuple, merged.boxes_xyxy_px.round(3).tolist()))
    assert got == sorted(map(tuple, boxes[expected].round(3).tolist()))


def test_ios_suppress_drops_contained_box():
    boxes = np.array([[0, 0, 20, 20], [0, 0, 8, 20], [50, 50, 60, 60]], float)
    keep = ios_suppress(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), 0.7, False)
    assert sorted(keep.tolist()) == [0, 2]


def test_no_detections_gives_empty_arrays():
    t = tile_scene("s", 64, 64, CFG)[0]
    merged = merge_scene([TileDetections.empty(t)])
    assert merged.boxes_xyxy_px.shape == (0, 4) and len(merged) == 0


def test_tile_detections_length_check_names_tile():
    t = tile_scene("scene.tif", 64, 64, CFG)[0]
    with pytest.raises(ValueError, match="scene.tif"):
        TileDetections(t, np.zeros((2, 4)), [0.5], [0, 1])


def _dense_fast_ios(boxes, scores, labels, thr):
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = (b[:, 2:] - b[:, :2]).prod(-1)
    ios = inter / np.minimum(area[:, None], area[None, :])
    ios *= labels[order][:, None] == labels[order][None, :]
    ios = np.triu(ios, 1)
    return order[ios.max(0) <= thr]


def test_chunked_ios_matches_dense_reference():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (700, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 40, (700, 2))], 1)
    scores = rng.uniform(0, 1, 700)
    labels = rng.integers(0, 2, 700)
    got = ios_suppress(boxes, scores, labels, 0.6, False, chunk=64)
    assert got.tolist() == _dense_fast_ios(boxes, scores, labels, 0.6).tolist()


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_chunked_ios_matches_dense_reference_with_a_few_huge_boxes(class_agnostic):
    # an untrained model's boxes: many small, a few spanning hundreds of px (they widen every reach)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 800, (900, 2))
    sizes = np.where(
        rng.uniform(size=(900, 1)) < 0.03, rng.uniform(200, 600, (900, 2)), rng.uniform(2, 30, (900, 2))
    )
    boxes = np.concatenate([xy, xy + sizes], 1)
    boxes[:20] = boxes[20:40]  # exact duplicates: ties in position
    scores = rng.uniform(0, 1, 900).round(2)  # ties in score
    labels = rng.integers(0, 3, 900)
    want = _dense_fast_ios(boxes, scores, np.zeros(900, int) if class_agnostic else labels, 0.5)
    for axis in (0, 1):
        got = ios_suppress(boxes, scores, labels, 0.5, class_agnostic, chunk=37, axis=axis)
        assert got.tolist() == want.tolist()


def test_strategy_is_an_enum_that_equals_its_string():
    cfg = MergeConfig(strategy="edge")
    assert cfg.strategy is MergeStrategy.EDGE and cfg.strategy == "edge"
    assert MergeConfig().strategy is MergeStrategy.CORE
    assert json.loads(json.dumps(dataclasses.asdict(MergeConfig())))["strategy"] == "core"  # _run.json
    with pytest.raises(ValueError, match=r"strategy must be one of \('core', 'edge', 'iou'\), got 'nms'"):
        MergeConfig(strategy="nms")


def test_importing_merging_does_not_load_torch():
    # the driver merges; only the NMS step needs torch, and imports it when it runs
    code = "import sys, pipeline.merging; print('torch' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
