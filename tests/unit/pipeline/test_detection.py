import numpy as np
import pytest
import torch

from pipeline.detection import detect_tiles
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model


def _tiles(width, height, size):
    plan = tile_scene("s", width, height, TilingConfig(tile_size_px=size, overlap_px=0))
    return [plan[i] for i in range(len(plan))]


def test_standin_through_detect_tiles_clips_to_valid_area():
    tiles = _tiles(100, 64, 64)  # 2nd tile: 36 px valid
    images = np.zeros((2, 3, 64, 64), np.uint8)
    images[0, 0, 10:20, 5:15] = 255
    images[1, 2, 0:8, 30:40] = 255  # in the padding of tile 1 (cols >= 36) except 30..36
    dets = detect_tiles(StandinLoader().load("cpu"), images, tiles)
    assert dets[0].boxes_xyxy_px.tolist() == [[5, 10, 15, 20]] and dets[0].labels.tolist() == [0]
    assert dets[1].boxes_xyxy_px.tolist() == [[30, 0, 36, 8]] and dets[1].labels.tolist() == [2]


def test_retinanet_outputs_convert_to_tile_detections():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", class_names=("a",), score_thresh=0.0, detections_per_tile=50)
    dets = detect_tiles(build_model(cfg), np.random.rand(2, 3, 64, 64) * 255, _tiles(128, 64, 64))
    assert len(dets) == 2 and all(0 < len(d) <= 50 for d in dets)
    for d in dets:
        assert d.boxes_xyxy_px.dtype == np.float32 and (d.boxes_xyxy_px[:, 2] <= 64).all()


def test_mismatched_images_and_tiles_is_an_error():
    with pytest.raises(ValueError, match="2 images for 1 tiles"):
        detect_tiles(StandinLoader().load("cpu"), np.zeros((2, 3, 64, 64)), _tiles(64, 64, 64))


@pytest.mark.gpu
def test_cuda_amp_matches_cpu():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", class_names=("a", "b"), score_thresh=0.2)
    model = build_model(cfg)
    images = np.random.rand(4, 3, 256, 256).astype(np.float32) * 255
    tiles = _tiles(1024, 256, 256)
    cpu = detect_tiles(model, images, tiles)
    gpu = detect_tiles(model.cuda(), images, tiles, device="cuda", amp=True)
    for c, g in zip(cpu, gpu):
        assert abs(len(c) - len(g)) <= max(2, len(c) // 10)
