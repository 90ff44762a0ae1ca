"""GSD from headers, plans in model pixels, resampled reads, exact box mapping (issue 21), small scenes (issue 26)."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.errors import InvalidSceneError
from pipeline.job import DetectJob
from pipeline.reading import ReadConfig, read_tiles
from pipeline.report import read_report
from pipeline.resolution import (
    ResolutionConfig,
    detections_to_native,
    pixel_size_m,
    plan_read,
    resolve_resolution,
    scene_gsd_m,
)
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import SceneInfo, TileDetections
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

UTM = CRS.from_epsg(32633).to_wkt()


def _info(transform: Affine, crs: str = UTM, width: int = 400, height: int = 200) -> SceneInfo:
    return SceneInfo("s.tif", width, height, 3, "uint8", CRS.from_user_input(crs).to_wkt(), transform)


# -- GSD from the header -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transform", "crs", "expected"),
    [
        # projected, metres; non-square pixels keep their two sides
        (Affine(0.3, 0, 500000, 0, -0.3, 4e6), "EPSG:32633", (0.3, 0.3)),
        (Affine(0.3, 0, 500000, 0, -0.6, 4e6), "EPSG:32633", (0.3, 0.6)),
        # projected, US survey feet (NAD83 / New York Long Island): 1 ft = 1200/3937 m
        (Affine(1, 0, 1e6, 0, -1, 2e5), "EPSG:2263", (1200 / 3937, 1200 / 3937)),
        # projected, international feet (NAD83(HARN) / Georgia East (ft)... EPSG:2240 is US ft; 2222 is ft)
        (Affine(2, 0, 1e6, 0, -2, 2e5), "EPSG:2222", (2 * 0.3048, 2 * 0.3048)),
        # rotated 30 degrees: each side keeps its length
        (
            Affine(
                0.3 * math.cos(math.pi / 6), 0.3 * math.sin(math.pi / 6), 500000,
                0.3 * math.sin(math.pi / 6), -0.3 * math.cos(math.pi / 6), 4e6,
            ),
            "EPSG:32633",
            (0.3, 0.3),
        ),
    ],
)  # fmt: skip
def test_projected_pixel_sides_in_metres(transform, crs, expected):
    assert pixel_size_m(transform, CRS.from_user_input(crs).to_wkt(), 400, 200) == pytest.approx(
        expected, rel=1e-9
    )


def test_geographic_pixel_measured_at_the_scene_centre():
    # 1e-5 degree pixels; the scene's centre is at (10.002 E, 60.001 N): 400 x 200 px from (10, 60.002)
    transform = Affine(1e-5, 0, 10.0, 0, -1e-5, 60.002)
    side_x, side_y = pixel_size_m(transform, CRS.from_epsg(4326).to_wkt(), 400, 200)
    # WGS84 at 60.001 N: a degree of longitude is 55,800 m, of latitude 111,420 m (pyproj.Geod, by hand)
    assert side_x == pytest.approx(0.5580, abs=2e-4)
    assert side_y == pytest.approx(1.1142, abs=2e-4)
    assert scene_gsd_m(_info(transform, "EPSG:4326")) == pytest.approx(math.sqrt(side_x * side_y))


@pytest.mark.parametrize(
    "transform",
    [Affine.identity(), Affine(0.3, 0.6, 0, 0.15, 0.3, 0)],  # GCPs/RPCs only; degenerate (det 0)
)
def test_unknowable_pixel_size_is_none_and_fails_the_scene_in_one_line(transform):
    assert pixel_size_m(transform, UTM, 400, 200) is None
    with pytest.raises(InvalidSceneError) as exc:
        plan_read(_info(transform), ResolutionConfig(model_gsd_m=0.3))
    assert str(exc.value).startswith("s.tif: its pixel size in metres cannot be known")
    assert "--native-resolution" in str(exc.value) and "\n" not in str(exc.value)


def test_a_scene_too_far_from_the_model_gsd_names_both_and_the_option():
    with pytest.raises(InvalidSceneError) as exc:
        plan_read(_info(Affine(0.03, 0, 500000, 0, -0.03, 4e6)), ResolutionConfig(model_gsd_m=0.3))
    message = str(exc.value)
    assert "0.03 m" in message and "0.3 m" in message and "10.0x" in message
    assert "--max-gsd-factor 8" in message and "--max-gsd-factor 10" in message
    # within the factor: planned
    assert plan_read(_info(Affine(0.03, 0, 500000, 0, -0.03, 4e6)), ResolutionConfig(0.3, 10.0)) is not None


def test_the_model_size_of_a_scene_per_axis():
    read = plan_read(_info(Affine(0.075, 0, 500000, 0, -0.15, 4e6)), ResolutionConfig(model_gsd_m=0.3))
    assert (read.model_width_px, read.model_height_px) == (100, 100)  # 400 x 0.075 m = 200 x 0.15 m = 30 m
    assert (read.scale_x, read.scale_y) == (4.0, 2.0)
    assert read.native_gsd_m == pytest.approx(math.sqrt(0.075 * 0.15))
    assert plan_read(_info(Affine(0.3, 0, 0, 0, -0.3, 0)), ResolutionConfig()) is None  # native resolution
    same = plan_read(_info(Affine(0.3, 0, 0, 0, -0.3, 0)), ResolutionConfig(0.3))
    assert (
        same.is_native and type(tile_scene("s.tif", 400, 200, TilingConfig(), same)[0]).__name__ == "TileSpec"
    )


def test_checkpoint_gsd_override_and_native():
    assert resolve_resolution(0.3, None, False, 8.0).model_gsd_m == 0.3
    assert resolve_resolution(0.3, 0.15, False, 8.0).model_gsd_m == 0.15
    assert resolve_resolution(0.3, None, True, 8.0).model_gsd_m is None
    config = resolve_resolution(None, None, False, 8.0)
    assert config.model_gsd_m is None and "native resolution" in config.note
    with pytest.raises(ValueError):
        resolve_resolution(0.3, 0.3, True, 8.0)


# -- planning and reading in model pixels --------------------------------------------------------------------


def test_plan_is_in_model_pixels_and_windows_are_native():
    read = plan_read(
        _info(Affine(0.075, 0, 500000, 0, -0.075, 4e6), width=4000, height=2000), ResolutionConfig(0.3)
    )
    plan = tile_scene("s.tif", 4000, 2000, TilingConfig(tile_size_px=512, overlap_px=64), read)
    assert (plan.width_px, plan.height_px) == (1000, 500)
    assert [(t.col_off_px, t.valid_width_px) for t in plan] == [(0, 512), (448, 512), (488, 512)]
    assert plan[0].height_px == 512 and plan[0].valid_height_px == 500
    last = plan[2].window()  # model cols 488..1000 = native 1952..4000
    assert (last.col_off, last.row_off, last.width, last.height) == (1952.0, 0.0, 2048.0, 2000.0)
    assert plan[2].out_shape_hw == (500, 512)


def test_nodata_never_bleeds_and_all_nodata_tiles_stay_skipped(tmp_path):
    # 64 x 32 px at 0.15 m, nodata 7: native columns 0..34 valid (band 1 = 100, others 50), 35.. nodata.
    # Read at 0.3 m: 32 x 16 model px, 2 native px each; tiles of 8 model px: 4 per row, 2 rows.
    data = np.full((3, 32, 64), 7, np.uint8)
    data[:, :, :35] = 50
    data[0, :, :35] = 100
    path = tmp_path / "half.tif"
    profile = dict(driver="GTiff", width=64, height=32, count=3, dtype="uint8", nodata=7, crs="EPSG:32633")
    with rasterio.open(path, "w", transform=Affine(0.15, 0, 500000, 0, -0.15, 4e6), **profile) as dst:
        dst.write(data)
    read = plan_read(
        _info(Affine(0.15, 0, 500000, 0, -0.15, 4e6), width=64, height=32), ResolutionConfig(0.3)
    )
    plan = tile_scene(str(path), 64, 32, TilingConfig(tile_size_px=8, overlap_px=0), read)
    images = {t.tile.col_off_px: t.image for t in read_tiles(str(path), list(plan)[:4], ReadConfig())}
    assert images[24] is None  # native columns 48..64: all nodata, skipped, not inferred
    assert (images[0][0] == 100).all() and (images[8][1:] == 50).all()
    edge = images[16]  # model columns 16..24 = native 32..48
    # model column 16 (native 32, 33: valid) is 100; column 17 (native 34 valid, 35 nodata) has no value:
    # its nearest native pixel (35) has none.  No pixel is a blend with the nodata value 7.
    assert (edge[0, :, 0] == 100).all() and (edge[:, :, 1:] == 0).all()


# -- boxes back to native pixels and to the CRS, exactly -----------------------------------------------------


def test_detections_to_native_scales_boxes_window_and_core():
    read = plan_read(
        _info(Affine(0.075, 0, 500000, 0, -0.15, 4e6), width=4000, height=2000), ResolutionConfig(0.3)
    )
    tile = tile_scene("s.tif", 4000, 2000, TilingConfig(tile_size_px=512, overlap_px=64), read)[2]
    native = detections_to_native(TileDetections(tile, [[10, 20, 30, 40]], [0.9], [1]))
    assert native.boxes_xyxy_px.tolist() == [[40.0, 40.0, 120.0, 80.0]]  # x * 4, y * 2
    assert (native.tile.col_off_px, native.tile.row_off_px) == (488 * 4, 0)
    assert native.tile.core_xyxy_px == (
        tile.core_xyxy_px[0] * 4,
        0.0,
        4000.0,
        480 * 2.0,
    )  # 1000 model rows: core ends at 480


def _run(job: DetectJob):
    messages: list[str] = []
    record = DetectRun(job, InlineExecutor(job), log=messages.append).run()
    return record, messages


def test_boxes_map_back_to_native_pixels_and_the_crs_exactly(tmp_path):
    # 400 x 200 px at 0.075 m from (500000, 4000000); a 40 x 40 native px square at cols 40..80, rows 20..60.
    # Read at 0.3 m: 100 x 50 model px, 4 native px each; the square is model px 10..20 x 5..15.
    # Back: native 40..80 x 20..60; CRS x = 500000 + 0.075 * col: 500003 .. 500006;
    # y = 4000000 - 0.075 * row: 3999995.5 .. 3999998.5.
    transform = Affine(0.075, 0, 500000, 0, -0.075, 4000000)
    write_scene(
        tmp_path / "in" / "fine.tif", [(40, 20, 80, 60, 1)], width=400, height=200, transform=transform
    )
    job = DetectJob(
        source=str(tmp_path / "in"),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=64, overlap_px=16),
        resolution=ResolutionConfig(model_gsd_m=0.3),
        progress=False,
    )
    record, messages = _run(job)
    assert record.counts()["done"] == 1, messages
    rows = gpd.read_parquet(tmp_path / "out")
    assert rows[["xmin_px", "ymin_px", "xmax_px", "ymax_px"]].values.tolist() == [[40.0, 20.0, 80.0, 60.0]]
    assert list(rows.geometry.iloc[0].bounds) == [500003.0, 3999995.5, 500006.0, 3999998.5]
    line = read_report(tmp_path / "out")["scenes"][0]
    assert line["native_gsd_m"] == 0.075 and line["model_gsd_m"] == 0.3 and line["read_factor"] == 4.0
    assert line["num_px_inferred"] == 2 * 64 * 64  # 100 x 50 model px: two 64 px tiles, not 400 x 200 native


def test_unknowable_and_too_far_scenes_fail_alone(tmp_path):
    src = tmp_path / "in"
    write_scene(
        src / "ok.tif",
        [(40, 20, 80, 60, 1)],
        width=400,
        height=200,
        transform=Affine(0.15, 0, 5e5, 0, -0.15, 4e6),
    )
    write_scene(src / "far.tif", [], width=400, height=200, transform=Affine(0.01, 0, 5e5, 0, -0.01, 4e6))
    job = DetectJob(
        source=str(src),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=64, overlap_px=16),
        resolution=ResolutionConfig(model_gsd_m=0.3),
        progress=False,
    )
    record, messages = _run(job)
    assert record.counts() == {"done": 1, "exists": 0, "failed": 1, "skipped": 0}
    failed = [m for m in messages if "far.tif" in m]
    assert (
        len(failed) == 1
        and "0.01 m is 30.0x the model's 0.3 m" in failed[0]
        and "--max-gsd-factor" in failed[0]
    )
    assert len(gpd.read_parquet(tmp_path / "out")) == 1


# -- issue 26: a small scene's tile is clamped to it ---------------------------------------------------------


def _small_scene_rows(tmp_path: Path, name: str, tiling: TilingConfig):
    src = tmp_path / name / "in"
    write_scene(src / "small.tif", [(10, 10, 40, 30, 0), (250, 150, 300, 200, 2)], width=300, height=200)
    write_scene(src / "one.tif", [(0, 0, 1, 1, 1)], width=1, height=1)
    submitted = []
    job = DetectJob(
        source=str(src),
        out_dir=str(tmp_path / name / "out"),
        model=StandinLoader(),
        tiling=tiling,
        progress=False,
    )
    executor = InlineExecutor(job, on_submit=lambda group: submitted.extend(group.tiles))
    record = DetectRun(job, executor, log=lambda m: None).run()
    assert record.counts()["done"] == 2
    rows = gpd.read_parquet(tmp_path / name / "out")
    rows["scene"] = [Path(uri).name for uri in rows["scene"]]
    return rows.drop(columns=["run_id"]).sort_values(["scene", "xmin_px"]).reset_index(drop=True), submitted


def test_a_small_scene_costs_a_clamped_tile_with_the_same_detections(tmp_path):
    clamped, tiles = _small_scene_rows(tmp_path, "clamped", TilingConfig(tile_size_px=1024, overlap_px=128))
    # the 1024 px tile of today's plan: rounding up to a multiple of 1024 is one full tile
    full, full_tiles = _small_scene_rows(
        tmp_path, "full", TilingConfig(tile_size_px=1024, size_multiple_px=1024)
    )
    assert sorted((t.width_px, t.height_px) for t in tiles) == [(32, 32), (320, 224)]
    assert {(t.width_px, t.height_px) for t in full_tiles} == {(1024, 1024)}
    assert len(clamped) == 3
    assert clamped.equals(full)


def test_clamped_and_full_tiles_never_share_a_model_call():
    # the Ray executor hands an actor groups of several scenes at once: np.stack needs one shape per batch
    from pipeline.executor import TileStatus
    from pipeline.ray_stages import TileDetector, TileRow

    small = tile_scene("small.tif", 300, 200, TilingConfig(tile_size_px=64, overlap_px=0))
    big = tile_scene("big.tif", 64, 64, TilingConfig(tile_size_px=64, overlap_px=0))
    rows = [
        TileRow(tile, TileStatus.OK, np.zeros((3, tile.height_px, tile.width_px), np.uint8))
        for tile in [small[0], big[0], small[1]]
    ]
    assert {r.pixels.shape for r in rows} == {(3, 64, 64)} and len(small) == 20
    tiny = tile_scene("tiny.tif", 20, 10, TilingConfig(tile_size_px=64, overlap_px=0))[0]
    rows.append(TileRow(tiny, TileStatus.OK, np.zeros((3, 32, 32), np.uint8)))
    detector = TileDetector(StandinLoader(), "fp32", 1, False, 4)
    out = detector.detect(rows)
    assert [(uri, index, status) for uri, index, status, _, _ in out] == [
        ("small.tif", 0, "ok"),
        ("big.tif", 0, "ok"),
        ("small.tif", 1, "ok"),
        ("tiny.tif", 0, "ok"),
    ]
