import numpy as np
import pytest
import torch

from pipeline.detection import detect_tiles, load_model
from pipeline.standin import STANDIN_SOURCE
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model


def test_standin_through_detect_tiles_clips_to_valid_area():
    handle = load_model(STANDIN_SOURCE)
    tiles = tile_scene("s", 100, 64, TilingConfig(tile_size_px=64, overlap_px=0))  # 2nd tile: 36 px valid
    images = np.zeros((2, 3, 64, 64), np.float32)
    images[0, 0, 10:20, 5:15] = 255
    images[1, 2, 0:8, 30:40] = 255  # in the padding of tile 1 (cols >= 36) except 30..36
    dets = detect_tiles(handle.model, images, tiles, handle.band_config)
    assert dets[0].boxes_xyxy_px.tolist() == [[5, 10, 15, 20]] and dets[0].labels.tolist() == [0]
    assert dets[1].boxes_xyxy_px.tolist() == [[30, 0, 36, 8]] and dets[1].labels.tolist() == [2]


def test_retinanet_outputs_convert_to_tile_detections():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", class_names=("a",), score_thresh=0.0, detections_per_tile=50)
    dets = detect_tiles(
        build_model(cfg),
        np.random.rand(2, 3, 64, 64) * 255,
        tile_scene("s", 128, 64, TilingConfig(tile_size_px=64, overlap_px=0)),
        cfg.band_config,
    )
    assert len(dets) == 2 and all(0 < len(d) <= 50 for d in dets)
    for d in dets:
        assert d.boxes_xyxy_px.dtype == np.float32 and (d.boxes_xyxy_px[:, 2] <= 64).all()


@pytest.mark.gpu
def test_cuda_amp_matches_cpu():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", class_names=("a", "b"), score_thresh=0.2)
    model = build_model(cfg)
    images = np.random.rand(4, 3, 256, 256).astype(np.float32) * 255
    tiles = tile_scene("s", 1024, 256, TilingConfig(tile_size_px=256, overlap_px=0))
    cpu = detect_tiles(model, images, tiles, cfg.band_config)
    gpu = detect_tiles(model.cuda(), images, tiles, cfg.band_config, device="cuda", amp=True)
    for c, g in zip(cpu, gpu):
        assert abs(len(c) - len(g)) <= max(2, len(c) // 10)
