from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from pipeline.errors import InvalidSceneError, TileReadError
from pipeline.gdal_config import canonical_drivers
from pipeline.reading import (
    ReadConfig,
    block_cache_mb,
    open_scene,
    read_footprint,
    read_tiles,
    scene_extensions,
)
from pipeline.tiling import TilingConfig, tile_scene


def test_tile_of_a_scene_smaller_than_a_tile_is_padded_in_numpy(make_scene):
    path = make_scene("a.tif", [(30, 40, 40, 50, 0)], width=40, height=50)
    info = open_scene(str(path), ReadConfig())
    assert (info.width_px, info.height_px, info.count) == (40, 50, 3)
    tiles = tile_scene(str(path), 40, 50, TilingConfig(tile_size_px=64, overlap_px=16))
    (read,) = list(read_tiles(str(path), tiles, ReadConfig()))
    assert read.image.shape == (3, 64, 64) and read.image.dtype == np.uint8  # the scene's dtype
    assert read.image[0, 40:50, 30:40].min() == 255
    assert read.image[:, 50:, :].max() == 0 and read.image[:, :, 40:].max() == 0  # padding


def test_all_nodata_tile_is_skipped(make_scene):
    path = make_scene("nd.tif", [(0, 0, 10, 10, 0)], width=128, height=64, nodata=7, fill=7)
    tiles = tile_scene(str(path), 128, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    reads = list(read_tiles(str(path), tiles, ReadConfig()))
    assert reads[0].image is not None and reads[1].image is None


def test_uint16_and_band_selection(make_scene):
    path = make_scene("u16.tif", [(0, 0, 4, 4, 3)], dtype="uint16", count=4)
    tiles = tile_scene(str(path), 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    (read,) = list(read_tiles(str(path), tiles, ReadConfig(bands=(4, 1))))
    assert read.image.shape == (2, 64, 64) and read.image[0, 0, 0] == 255 and read.image[1, 0, 0] == 0
    assert read.image.dtype == np.uint16


def test_no_crs_is_refused_with_assume_crs_hint(make_scene):
    path = make_scene("nocrs.tif", crs=None)
    with pytest.raises(InvalidSceneError, match=r"nocrs.tif.*--assume-crs EPSG"):
        open_scene(str(path), ReadConfig())
    info = open_scene(str(path), ReadConfig(assume_crs="EPSG:32633"))
    assert "32633" in info.crs_wkt or "UTM zone 33N" in info.crs_wkt


def test_too_few_bands_names_file_and_fix(make_scene):
    path = make_scene("gray.tif", count=1)
    with pytest.raises(InvalidSceneError, match=r"gray.tif.*1 band.*--bands"):
        open_scene(str(path), ReadConfig())


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "empty, 0 bytes"), (b"hello, I am text\n", "cannot open as GTiff")],
)
def test_bad_files_name_the_problem(tmp_path, content, expected):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InvalidSceneError, match=expected) as info:
        open_scene(str(path), ReadConfig())
    assert "bad.tif" in str(info.value)


def test_png_renamed_tif_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "png.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
    with pytest.raises(InvalidSceneError, match="png.tif"):
        open_scene(str(path), ReadConfig())


def test_truncated_tiff_fails_on_read_naming_tile(make_scene, tmp_path):
    src = make_scene(
        "big.tif", [(0, 0, 50, 50, 0)], width=512, height=512, transform=Affine(1, 0, 0, 0, -1, 512)
    )
    data = src.read_bytes()
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(data[: len(data) // 2])
    info = open_scene(str(trunc), ReadConfig())  # the header is intact
    tiles = tile_scene(
        str(trunc), info.width_px, info.height_px, TilingConfig(tile_size_px=256, overlap_px=0)
    )
    with pytest.raises((TileReadError, InvalidSceneError), match="trunc.tif"):
        list(read_tiles(str(trunc), tiles, ReadConfig()))


def test_block_cache_holds_two_rows_of_tiles_by_hand():
    # 50,000 px x 1024 rows x 3 bands x 2 bytes = 293 MiB per row of tiles, doubled
    assert block_cache_mb(50_000, 1024, 3, "uint16") == 2 * 50_000 * 1024 * 3 * 2 // 2**20 == 585
    assert block_cache_mb(500, 1024, 3, "uint8") == 64  # floor
    assert block_cache_mb(400_000, 4096, 4, "float32") == 4096  # ceiling


def _gdal_cache_bytes():
    """GDAL's block cache size, asked of the libgdal rasterio loaded (None where not found)."""
    import ctypes
    import glob

    libs = glob.glob(str(Path(rasterio.__file__).parent.parent / "rasterio.libs" / "libgdal*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return lib.GDALGetCacheMax64()


def test_read_tiles_sizes_the_block_cache_for_this_scene(tmp_path):
    path = tmp_path / "wide.tif"
    profile = dict(driver="GTiff", width=40_000, height=256, count=3, dtype="uint16", crs="EPSG:32633")
    profile |= dict(transform=Affine(1, 0, 0, 0, -1, 256), tiled=True, sparse_ok=True)
    with rasterio.open(path, "w", **profile):
        pass  # header only
    tiles = tile_scene(str(path), 40_000, 256, TilingConfig(tile_size_px=256, overlap_px=0))
    reads = read_tiles(str(path), tiles[:1], ReadConfig())
    next(reads)  # inside the scene's read
    expected_mb = 2 * 40_000 * 256 * 3 * 2 // 2**20  # 117 MB: two rows of 256 px tiles
    assert rasterio.env.getenv()["GDAL_CACHEMAX"] == expected_mb * 2**20
    if _gdal_cache_bytes() is not None:  # what GDAL uses: bytes (an int is not read as MB)
        assert _gdal_cache_bytes() == expected_mb * 2**20
    reads.close()


def test_scene_deleted_after_listing_says_so(make_scene):
    path = make_scene("gone.tif", width=64, height=64)
    info = open_scene(str(path), ReadConfig())
    tiles = tile_scene(str(path), info.width_px, info.height_px, TilingConfig(tile_size_px=64, overlap_px=0))
    path.unlink()  # deleted between the header and the pixels
    with pytest.raises(InvalidSceneError) as read_error:
        list(read_tiles(str(path), tiles, ReadConfig()))
    assert str(read_error.value) == f"{path}: no longer exists (deleted since the run listed it)"
    with pytest.raises(InvalidSceneError, match="no longer exists") as open_error:
        open_scene(str(path), ReadConfig())
    assert "GTiff" not in str(open_error.value) and "complete GeoTIFF" not in str(open_error.value)


def test_open_scene_gives_an_affine(make_scene):
    path = make_scene("a.tif", transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000))
    info = open_scene(str(path), ReadConfig())
    assert isinstance(info.transform, Affine) and info.transform == Affine(0.5, 0, 500000, 0, -0.5, 5000000)


def test_read_footprint_by_hand(make_scene):
    from pyproj import CRS

    path = make_scene("fp.tif", width=64, height=32)  # 10 m pixels from (500000, 4000000)
    fp = read_footprint(str(path), CRS.from_epsg(32633))
    assert fp.bounds == (500000.0, 4000000.0 - 320, 500000.0 + 640, 4000000.0)
    with pytest.raises(InvalidSceneError, match="no CRS"):
        read_footprint(str(make_scene("nocrs.tif", crs=None)), CRS.from_epsg(32633))


def test_50k_scene_tiles_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.tif"
    profile = dict(
        driver="GTiff",
        width=50_000,
        height=50_000,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        sparse_ok=True,
    )
    with rasterio.open(path, "w", **profile) as dst:  # sparse: only one block is written
        dst.write(
            np.full((3, 512, 512), 200, np.uint8), window=rasterio.windows.Window(49_488, 49_488, 512, 512)
        )
    assert path.stat().st_size < 5_000_000  # a 7.5 GB raster that only exists as a header and one block
    info = open_scene(str(path), ReadConfig())
    tiles = tile_scene(str(path), info.width_px, info.height_px, TilingConfig())
    assert len(tiles) == 56 * 56
    last = list(read_tiles(str(path), tiles[-1:], ReadConfig()))[0]
    assert last.image.shape == (3, 1024, 1024) and last.image.max() == 200


def test_fully_masked_tile_is_skipped(make_scene):
    path = make_scene("masked.tif", [(70, 10, 80, 20, 0)], width=128, height=64)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        mask = np.zeros((64, 128), np.uint8)
        mask[:, 64:] = 255  # left tile fully masked, right tile valid
        dst.write_mask(mask)
    info = open_scene(str(path), ReadConfig())
    assert info.has_mask and info.nodata is None
    tiles = tile_scene(str(path), 128, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    reads = list(read_tiles(str(path), tiles, ReadConfig()))
    assert reads[0].image is None and reads[1].image is not None and reads[1].image[0, 10, 6] == 255


def test_nodata_pixels_are_zero_in_the_scene_dtype(make_scene):
    path = make_scene("nd2.tif", [(0, 0, 10, 10, 0)], width=64, height=64, nodata=7, fill=7)
    tiles = tile_scene(str(path), 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    (read,) = list(read_tiles(str(path), tiles, ReadConfig()))
    assert read.image.dtype == np.uint8
    assert read.image[0, 0, 0] == 255 and read.image[:, 20:, 20:].max() == 0  # the 7s became 0


def test_read_group_rows_carry_scene_dtype_pixels_and_no_pixels_for_nodata(make_scene, tmp_path):
    from pipeline.executor import TileStatus
    from pipeline.ray_stages import read_group

    path = make_scene("nd3.tif", [(0, 0, 10, 10, 0)], width=128, height=64, nodata=7, fill=7)
    plan = tile_scene(str(path), 128, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    tiles = [plan[0], plan[1]]
    rows = read_group(tiles, ReadConfig())
    assert [r.status for r in rows] == [TileStatus.OK, TileStatus.NODATA]
    assert rows[0].pixels.dtype == np.uint8 and rows[0].pixels.shape == (3, 64, 64)  # 1 byte a sample
    expected = next(read_tiles(str(path), tiles[:1], ReadConfig())).image
    assert np.array_equal(rows[0].pixels, expected)
    assert rows[1].pixels is None
    gone = tmp_path / "gone.tif"
    bad = tile_scene(str(gone), 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    (row,) = read_group([bad[0]], ReadConfig())
    assert row.status is TileStatus.ERROR and row.pixels is None and "gone.tif" in row.error


def test_one_band_scene_read_as_three_channels_and_partial_nan_becomes_zero(tmp_path):
    # issue 10: a 1-band scene with --bands 1,1,1; NaN in some bands of a float scene carries no value
    import numpy as np
    import rasterio

    from pipeline.reading import ReadConfig, open_scene, read_tiles
    from pipeline.tiling import TilingConfig, tile_scene
    from tests.conftest import write_scene

    gray = write_scene(tmp_path / "gray.tif", [(4, 4, 12, 12, 0)], width=32, height=32, count=1)
    cfg = ReadConfig(bands=(1, 1, 1))
    info = open_scene(str(gray), cfg)
    tiles = tile_scene(str(gray), info.width_px, info.height_px, TilingConfig(tile_size_px=32, overlap_px=0))
    image = next(read_tiles(str(gray), tiles, cfg)).image
    assert image.shape == (3, 32, 32) and (image[0] == image[1]).all() and image[2, 5, 5] == 255
    wet = write_scene(tmp_path / "f.tif", [], width=32, height=32, dtype="float32", fill=2.0)
    with rasterio.open(wet, "r+") as dst:
        data = dst.read()
        data[1, :4, :4] = np.nan  # one band only: the pixel keeps its other bands
        dst.write(data)
    image = next(read_tiles(str(wet), tiles, ReadConfig())).image
    assert not np.isnan(image).any() and image[1, 0, 0] == 0.0 and image[0, 0, 0] == 2.0


def test_scene_extensions_follow_the_drivers():
    assert scene_extensions(("GTiff",)) == (".tif", ".tiff")
    assert scene_extensions(("COG",)) == (".tif", ".tiff")  # GDAL reads COGs with GTiff
    widened = scene_extensions(("GTiff", "JP2OpenJPEG", "PNG"))
    assert {".jp2", ".png", ".tif", ".tiff"} <= set(widened) and ".jpg" not in widened
    assert scene_extensions(("gtiff", "VRT")) == (".tif", ".tiff")  # any case; a VRT never listed


def test_driver_names_take_gdal_spelling_and_refuse_what_lists_nothing():
    assert canonical_drivers(["gtiff", "jp2openjpeg", "COG"]) == ("GTiff", "JP2OpenJPEG")
    for names, expected in [
        (["VRT"], "can point at any file"),
        (["ENVI"], "ENVI"),
        (["GTiff", "Nope"], "Nope"),
    ]:
        with pytest.raises(ValueError, match=expected):
            canonical_drivers(names)
