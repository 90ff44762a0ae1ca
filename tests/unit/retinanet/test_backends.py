"""`--backend compile`: the model actors' path (CheckpointLoader.load -> prepare_model -> detect_tiles)
gives eager's detections within float32 rounding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.detection import detect_tiles, prepare_model
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model
from retinanet.backends import Backend, apply_backend
from retinanet.checkpoint import save_dir
from retinanet.predictor import CheckpointLoader

TILE_PX = 64
SCORE_ATOL = 1e-4  # inductor's fused kernels reorder float32 sums: logits move by ~1e-5
BOX_ATOL_PX = 1e-2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", class_names=("car",), tile_size_px=TILE_PX)
    model = build_model(config)
    cls_logits = model.head.classification_head.cls_logits
    nn.init.normal_(cls_logits.weight, std=0.5)  # scores spread over (0, 1): the model detects
    nn.init.zeros_(cls_logits.bias)
    return save_dir(tmp_path_factory.mktemp("backends") / "ckpt", model, config)


def _detect(loader: CheckpointLoader, images: np.ndarray) -> list:
    tiles = list(tile_scene("s.tif", TILE_PX * 2, TILE_PX, TilingConfig(tile_size_px=TILE_PX, overlap_px=0)))
    model = prepare_model(loader.load("cpu"), "cpu")  # as pipeline.ray_stages.TileDetector
    return detect_tiles(model, images, tiles, device="cpu", precision="fp32")


@pytest.mark.slow  # torch.compile of resnet18 + heads: 1-6 min on 2 shared cores
def test_compile_backend_matches_eager(checkpoint):
    eager_loader = CheckpointLoader.open(checkpoint)
    compiled_loader = dataclasses.replace(eager_loader, backend="compile")
    images = np.random.default_rng(0).integers(0, 256, (2, 3, TILE_PX, TILE_PX), dtype=np.uint8)
    eager = _detect(eager_loader, images)
    compiled = _detect(compiled_loader, images)
    assert sum(len(td.scores) for td in eager) > 10  # not a comparison of empty sets
    for e, c in zip(eager, compiled):
        assert len(e.scores) == len(c.scores)
        np.testing.assert_array_equal(e.labels, c.labels)
        np.testing.assert_allclose(c.scores, e.scores, atol=SCORE_ATOL, rtol=0)
        np.testing.assert_allclose(c.boxes_xyxy_px, e.boxes_xyxy_px, atol=BOX_ATOL_PX, rtol=0)


def test_apply_backend_eager_is_unchanged_and_names_are_checked():
    model = build_model(ModelConfig(backbone="resnet18", class_names=("car",), tile_size_px=TILE_PX))
    assert apply_backend(model, Backend.EAGER) is model
    assert not hasattr(model.backbone, "_compiled_call_impl") or model.backbone._compiled_call_impl is None
    with pytest.raises(ValueError, match="openvino"):
        apply_backend(model, "openvino")
