"""The area of interest (pipeline.aoi): loading any CRS / WKT, tiles left out, detections dropped, scenes skipped."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from pipeline.aoi import AoiError, load_aoi
from pipeline.job import DetectJob
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

TILING = TilingConfig(tile_size_px=128, overlap_px=32)
# scene: 300 x 300 px of 10 m from (500000, 4000000) in UTM 33N; tiles start at 0, 96, 192 px (3 x 3 = 9)
LEFT = [(10, 10, 30, 30, 0), (20, 200, 40, 220, 1)]  # x < 100 px
RIGHT = [(250, 20, 270, 40, 2), (240, 250, 260, 270, 0)]  # x > 230 px


def _utm_box(col0: float, col1: float, row0: float = 0, row1: float = 300) -> shapely.Polygon:
    return shapely.box(500000 + 10 * col0, 4000000 - 10 * row1, 500000 + 10 * col1, 4000000 - 10 * row0)


def _gpkg(path: Path, geoms: list[object], crs: str | None) -> Path:
    gpd.GeoDataFrame({"name": [f"g{i}" for i in range(len(geoms))]}, geometry=geoms, crs=crs).to_file(path)
    return path


def _run(src: Path, out: Path, aoi_spec: str, submitted: list[int] | None = None):
    job = DetectJob(
        source=str(src),
        out_dir=str(out),
        model=StandinLoader(),
        tiling=TILING,
        progress=False,
        aoi=load_aoi(aoi_spec),
    )
    seen = submitted if submitted is not None else []
    executor = InlineExecutor(job, on_submit=lambda g: seen.extend(t.index for t in g.tiles))
    return DetectRun(job, executor, log=lambda m: None).run()


def test_only_tiles_meeting_the_aoi_are_read_and_detections_outside_it_dropped(tmp_path):
    write_scene(tmp_path / "in" / "a.tif", LEFT + RIGHT, width=300, height=300)
    # a multipolygon in UTM: two strips over the left 100 px (the AOI in the file's own CRS)
    aoi = _gpkg(
        tmp_path / "area.gpkg", [shapely.MultiPolygon([_utm_box(0, 50), _utm_box(50, 100)])], "EPSG:32633"
    )
    submitted: list[int] = []
    record = _run(tmp_path / "in", tmp_path / "out", str(aoi), submitted)
    assert record.counts()["done"] == 1
    # columns of tiles at 0 and 96 px meet x < 100 px; the column at 192 px does not
    assert sorted(submitted) == [0, 1, 3, 4, 6, 7]
    rows = gpd.read_parquet(tmp_path / "out")
    assert len(rows) == len(LEFT) and rows["xmax_px"].max() < 100
    rep = read_report(tmp_path / "out")
    (line,) = rep["scenes"]
    assert line["num_tiles"] == 6 and line["num_tiles_outside_aoi"] == 3
    assert rep["num_tiles_saved_by_aoi"] == 3


def test_a_scene_outside_the_aoi_is_skipped_with_the_reason_and_the_other_done(tmp_path):
    write_scene(tmp_path / "in" / "a.tif", LEFT, width=300, height=300)
    from rasterio.transform import Affine

    far = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4000000.0)
    write_scene(tmp_path / "in" / "b.tif", LEFT, width=300, height=300, transform=far)
    to_lonlat = Transformer.from_crs("EPSG:32633", "OGC:CRS84", always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in _utm_box(0, 300).exterior.coords]
    wkt = shapely.Polygon(ring).wkt  # lon/lat: OGC:CRS84 by default
    record = _run(tmp_path / "in", tmp_path / "out", wkt)
    assert record.counts() == {"done": 1, "exists": 0, "failed": 0, "skipped": 1}
    lines = {Path(s["uri"]).name: s for s in read_report(tmp_path / "out")["scenes"]}
    assert (
        "outside the area of interest" in lines["b.tif"]["error"]
        and lines["b.tif"]["num_tiles_outside_aoi"] == 9
    )
    assert lines["a.tif"]["num_tiles"] == 9


def test_wkt_with_an_srid_is_in_that_crs():
    aoi = load_aoi(f"SRID=32633;{_utm_box(0, 100).wkt}")
    lon, lat = aoi.geometry.centroid.coords[0]
    assert 14.9 < lon < 15.1 and 36 < lat < 36.2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _gpkg(p / "empty.gpkg", [], "EPSG:4326"), "empty"),
        (lambda p: _gpkg(p / "nocrs.gpkg", [_utm_box(0, 10)], None), "has no CRS"),
        (
            lambda p: _gpkg(
                p / "bowtie.gpkg", [shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])], "EPSG:4326"
            ),
            "not valid",
        ),
        (lambda p: _gpkg(p / "points.gpkg", [shapely.Point(15, 45)], "EPSG:4326"), "needs polygons"),
        (lambda p: "POLYGON EMPTY", "empty"),
        (lambda p: "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))", "not valid"),
        (lambda p: str(p / "nothing-here.gpkg"), "no such file"),
    ],
)
def test_a_bad_aoi_is_one_line_naming_it(tmp_path, make, message):
    spec = make(tmp_path)
    with pytest.raises(AoiError, match=message) as err:
        load_aoi(str(spec))
    assert "\n" not in str(err.value) and str(err.value).startswith("--aoi ")
