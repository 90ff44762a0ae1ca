"""Reduced precision costs no accuracy: AP50 of a small trained RetinaNet in bf16 vs fp32.

Trains a resnet18 RetinaNet from scratch on synthetic scenes (``retinanet.synth``)
cut into small tiles, with the plain-torch loop of ``retinanet.train_loop``,
then detects on held-out tiles through ``pipeline.detection.detect_tiles`` in
fp32 and in bf16 and compares AP50.  ``aerialdet detect --precision auto``
(bf16 on CPUs with native bfloat16) is the default only because this holds.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
import torch

from pipeline.detection import Precision, detect_tiles
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model
from retinanet.evaluate import ImageBoxes, evaluate_detections
from retinanet.synth import CLASS_NAMES, SynthConfig, write_scene
from retinanet.train_loop import TrainConfig, make_optimizer, seed_everything, train_one_epoch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TILE = 128
STEPS = int(os.environ.get("AERIALDET_PRECISION_STEPS", "300"))
SYNTH = SynthConfig(size_px=768, gsd_m=0.3, seam_tile_px=TILE, seam_overlap_px=0)


def _tiles_with_truth(path, truth):
    """(tiles, uint8 [N, 3, T, T] images, per-tile ground truth) of one scene, boxes clipped to each tile."""
    plan = tile_scene(str(path), SYNTH.size_px, SYNTH.size_px, TilingConfig(tile_size_px=TILE, overlap_px=0))
    tiles = [plan[i] for i in range(len(plan))]
    with rasterio.open(path) as src:
        pixels = src.read()
    images = np.stack(
        [pixels[:, t.row_off_px : t.row_off_px + TILE, t.col_off_px : t.col_off_px + TILE] for t in tiles]
    )
    truths = []
    for t in tiles:
        boxes = truth.boxes_xyxy_px - [t.col_off_px, t.row_off_px, t.col_off_px, t.row_off_px]
        clipped = boxes.clip(0, TILE)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= 0.5 * area
        truths.append(ImageBoxes(clipped[kept].astype(np.float32), truth.labels[kept]))
    return tiles, images, truths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet18 RetinaNet trained for ``STEPS`` steps on two scenes, and a third held-out scene."""
    seed_everything(0)
    torch.set_num_threads(os.cpu_count() or 1)
    root = tmp_path_factory.mktemp("precision")
    scenes = [
        _tiles_with_truth(p, write_scene(p, SYNTH, seed))
        for seed, p in enumerate(root / f"s{i}.tif" for i in range(3))
    ]
    config = ModelConfig(
        backbone="resnet18",
        class_names=CLASS_NAMES,
        anchor_sizes_px=(8, 16, 32, 64, 128),
        tile_size_px=TILE,
    )
    model = build_model(config)
    images = np.concatenate([scenes[0][1], scenes[1][1]])
    targets = [
        {"boxes": torch.as_tensor(t.boxes_xyxy).reshape(-1, 4), "labels": torch.as_tensor(t.labels)}
        for t in scenes[0][2] + scenes[1][2]
    ]
    train = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=30)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(images), train.batch_size, replace=False) for _ in range(STEPS)]
    loader = ([torch.as_tensor(images[i]) for i in b] for b in batches)
    loader = zip(loader, ([targets[i] for i in b] for b in batches))
    train_one_epoch(model, make_optimizer(model, train), loader, train, start_step=0, total_steps=STEPS)
    model.eval()
    return model, scenes[2]


def _ap50(model, held_out, precision: Precision) -> float:
    tiles, images, truths = held_out
    found = []
    for lo in range(0, len(tiles), 8):
        found += detect_tiles(model, images[lo : lo + 8], tiles[lo : lo + 8], precision=precision)
    dets = [ImageBoxes(d.boxes_xyxy_px, d.labels, d.scores) for d in found]
    return float(evaluate_detections(truths, dets, CLASS_NAMES)["overall"]["ap50"])


def test_bf16_ap50_within_half_a_point_of_fp32(trained):
    model, held_out = trained
    fp32 = _ap50(model, held_out, Precision.FP32)
    bf16 = _ap50(model, held_out, Precision.BF16)
    print(json.dumps({"steps": STEPS, "ap50_fp32": round(fp32, 4), "ap50_bf16": round(bf16, 4)}))
    assert fp32 > 0.15, (
        f"the model did not learn enough for the comparison to mean anything (AP50 {fp32:.3f})"
    )
    assert abs(bf16 - fp32) <= 0.005, f"AP50 fp32 {fp32:.4f} vs bf16 {bf16:.4f}"
