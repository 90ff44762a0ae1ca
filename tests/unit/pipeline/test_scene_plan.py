"""A scene's plan (pipeline.scene_plan): one region for the finish, what it owns in the mosaic within --aoi."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from pipeline.aoi import load_aoi
from pipeline.job import DetectJob
from pipeline.mosaic import owned_px
from pipeline.run import DetectRun
from pipeline.scene_plan import plan_scene
from pipeline.standin import StandinLoader
from pipeline.storage import LocalStore
from pipeline.tiling import TilingConfig
from tests.unit.pipeline.inline_executor import InlineExecutor
from tests.unit.pipeline.test_mosaic import GROUND, ORIGIN, _info, _matches, _mosaic, _record

TILING = TilingConfig(tile_size_px=64, overlap_px=20)
# the AOI over ground columns 152-460 px, all rows: painted columns 2, 3 and 4 (centres 228-449 px)
AOI_COLS = (152, 460)
AOI_WKT = (
    f"SRID=32633;POLYGON(({ORIGIN[0] + AOI_COLS[0]} {ORIGIN[1] - 400}, {ORIGIN[0] + AOI_COLS[1]} {ORIGIN[1] - 400}, "
    f"{ORIGIN[0] + AOI_COLS[1]} {ORIGIN[1]}, {ORIGIN[0] + AOI_COLS[0]} {ORIGIN[1]}, "
    f"{ORIGIN[0] + AOI_COLS[0]} {ORIGIN[1] - 400}))"
)


def _job(src: Path, out: Path, **kw: object) -> DetectJob:
    return DetectJob(
        source=str(src), out_dir=str(out), model=StandinLoader(), tiling=TILING, progress=False, **kw
    )


def test_the_finish_region_is_what_the_scene_owns_within_the_aoi(tmp_path):
    infos = [_info("a", 0, 0, 320, 400), _info("b", 200, 0, 260, 400)]
    footprints = _record(LocalStore(tmp_path / "out"), infos)
    job = _job(tmp_path, tmp_path / "out", aoi=load_aoi(AOI_WKT))
    plan = plan_scene(job, infos[0], None, footprints)
    owned = owned_px(footprints, infos[0])
    assert owned is not None  # b takes the east of a's overlap
    area_px = shapely.box(AOI_COLS[0], 0, 320 + 1, 400)  # a starts at ground column 0; clipped 1 px out
    expected = shapely.intersection(owned, area_px)
    assert shapely.symmetric_difference(plan.keep_px, expected).area < 1e-6
    assert plan.owned_px is owned or shapely.equals(
        plan.owned_px, owned
    )  # tiles are still filtered by ownership
    # without the mosaic the region is the AOI alone; without either, nothing is filtered
    alone = plan_scene(job, infos[0], None, None).keep_px
    assert shapely.symmetric_difference(alone, area_px).area < 1e-6
    assert plan_scene(_job(tmp_path, tmp_path / "o2"), infos[0], None, None).keep_px is None


def test_a_mosaic_within_an_aoi_reports_each_object_inside_once_and_none_outside(tmp_path):
    _mosaic(tmp_path / "in")
    job = _job(tmp_path / "in", tmp_path / "out", aoi=load_aoi(AOI_WKT))
    record = DetectRun(job, InlineExecutor(job), log=lambda m: None).run()
    assert record.counts()["failed"] == 0
    centres = [(x1 + x2) / 2 for x1, _, x2, _, _ in GROUND]
    expected = [1 if AOI_COLS[0] < c < AOI_COLS[1] else 0 for c in centres]
    assert sum(expected) == 12
    assert _matches(gpd.read_parquet(tmp_path / "out")) == expected
