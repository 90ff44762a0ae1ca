"""A paletted scene read at another GSD: its indexes resampled with ``nearest``, then expanded (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from pipeline.reading import ReadConfig, open_scene, read_tiles, read_window
from pipeline.resolution import ResolutionConfig, plan_read
from pipeline.tiling import TilingConfig, tile_scene

RED, BLUE, PURPLE = (255, 0, 0), (0, 0, 255), (128, 0, 128)
RED_INDEX, BLUE_INDEX, PURPLE_INDEX = 10, 200, 100  # their mean index and their mean colour: PURPLE_INDEX
CELL_PX = 3  # checkerboard cells: every 2 x 2 native px block on a cell edge holds both colours


def _paletted_checkerboard(path: Path, size_px: int = 64) -> Path:
    """``size_px`` square at 0.15 m, a checkerboard of RED_INDEX / BLUE_INDEX cells, a colour table.

    The table also holds PURPLE, a colour no pixel has: GDAL's ``average`` on a
    paletted band averages the colours and takes the nearest entry, so a blend
    of red and blue comes out purple; every other entry is green, so a blend
    of the indexes themselves would show too.
    """
    rows, cols = np.indices((size_px, size_px))
    cells = (rows // CELL_PX + cols // CELL_PX) % 2 == 0
    data = np.where(cells, RED_INDEX, BLUE_INDEX).astype(np.uint8)
    profile = dict(driver="GTiff", width=size_px, height=size_px, count=1, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=Affine(0.15, 0, 500000, 0, -0.15, 4e6), **profile) as dst:
        dst.write(data, 1)
        table = {i: (0, 255, 0, 255) for i in range(256)}
        table.update({RED_INDEX: (*RED, 255), BLUE_INDEX: (*BLUE, 255), PURPLE_INDEX: (*PURPLE, 255)})
        dst.write_colormap(1, table)
    return path


def test_a_paletted_scene_at_another_gsd_keeps_only_its_palette_colours(tmp_path):
    path = _paletted_checkerboard(tmp_path / "palette.tif")
    info = open_scene(str(path), ReadConfig())
    assert info.note == "palette expanded to RGB"
    read = plan_read(info, ResolutionConfig(0.3))  # 2 native px per model px
    assert read is not None and read.scale_x == 2.0
    plan = tile_scene(
        str(path), info.width_px, info.height_px, TilingConfig(tile_size_px=16, overlap_px=0), read
    )
    images = [t.image for t in read_tiles(str(path), list(plan), ReadConfig())]
    assert len(images) == 4 and all(image is not None and image.shape == (3, 16, 16) for image in images)
    colours = {tuple(int(v) for v in px) for image in images for px in image.reshape(3, -1).T}
    assert colours <= {RED, BLUE} and len(colours) == 2, colours


def test_a_paletted_crop_read_at_its_shape_holds_palette_indexes_only(tmp_path):
    path = _paletted_checkerboard(tmp_path / "palette.tif")
    info = open_scene(str(path), ReadConfig())
    tile = tile_scene(
        str(path), 64, 64, TilingConfig(tile_size_px=32, overlap_px=0), plan_read(info, ResolutionConfig(0.3))
    )[0]
    read = read_window(str(path), tile, ReadConfig(bands=(1,)))  # training's read of a model-px crop
    assert read.pixels.shape == (1, 32, 32) and set(np.unique(read.pixels)) == {RED_INDEX, BLUE_INDEX}
