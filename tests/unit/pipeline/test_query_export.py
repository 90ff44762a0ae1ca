"""query's exports read by real GIS clients: Debian's ogrinfo (gdal-bin) and the GeoParquet validator.

The dataset is a real detect output (``pipeline.run`` with the in-process
executor and the blob stand-in, no Ray) over two scenes: ``objects.tif``
with three painted objects and ``empty.tif`` with none (a file of 0 rows).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.job import DetectJob
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

_register_optional()

OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1), (200, 190, 215, 215, 2)]
OGRINFO = shutil.which("ogrinfo") or "/usr/bin/ogrinfo"  # Debian's gdal-bin (GDAL 3.6.2 in bookworm)
UTM = CRS.from_epsg(32633)


@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detect run's output folder: ``objects.tif`` (3 detections) and ``empty.tif`` (0)."""
    root = tmp_path_factory.mktemp("exports")
    write_scene(root / "in" / "objects.tif", OBJECTS, width=300, height=300)
    write_scene(root / "in" / "empty.tif", [], width=300, height=300)
    job = DetectJob(
        source=str(root / "in"),
        out_dir=str(root / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    record = DetectRun(job, InlineExecutor(job), log=lambda line: None).run()
    assert record.counts()["done"] == 2
    return root / "out"


def _export(out: Path, scene: str, fmt: str, target: Path) -> None:
    r = CliRunner().invoke(cli, ["query", str(out), "--scene", scene, "--format", fmt, "-o", str(target)])
    assert r.exit_code == 0, r.output


def _ogrinfo(path: Path, *options: str) -> tuple[str, str]:
    """``ogrinfo -ro -so -al`` of ``path``: (stdout, stderr); fails when it cannot open the file."""
    assert Path(OGRINFO).exists(), "ogrinfo not found: install Debian's gdal-bin"
    done = subprocess.run(
        [OGRINFO, "-ro", "-so", "-al", *options, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, done.stderr


def _extent(info: str) -> tuple[float, ...] | None:
    found = re.search(r"Extent: \(([-\d.]+), ([-\d.]+)\) - \(([-\d.]+), ([-\d.]+)\)", info)
    return tuple(float(v) for v in found.groups()) if found else None


def _crs_id(info: str) -> str:
    """The CRS identifier ogrinfo ends the layer's WKT with (``EPSG:32633``, ``OGC:CRS84``)."""
    ids = re.findall(r'^    ID\["(\w+)",(\w+)\]\]', info, flags=re.M)
    return ":".join(ids[-1]) if ids else ""


@pytest.mark.parametrize("scene", ["objects.tif", "empty.tif"])
@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "geojson"])
def test_ogrinfo_opens_every_export_with_its_count_crs_and_extent(detected, tmp_path, fmt, scene):
    # before: fgb was no format; an empty gpkg layer was "Unknown (any)"; every gpkg warned in
    # GDAL 3.6 ("GeoPackage ... v1.4.0 ... may only be partially supported")
    rows = gpd.read_parquet(detected)
    rows = rows[rows["scene"].str.endswith("/" + scene)]
    target = tmp_path / f"x.{fmt}"
    _export(detected, scene, fmt, target)
    info, err = _ogrinfo(target)
    assert f"Feature Count: {len(rows)}\n" in info
    assert "Warning" not in err and "ERROR" not in err, err
    if fmt == "geojson":
        # no `crs` member: GDAL reads RFC 7946's WGS 84 as EPSG:4326 with lon/lat data axes
        assert _crs_id(info) == "EPSG:4326" and "Data axis to CRS axis mapping: 2,1" in info
        expected = rows.to_crs("OGC:CRS84").total_bounds
        tolerance = 1e-6  # ogrinfo prints 6 decimals
    else:
        assert _crs_id(info) == "EPSG:32633" and "Geometry: Polygon\n" in info  # declared, 0 rows too
        expected = rows.total_bounds
        tolerance = 1e-6
    if len(rows):
        xmin, xmax, ymin, ymax = np.asarray(expected)[[0, 2, 1, 3]]
        got = _extent(info)
        assert got is not None and np.allclose(got, (xmin, ymin, xmax, ymax), atol=tolerance), (got, expected)
    else:
        assert _extent(info) is None
    assert "bbox: String" not in info  # the dict printout is gone


def test_flatgeobuf_has_its_spatial_index_and_ogrinfo_filters_by_it(detected, tmp_path):
    import pyogrio

    target = tmp_path / "x.fgb"
    _export(detected, "objects.tif", "fgb", target)
    # pyogrio reports GDAL's OLCFastSpatialFilter, true only when the file has its packed R-tree
    assert pyogrio.read_info(target)["capabilities"]["fast_spatial_filter"] is True
    first = gpd.read_parquet(detected).sort_values("xmin_px").iloc[0].geometry.bounds
    info, _ = _ogrinfo(target, "-spat", *map(str, first))
    assert "Feature Count: 1\n" in info


def test_csv_writes_the_bbox_as_four_number_columns(detected, tmp_path):
    target = tmp_path / "x.csv"
    _export(detected, "objects.tif", "csv", target)
    # before: one `bbox` column holding "{'xmin': 500100.0, ...}", which no client can parse
    assert "{" not in target.read_text()
    table = pd.read_csv(target)
    columns = ["bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax"]
    assert "bbox" not in table.columns and all(table[c].dtype == np.float64 for c in columns)
    bounds = shapely.from_wkt(table["geometry"]).tolist()
    assert np.array_equal(table[columns].to_numpy(), shapely.bounds(bounds))
    # GDAL's CSV driver reads the numbers as numbers, the WKT as the geometry and its CRS from x.prj
    options = ["AUTODETECT_TYPE=YES", "GEOM_POSSIBLE_NAMES=geometry", "KEEP_GEOM_COLUMNS=NO"]
    info, _ = _ogrinfo(target, *[arg for option in options for arg in ("-oo", option)])
    assert "Feature Count: 3\n" in info and "bbox_xmin: Real" in info
    assert target.with_suffix(".prj").is_file() and _crs_id(info) == "EPSG:32633"
    xmin, ymin, xmax, ymax = gpd.read_parquet(detected).total_bounds  # the empty scene adds no row
    assert np.allclose(_extent(info), (xmin, ymin, xmax, ymax))


def test_sql_results_as_csv_flatten_the_bbox_and_write_wkt(detected, tmp_path):
    target = tmp_path / "sql.csv"
    sql = "SELECT * FROM detections ORDER BY xmin_px"
    r = CliRunner().invoke(cli, ["query", str(detected), "--sql", sql, "--format", "csv", "-o", str(target)])
    assert r.exit_code == 0, r.output
    # before: the bbox as "{'xmin': ...}" and the geometry as WKB bytes printed "b'\\x01\\x03...'"
    table = pd.read_csv(target)
    columns = ["bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax"]
    assert list(table.columns[1:5]) == columns and len(table) == 3
    geometry = shapely.from_wkt(table["geometry"])
    assert np.array_equal(table[columns].to_numpy(), shapely.bounds(geometry))
    expected = gpd.read_parquet(detected).sort_values("xmin_px")
    assert shapely.equals(geometry, expected.geometry.to_numpy()).all()


def test_geojson_follows_rfc_7946(detected, tmp_path):
    target = tmp_path / "x.geojson"
    _export(detected, "objects.tif", "geojson", target)
    doc = json.loads(target.read_text())
    # before: a `crs` member, clockwise outer rings and `properties.bbox` in the scene's metres
    assert "crs" not in doc
    assert len(doc["features"]) == 3
    for feature in doc["features"]:
        assert "bbox" not in feature["properties"]
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.exterior.is_ccw
        lon_min, lat_min, lon_max, lat_max = feature["bbox"]  # RFC 7946 section 5: in lon/lat
        assert (lon_min, lat_min, lon_max, lat_max) == pytest.approx(polygon.bounds)
        assert 14.9 < lon_min < lon_max < 15.1 and 36.0 < lat_min < lat_max < 36.2  # UTM 33N east of 15 E
    assert doc["bbox"] == pytest.approx(shapely.bounds(shapely.from_geojson(target.read_text())).tolist())
    assert json.loads(CliRunner().invoke(cli, ["query", str(detected), "--format", "geojson"]).output) == doc


def test_geojson_orients_holes_clockwise_in_any_crs():
    from pipeline.query_export import geojson_text

    outer_cw = [(500000, 4000000), (500000, 4000100), (500100, 4000100), (500100, 4000000)]
    hole_ccw = [(500010, 4000010), (500050, 4000010), (500050, 4000050), (500010, 4000050)]
    frame = gpd.GeoDataFrame({"score": [0.5]}, geometry=[shapely.Polygon(outer_cw, [hole_ccw])], crs=UTM)
    polygon = shapely.geometry.shape(json.loads(geojson_text(frame))["features"][0]["geometry"])
    assert polygon.exterior.is_ccw and not polygon.interiors[0].is_ccw


def test_geoparquet_validator_passes_on_detect_outputs_and_their_parquet_query(detected, tmp_path):
    import geoparquet_validator as gpv
    import pyarrow.parquet as pq

    files = sorted(f for f in detected.glob("*.parquet") if not f.name.startswith("_"))  # _mosaic: footprints
    assert sorted(pq.ParquetFile(f).metadata.num_rows for f in files) == [0, 3]
    none = tmp_path / "none.parquet"
    r = CliRunner().invoke(
        cli, ["query", str(detected), "--label", "absent", "--format", "parquet", "-o", str(none)]
    )
    assert r.exit_code == 0, r.output
    for path in [*files, none]:
        report = gpv.check(str(path))
        assert gpv.failed(report) == [], (path.name, report["outcomes"])
    # the command's own entry point too, over the whole folder (it returns 1 on any failed test)
    assert gpv.main(["check", f"{detected}/"]) == 0


def test_the_validator_objects_to_an_empty_row_group_which_the_writer_never_writes(detected, tmp_path):
    # what the issue found: a 0-row file written with one row group has no bbox statistics
    import geoparquet_validator as gpv
    import pyarrow.parquet as pq

    empty = next(f for f in detected.glob("[!_]*.parquet") if pq.ParquetFile(f).metadata.num_rows == 0)
    assert pq.ParquetFile(empty).num_row_groups == 0
    table = pq.read_table(empty)
    with pq.ParquetWriter(tmp_path / "one_empty_group.parquet", table.schema) as writer:
        writer.write_table(table)
    assert gpv.failed(gpv.check(str(tmp_path / "one_empty_group.parquet"))) == [
        "/conf/distribution/geospatial-statistics"
    ]


def test_geojson_of_a_local_crs_is_one_line_naming_the_formats_that_keep_it(tmp_path):
    from pipeline.merging import MergedBoxes
    from pipeline.output import write_scene_detections
    from pipeline.types import SceneInfo

    local = CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    scene = SceneInfo("/d/site.tif", 100, 100, 3, "uint8", local.to_wkt(), (1.0, 0.0, 0.0, 0.0, -1.0, 100.0))
    boxes = MergedBoxes(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.9], np.float32), np.array([0]))
    write_scene_detections(
        tmp_path / "out", scene, boxes, class_names=("car",), out_crs=local, model_id="m", run_id="r"
    )
    target = tmp_path / "site.geojson"
    r = CliRunner().invoke(cli, ["query", str(tmp_path / "out"), "--format", "geojson", "-o", str(target)])
    # before: a pyproj ProjError traceback
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0, r.output
    assert "site grid" in r.output and "--format gpkg, fgb or csv" in r.output and not target.exists()
    _export(tmp_path / "out", "site.tif", "fgb", tmp_path / "site.fgb")  # the formats that keep the CRS
    assert "Feature Count: 1\n" in _ogrinfo(tmp_path / "site.fgb")[0]


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
def test_binary_exports_need_an_output(detected, fmt):
    r = CliRunner().invoke(cli, ["query", str(detected), "--format", fmt])
    assert r.exit_code == 2 and "pass -o FILE" in r.output


def test_vector_files_declare_polygon_only_for_polygon_rows(tmp_path):
    # rows of another writer's GeoParquet (points) are not declared Polygon
    from pipeline.query_export import write_vector_file

    points = gpd.GeoDataFrame({"score": [0.5]}, geometry=[shapely.Point(500000, 4000000)], crs=UTM)
    for fmt in ("gpkg", "fgb"):
        info, _ = _ogrinfo(write_vector_file(points, tmp_path / f"p.{fmt}", fmt))
        assert "Geometry: Point\n" in info and "Feature Count: 1\n" in info


def test_the_validator_passes_many_row_groups_and_measures_their_pruning(tmp_path):
    # each row group carries bbox statistics the validator's distribution tests read
    import geoparquet_validator as gpv
    import pyarrow.parquet as pq

    from pipeline.geoparquet import SCHEMA, write_geoparquet
    from pipeline.merging import MergedBoxes
    from pipeline.output import write_scene_detections
    from pipeline.types import SceneInfo

    scene = SceneInfo(
        "/d/grid.tif", 400, 400, 3, "uint8", UTM.to_wkt(), (1.0, 0.0, 500000.0, 0.0, -1.0, 4000000.0)
    )
    corners = np.array([(x, y) for x in range(0, 400, 40) for y in range(0, 400, 40)], float)  # 100 boxes
    boxes = MergedBoxes(np.hstack([corners, corners + 8]), np.full(100, 0.8, np.float32), np.zeros(100, int))
    one = write_scene_detections(
        tmp_path / "out", scene, boxes, class_names=("car",), out_crs=UTM, model_id="m", run_id="r"
    )
    many = write_geoparquet(
        tmp_path / "many.parquet", pq.read_table(one).cast(SCHEMA), UTM, row_group_size=10
    )
    assert pq.ParquetFile(many).num_row_groups == 10
    report = gpv.check(str(many))
    assert gpv.failed(report) == [], report["outcomes"]
    outcome = {o["id"]: o["status"] for o in report["outcomes"]}
    assert outcome["/conf/distribution/spatial-order"] == "pass"
