"""The reader's functions for everything but detect: header, window, overview, band statistics."""

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InvalidSceneError
from pipeline.gdal_config import extension_drivers
from pipeline.pixel_stats import band_statistics
from pipeline.reading import (
    ReadConfig,
    WindowRead,
    read_header,
    read_overview,
    read_tiles,
    read_window,
)
from pipeline.tiling import TilingConfig, tile_scene


def test_read_window_gives_what_read_tiles_gives_and_the_valid_mask(make_scene):
    path = make_scene("nd.tif", [(0, 0, 10, 10, 0)], width=64, height=64, nodata=7, fill=7, dtype="uint16")
    (tile,) = tile_scene(str(path), 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    expected = next(read_tiles(str(path), [tile], ReadConfig())).image
    read = read_window(str(path), (0, 0, 64, 64), ReadConfig())
    assert read.pixels.dtype == np.uint16 and np.array_equal(read.pixels, expected)
    assert read.valid[:10, :10].all() and read.valid.sum() == 100  # only the object has a value
    part = read_window(str(path), (5, 5, 10, 20), ReadConfig(bands=(1,)))
    assert part.pixels.shape == (1, 20, 10) and np.array_equal(part.pixels[0], expected[0, 5:25, 5:15])


def test_read_header_has_no_detect_checks(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "chip.png")
    header = read_header(str(tmp_path / "chip.png"), ReadConfig(drivers=("PNG", "JPEG")))
    assert (header.height_px, header.width_px, header.count, header.dtype) == (20, 30, 3, "uint8")
    assert header.crs_wkt is None and header.transform.is_identity
    with pytest.raises(InvalidSceneError, match="chip.png: cannot open as GTiff"):
        read_header(str(tmp_path / "chip.png"), ReadConfig())  # a PNG needs PNG named


def test_read_window_with_too_few_bands_names_the_file(make_scene):
    path = make_scene("one.tif", count=1)
    with pytest.raises(InvalidSceneError, match=r"one.tif: has 1 band\(s\), but bands \[1, 2, 3\]"):
        read_window(str(path), None, ReadConfig())


def test_read_overview_is_decimated_and_masks_nodata(make_scene):
    path = make_scene("big.tif", [(0, 0, 64, 128, 0)], width=256, height=128, nodata=0)
    read = read_overview(str(path), (32, 64), ReadConfig())
    assert read.pixels.shape == (3, 32, 64)
    assert read.valid[:, :16].all() and not read.valid[:, 16:].any()  # left quarter has a value


def test_band_statistics_combine_reads_as_one_and_skip_empty_ones():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1000, (2, 10, 10)), rng.uniform(500, 600, (2, 5, 7))
    va, vb = rng.random((10, 10)) > 0.3, rng.random((5, 7)) > 0.5
    empty = WindowRead(np.zeros((2, 3, 3)), np.zeros((3, 3), bool))
    stats = band_statistics([WindowRead(a, va), empty, WindowRead(b, vb)])
    values = np.concatenate([a[:, va], b[:, vb]], axis=1)
    assert stats.num_pixels == va.sum() + vb.sum()
    assert stats.mean == pytest.approx(tuple(values.mean(axis=1)))
    assert stats.std == pytest.approx(tuple(values.std(axis=1)))
    assert band_statistics([empty]).num_pixels == 0


def test_a_vrt_never_opens_even_when_named(tmp_path, make_scene):
    make_scene("real.tif", [(0, 0, 8, 8, 0)])
    vrt = tmp_path / "copy.vrt"
    vrt.write_text(
        """<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" band="1">
  <SimpleSource><SourceFilename relativeToVRT="1">real.tif</SourceFilename><SourceBand>1</SourceBand>
  </SimpleSource></VRTRasterBand></VRTDataset>"""
    )
    with pytest.raises(InvalidSceneError, match="copy.vrt: is a GDAL VRT"):
        read_window(str(vrt), None, ReadConfig(bands=(1,), drivers=("VRT", "GTiff")))


def test_extension_drivers_open_what_detect_lists():
    assert extension_drivers("/d/a.TIF") == ("GTiff",)
    assert extension_drivers("s3://b/k/a.jp2") == ("JP2OpenJPEG",)
    assert extension_drivers("/d/a.vrt") == ("GTiff",) and extension_drivers("/d/noext") == ("GTiff",)
