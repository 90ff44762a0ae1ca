"""XYZ tiles of real GeoTIFFs: rio-tiler over the file reading.py opened, stretched for display."""

from __future__ import annotations

import io

import numpy as np
import pytest
from morecantile import tms
from PIL import Image
from rasterio.transform import Affine

from pipeline.errors import InvalidSceneError
from pipeline.reading import ReadConfig, read_xyz_tile
from pipeline.review_tiles import display_range, render_tile
from tests.conftest import write_scene

MERCATOR = tms.get("WebMercatorQuad")
TRANSFORM = Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 4000256.0)


def _centre_tile(z: int):
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(500128.0, 4000128.0)
    return MERCATOR.tile(lon, lat, z)


def test_tile_shows_the_painted_object(tmp_path):
    # a red square over the whole middle of the scene
    path = write_scene(
        tmp_path / "s.tif", [(64, 64, 192, 192, 0)], width=256, height=256, transform=TRANSFORM
    )
    t = _centre_tile(18)
    png = render_tile(str(path), t.x, t.y, t.z, ReadConfig(), display_range(str(path), ReadConfig()))
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (256, 256, 4)
    red = (image[..., 0] > 200) & (image[..., 1] < 50) & (image[..., 3] == 255)
    assert red.mean() > 0.2, "the red square should fill part of the centre tile"


def test_a_tile_off_the_scene_is_transparent(tmp_path):
    path = write_scene(tmp_path / "s.tif", [], width=256, height=256, transform=TRANSFORM)
    t = _centre_tile(18)
    read = read_xyz_tile(str(path), t.x + 50, t.y, t.z, ReadConfig())
    assert read.pixels.shape == (3, 256, 256) and not read.valid.any() and not read.pixels.any()


def test_uint16_is_stretched_by_percentiles(tmp_path):
    path = write_scene(
        tmp_path / "s.tif", [], width=256, height=256, transform=TRANSFORM, dtype="uint16", count=1, fill=0
    )
    import rasterio

    with rasterio.open(path, "r+") as dst:
        dst.write(np.tile(np.arange(256, dtype=np.uint16) * 40, (256, 1))[None])  # 0 .. 10200
    lo, hi = display_range(str(path), ReadConfig(bands=(1,)))[0]
    assert 100 < lo < 400 and 9800 < hi < 10100
    t = _centre_tile(18)
    image = np.asarray(
        Image.open(io.BytesIO(render_tile(str(path), t.x, t.y, t.z, ReadConfig(bands=(1,)), [(lo, hi)])))
    )
    assert (image[..., 0] == image[..., 1]).all() and image[..., 0].max() > 100  # grey, stretched to 8 bits


def test_a_vrt_is_never_opened_for_a_tile(tmp_path):
    vrt = tmp_path / "s.tif"
    vrt.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"></VRTDataset>')
    with pytest.raises(InvalidSceneError, match="VRT"):
        read_xyz_tile(str(vrt), 0, 0, 0, ReadConfig())


def test_too_few_bands_is_one_clear_error(tmp_path):
    path = write_scene(tmp_path / "s.tif", [], width=64, height=64, transform=TRANSFORM, count=1)
    with pytest.raises(InvalidSceneError, match="has 1 band"):
        read_xyz_tile(str(path), 0, 0, 0, ReadConfig())
