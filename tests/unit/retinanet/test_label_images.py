"""Training reads the pixels detect reads (issue 20): nodata and NaN, band statistics."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine

from pipeline.reading import ReadConfig, read_tiles
from pipeline.types import TileSpec
from retinanet.labeled_tiles import (
    LabeledTiles,
    TileSampling,
    TrainingTiles,
    band_stats,
    read_labels,
)
from tests.conftest import write_voc

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def _write(path: Path, data: np.ndarray, nodata: float | None) -> Path:
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=str(data.dtype))
    profile |= dict(transform=TRANSFORM, crs="EPSG:32633", nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def uint16_nodata_scene(path: Path) -> Path:
    """96 x 96 uint16, values 100..4000, nodata 65535 over the left third (every band) and a square."""
    data = np.random.default_rng(3).integers(100, 4000, (3, 96, 96)).astype(np.uint16)
    data[:, :, :32] = 65535
    data[:, 60:70, 60:70] = 65535
    data[1, 5, 50] = 65535  # one band only: a value, kept
    return _write(path, data, 65535)


def float_nan_scene(path: Path) -> Path:
    """96 x 96 float32 with no declared nodata: NaN in every band over a block, NaN in band 2 of a row."""
    data = np.random.default_rng(4).uniform(-5, 50, (3, 96, 96)).astype(np.float32)
    data[:, 10:40, 10:40] = np.nan
    data[1, 80, :] = np.nan
    return _write(path, data, None)


def _detect_tile(path: Path, window: tuple[int, int, int, int]) -> torch.Tensor:
    """What detect's ``read_tiles`` gives for ``window`` (col, row, width, height), as float32."""
    col, row, width, height = window
    tile = TileSpec(str(path), 0, col, row, width, height, width, height)
    (read,) = list(read_tiles(str(path), [tile], ReadConfig()))
    return torch.from_numpy(read.image.astype(np.float32))


@pytest.mark.parametrize(
    ("make", "no_value"),
    [(uint16_nodata_scene, np.s_[:, :, :32]), (float_nan_scene, np.s_[:, 10:40, 10:40])],
    ids=["uint16-nodata", "float-nan"],
)
def test_a_training_tile_holds_what_detect_reads_for_its_window(tmp_path, make, no_value):
    scene = make(tmp_path / "scene.tif")
    voc = write_voc(tmp_path / "scene.xml", "scene.tif", [(40, 40, 56, 56), (20, 70, 30, 80)])
    images = read_labels([voc]).images
    sampling = TileSampling(tile_size_px=64, scale_range=(1.0, 1.0), object_bias=0.0)
    tiles = TrainingTiles(images, (1, 2, 3), sampling, augment=None, seed=5)
    for sample in range(len(tiles)):
        image, _ = tiles[(2, sample)]
        window, _ = tiles._crop(0, np.random.default_rng([5, 2, sample]))  # the crop that sample took
        expected = _detect_tile(scene, window)
        # before: training read 65535.0 (or NaN) where detect reads 0
        assert image.dtype == torch.float32 and torch.equal(image, expected), window
    whole, _ = LabeledTiles(images, (1, 2, 3))[0]  # validation reads the whole image the same way
    assert torch.equal(whole, _detect_tile(scene, (0, 0, 96, 96)))
    assert not torch.isnan(whole).any() and whole[no_value].abs().max() == 0


def test_band_stats_leave_nodata_out_by_hand(tmp_path):
    data = np.full((3, 8, 8), 65535, np.uint16)  # nodata everywhere but the left half
    data[0, :, :4] = 100
    data[0, :2, :4] = 110  # band 1: 24 pixels of 100, 8 of 110
    data[1, :, :4] = 200  # band 2: 32 pixels of 200
    data[2, :, :4] = np.arange(4, dtype=np.uint16) * 2 + 300  # band 3: 300, 302, 304, 306 per column
    scene = _write(tmp_path / "nd.tif", data, 65535)
    voc = write_voc(tmp_path / "nd.xml", "nd.tif", [(0, 0, 4, 4)])
    mean, std = band_stats(read_labels([voc]).images, (1, 2, 3))
    # band 1: mean (24*100 + 8*110)/32 = 102.5; variance (24*2.5**2 + 8*7.5**2)/32 = 18.75
    # band 2: 200, std 0 (floored to 1e-3); band 3: mean 303, variance (9 + 1 + 1 + 9)/4 = 5
    # before: the 32 nodata pixels of 65535 were averaged in (band 1 mean 32819)
    assert mean == pytest.approx((102.5, 200.0, 303.0))
    assert std == pytest.approx((18.75**0.5, 1e-3, 5**0.5))
    assert scene.exists()


def test_band_stats_of_a_nan_scene_are_finite_and_leave_nan_out(tmp_path):
    scene = float_nan_scene(tmp_path / "f.tif")
    voc = write_voc(tmp_path / "f.xml", "f.tif", [(40, 40, 56, 56)])
    mean, std = band_stats(read_labels([voc]).images, (1, 2, 3))
    with rasterio.open(scene) as src:
        raw = src.read().astype(np.float64)
    valid = ~np.isnan(raw).all(axis=0)  # pixels NaN in some bands only count, as 0 (what detect reads)
    values = np.nan_to_num(raw[:, valid])
    # before: NaN mean and std, which the model divides by (the loss went NaN)
    assert mean == pytest.approx(tuple(values.mean(axis=1)))
    assert std == pytest.approx(tuple(values.std(axis=1)))


def test_png_chips_read_through_the_reader_as_before(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "chip.png")
    voc = write_voc(tmp_path / "chip.xml", "chip.png", [(4, 4, 20, 20)])
    (item,) = read_labels([voc]).images
    image, _ = LabeledTiles([item], (3, 2, 1))[0]
    assert item.size_hw == (40, 50)
    assert torch.equal(image, torch.from_numpy(pixels.transpose(2, 0, 1)[::-1].astype(np.float32).copy()))
