import numpy as np
import pytest
from rasterio.transform import Affine

from pipeline.errors import InvalidSceneError, TileReadError
from pipeline.reading import ReadConfig, open_scene, read_tiles
from pipeline.tiling import TilingConfig, tile_scene


def test_edge_tile_is_padded_in_numpy(make_scene):
    path = make_scene("a.tif", [(60, 60, 70, 70, 0)], width=70, height=70)
    info = open_scene(str(path), ReadConfig())
    assert (info.width_px, info.height_px, info.count) == (70, 70, 3)
    tiles = tile_scene(str(path), 70, 70, TilingConfig(tile_size_px=64, overlap_px=16))
    reads = list(read_tiles(str(path), tiles, ReadConfig()))
    last = reads[-1]
    assert last.image.shape == (3, 64, 64)
    # the object at scene (60..70) lies at tile (12..22) of the last tile (offset 48)
    assert last.image[0, 12:22, 12:22].min() == 255
    assert last.image[:, 22:, :].max() == 0 and last.image[:, :, 22:].max() == 0  # padding


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


def test_block_cache_holds_a_row_of_tiles():
    from pyproj import CRS

    from pipeline.ray_stages import DetectConfig, RunConfig, block_cache_mb
    from pipeline.types import SceneInfo

    wkt = CRS.from_epsg(32633).to_wkt()
    cfg = RunConfig("s", "o", DetectConfig(model="m"), tiling=TilingConfig(tile_size_px=1024, overlap_px=128))
    wide = SceneInfo("w.tif", 50_000, 50_000, 3, "uint16", wkt, (1, 0, 0, 0, -1, 0))
    small = SceneInfo("s.tif", 500, 500, 3, "uint8", wkt, (1, 0, 0, 0, -1, 0))
    # 50,000 px x 1024 rows x 3 bands x 2 bytes = 293 MiB per row of tiles, doubled for the overlap
    assert block_cache_mb([small, wide], cfg) == 2 * 50_000 * 1024 * 3 * 2 // 2**20
    assert block_cache_mb([small], cfg) == 64


def test_50k_scene_tiles_without_reading_it_whole(tmp_path):
    import rasterio

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
    import rasterio

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
