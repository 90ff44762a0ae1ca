import numpy as np
import pytest
import torch

from pipeline.detection import (
    Precision,
    cpu_has_native_bf16,
    detect_tiles,
    prepare_model,
    resolve_precision,
    to_device,
)
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model
from tests.unit.pipeline.box_matching import TOLERANCES, detection_differences


def _tiles(width, height, size):
    plan = tile_scene("s", width, height, TilingConfig(tile_size_px=size, overlap_px=0))
    return [plan[i] for i in range(len(plan))]


def test_standin_through_detect_tiles_clips_to_valid_area():
    tiles = [
        _tiles(100, 64, 64)[0],
        _tiles(36, 64, 64)[0],
    ]  # a whole tile; one of a scene 36 px wide (padded)
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


def test_tiles_reach_the_cpu_in_their_own_dtype_without_a_copy():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    tensor = to_device(images, "cpu")
    assert tensor.dtype == torch.uint8 and tensor.data_ptr() == images.ctypes.data
    flipped = to_device(images[:, :, ::-1], "cpu")  # a negative-stride view is made contiguous
    assert flipped.is_contiguous() and np.array_equal(flipped.numpy(), images[:, :, ::-1])


@pytest.mark.gpu
def test_tiles_cross_to_the_gpu_as_uint8_from_pinned_memory():
    images = np.full((2, 3, 8, 8), 7, np.uint8)
    tensor = to_device(images, "cuda")
    torch.cuda.synchronize()
    assert tensor.is_cuda and tensor.dtype == torch.uint8 and int(tensor.sum()) == 7 * images.size


@pytest.fixture
def _no_tf32():
    """fp32 on CUDA means fp32: TF32 (a 10-bit mantissa) off for convolutions and matmuls, restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16, Precision.BF16])
def test_cuda_boxes_match_cpu_boxes(precision, _no_tf32):
    """Each CUDA detection has a CPU partner (IoU >= 0.9) within the precision's tolerance (box_matching)."""
    torch.manual_seed(0)
    score_thresh = 0.05
    cfg = ModelConfig(
        backbone="resnet18", class_names=("a", "b"), score_thresh=score_thresh, prior_probability=0.05
    )
    model = build_model(cfg).eval()
    with torch.no_grad():  # random weights score everything near the prior: spread the scores over 0..1
        model.head.classification_head.cls_logits.weight.mul_(100.0)
    images = np.random.rand(4, 3, 256, 256).astype(np.float32) * 255
    tiles = _tiles(1024, 256, 256)
    cpu = detect_tiles(model, images, tiles)
    gpu = detect_tiles(model.cuda(), images, tiles, device="cuda", precision=precision)
    tolerance = TOLERANCES[precision]
    assert sum(len(c) for c in cpu) > 0  # something to compare
    for tile, c, g in zip(tiles, cpu, gpu, strict=True):
        assert abs(len(c) - len(g)) <= max(2, len(c) // 10)
        problems = detection_differences(c, g, tolerance, score_threshold=score_thresh)
        assert problems == [], f"tile {tile.index}, {precision.value}: {problems[:5]}"


def test_auto_precision_resolves_per_device():
    assert resolve_precision("auto", "cuda") is Precision.FP16
    assert resolve_precision(Precision.AUTO, "cpu") is (
        Precision.BF16 if cpu_has_native_bf16() else Precision.FP32
    )
    assert (
        resolve_precision("fp32", "cuda") is Precision.FP32
        and resolve_precision("bf16", "cpu") is Precision.BF16
    )
    assert Precision("bf16") == "bf16"
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")


def _busy_model():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", class_names=("a", "b"), score_thresh=0.01, prior_probability=0.05)
    return build_model(cfg)


def test_bf16_runs_the_network_reduced_and_decodes_boxes_in_float32():
    model = _busy_model()
    images = (np.random.default_rng(0).random((2, 3, 128, 128)) * 255).astype(np.uint8)
    tiles = _tiles(256, 128, 128)
    seen = []
    probe = model.backbone.body.layer1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    fp32 = detect_tiles(model, images, tiles, precision="fp32")
    bf16 = detect_tiles(model, images, tiles, precision="bf16")
    probe.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert not model.head._forward_hooks  # the float32 cast is removed after the call
    coords = np.concatenate([d.boxes_xyxy_px.ravel() for d in bf16])
    assert len(coords) > 40
    # decoded in float32: coordinates are not all on bfloat16's grid (0.25..0.5 px near 64..128)
    on_grid = torch.from_numpy(coords).bfloat16().float().numpy() == coords
    assert not on_grid.all()
    for a, b in zip(fp32, bf16):
        assert abs(len(a) - len(b)) <= max(3, len(a) // 5)


def test_uint8_and_float32_tiles_give_the_same_detections():
    model = _busy_model()
    images = (np.random.default_rng(1).random((1, 3, 64, 64)) * 255).astype(np.uint8)
    tiles = _tiles(64, 64, 64)
    (a,) = detect_tiles(model, images, tiles)
    (b,) = detect_tiles(model, images.astype(np.float32), tiles)
    assert (
        len(a) > 0 and np.array_equal(a.boxes_xyxy_px, b.boxes_xyxy_px) and np.array_equal(a.scores, b.scores)
    )


def test_tile_detector_takes_mixed_dtypes_and_reports_its_threads():
    from pipeline.executor import TileStatus
    from pipeline.ray_stages import TileDetector, TileRow

    tiles = _tiles(128, 64, 64)
    u8 = np.zeros((3, 64, 64), np.uint8)
    u8[0, 8:16, 8:16] = 255
    u16 = np.zeros((3, 64, 64), np.uint16)
    u16[1, 0:4, 0:6] = 255
    rows = [TileRow(tiles[0], TileStatus.OK, u8), TileRow(tiles[1], TileStatus.OK, u16)]
    nodata = [TileRow(tiles[1], TileStatus.NODATA)]
    threads = torch.get_num_threads()
    try:
        actor = TileDetector(StandinLoader(), Precision.AUTO, num_threads=2, use_gpu=False, batch_size=4)
        out = actor.detect(rows, nodata)  # two read groups in one call
        about, _ = actor.ready()
    finally:
        torch.set_num_threads(threads)
    assert "torch_threads=2" in about
    assert "precision=" + resolve_precision("auto", "cpu").value in about
    assert [(o[1], o[2]) for o in out] == [
        (tiles[0].index, "ok"),
        (tiles[1].index, "ok"),
        (tiles[1].index, "nodata"),
    ]
    assert out[2][4] == b""
    assert np.frombuffer(out[0][4], np.float32).reshape(-1, 6)[:, :4].tolist() == [[8, 8, 16, 16]]
    assert np.frombuffer(out[1][4], np.float32).reshape(-1, 6)[:, :4].tolist() == [[0, 0, 6, 4]]


def test_prepared_model_is_channels_last_on_cpu_with_the_same_detections():
    model = _busy_model()
    images = (np.random.default_rng(2).random((1, 3, 64, 64)) * 255).astype(np.uint8)
    tiles = _tiles(64, 64, 64)
    (before,) = detect_tiles(model, images, tiles)
    prepared = prepare_model(model, "cpu")
    weight = prepared.backbone.body.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    (after,) = detect_tiles(prepared, images, tiles)
    assert len(before) == len(after) > 0
    assert np.allclose(before.boxes_xyxy_px, after.boxes_xyxy_px, atol=1e-2)
    assert prepare_model(StandinLoader().load("cpu"), "cpu") is not None  # stand-ins pass through
