"""One detect run over a folder of odd and broken scenes: each gets its documented outcome, good ones are unaffected.

Outcomes (docs/reliability.md, "Bad input"): no geotransform -> failed, naming
it; a 200000 x 200000 px header -> failed by the size limit, no tiles planned;
an all-nodata scene -> done with 0 detections, every tile skipped; float32 with
NaN and no nodata -> NaN is nodata; uint16 -> done; a scene smaller than one
tile -> done; a directory named like a raster -> walked into, never opened; two
scenes with one file name in different folders -> two outputs.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from pipeline.ray_stages import DetectJob, run_detect
from pipeline.report import read_report
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene

pytestmark = pytest.mark.integration
OBJ = [(10, 10, 30, 30, 0)]


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    write_scene(src / "good.tif", OBJ, width=200, height=200)
    write_scene(src / "a" / "same.tif", OBJ, width=200, height=200)
    write_scene(src / "b" / "same.tif", [(50, 50, 70, 70, 1)], width=200, height=200)
    write_scene(src / "uint16.tif", OBJ, width=200, height=200, dtype="uint16")
    write_scene(src / "small.tif", OBJ, width=40, height=50)
    write_scene(src / "allnodata.tif", [], width=200, height=200, nodata=0)
    write_scene(src / "nogeo.tif", OBJ, width=64, height=64, transform=Affine.identity(), crs="EPSG:32633")
    (src / "folder.tif").mkdir()
    write_scene(src / "folder.tif" / "inner.tif", OBJ, width=64, height=64)
    nan = write_scene(src / "nan.tif", OBJ, width=200, height=200, dtype="float32")
    with rasterio.open(nan, "r+") as dst:
        data = dst.read()
        data[:, :, 72:] = np.nan  # the right tile column has no value, and no nodata is declared
        dst.write(data)
    profile = dict(driver="GTiff", width=200_000, height=200_000, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(
        src / "huge.tif",
        "w",
        **profile,
        transform=Affine(0.3, 0, 5e5, 0, -0.3, 4e6),
        tiled=True,
        compress="deflate",
        SPARSE_OK=True,
    ):
        pass  # a sparse file: the header claims 40 gigapixels
    return src


def test_each_bad_scene_gets_its_outcome_and_good_ones_are_done(ray_cluster, tmp_path):
    src = _folder(tmp_path)
    job = DetectJob(
        source=str(src),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    run_detect(job, log=lambda m: None)
    report = read_report(tmp_path / "out")
    by = {str(Path(s["uri"]).relative_to(src.resolve())): s for s in report["scenes"]}
    assert set(by) == {
        "good.tif",
        "a/same.tif",
        "b/same.tif",
        "uint16.tif",
        "small.tif",
        "allnodata.tif",
        "nogeo.tif",
        "nan.tif",
        "huge.tif",
        "folder.tif/inner.tif",
    }  # the folder named like a raster was walked into, not opened
    assert "no geotransform" in by["nogeo.tif"]["error"] and by["nogeo.tif"]["status"] == "failed"
    assert by["huge.tif"]["status"] == "failed" and "--max-scene-px" in by["huge.tif"]["error"]
    assert by["huge.tif"]["num_tiles"] == 0
    assert by["allnodata.tif"]["status"] == "done" and by["allnodata.tif"]["num_detections"] == 0
    assert by["allnodata.tif"]["num_tiles_skipped_nodata"] == by["allnodata.tif"]["num_tiles"] == 4
    for name in (
        "good.tif",
        "a/same.tif",
        "b/same.tif",
        "uint16.tif",
        "small.tif",
        "nan.tif",
        "folder.tif/inner.tif",
    ):
        assert by[name]["status"] == "done" and by[name]["num_detections"] == 1, (name, by[name])
    # the NaN half is nodata: its tiles were skipped, not inferred on NaN
    assert by["nan.tif"]["num_tiles_skipped_nodata"] == 2
    # same file name in two folders: two outputs, neither overwrote the other
    assert by["a/same.tif"]["output"] != by["b/same.tif"]["output"]
    gdf = gpd.read_parquet(tmp_path / "out")
    assert len(gdf) == 7 and gdf["scene"].nunique() == 7
