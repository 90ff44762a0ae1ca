import json

import numpy as np
import pytest
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.query import QueryError, read_detections, summary
from pipeline.types import SceneInfo

_register_optional()


def write_detections(out_dir, scene_uri):
    """Three detections of a 100 x 100 px scene at 1 m in UTM 33N: car 0.9, tree 0.4, car 0.7."""
    sc = SceneInfo(
        scene_uri,
        100,
        100,
        3,
        "uint8",
        CRS.from_epsg(32633).to_wkt(),
        (1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0),
    )
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [90, 90, 95, 95]], float)
    m = MergedBoxes(boxes, np.array([0.9, 0.4, 0.7], np.float32), np.array([0, 1, 0]))
    return write_scene_detections(
        out_dir, sc, m, class_names=("car", "tree"), out_crs=CRS.from_epsg(32633), model_id="m", run_id="r"
    )


@pytest.fixture
def dataset(tmp_path):
    write_detections(tmp_path, "/data/a.tif")
    return tmp_path


def test_filters(dataset):
    assert len(read_detections(dataset)) == 3
    assert sorted(read_detections(dataset, labels=["car"])["score"]) == pytest.approx([0.7, 0.9])
    assert list(read_detections(dataset, min_score=0.8)["score"]) == pytest.approx([0.9])
    # bbox (CRS units): pixel box (50..60) -> x 500050..500060, y 4999940..4999950
    got = read_detections(dataset, bbox=(500049, 4999941, 500051, 4999949))
    assert list(got["xmin_px"]) == [50.0]
    assert got.crs == CRS.from_epsg(32633)
    assert len(read_detections(dataset, scenes=["a.tif"])) == 3
    assert len(read_detections(dataset, scenes=["other.tif"])) == 0


def test_read_detections_decodes_every_geometry(dataset):
    # the WKB column decoded in one vectorised call: the same polygons geopandas reads from the file
    import geopandas as gpd

    got = read_detections(dataset).sort_values("xmin_px").reset_index(drop=True)
    expect = gpd.read_parquet(dataset).sort_values("xmin_px").reset_index(drop=True)
    assert got.geometry.geom_equals(expect.geometry).all() and len(got) == 3
    assert read_detections(dataset, labels=["boat"]).geometry.tolist() == []


def test_bbox_in_other_crs(dataset):
    # lon/lat box around the first detection (UTM 33N easting 500000 is 15E)
    lon, lat = (
        __import__("pyproj").Transformer.from_crs(32633, 4326, always_xy=True).transform(500005, 4999995)
    )
    got = read_detections(
        dataset, bbox=(lon - 1e-5, lat - 1e-5, lon + 1e-5, lat + 1e-5), bbox_crs="EPSG:4326"
    )
    assert list(got["xmin_px"]) == [0.0]


def test_summary(dataset):
    s = summary(dataset)
    assert s["num_detections"] == 3 and s["crs"] == "EPSG:32633"
    assert {(r["label"], r["count"]) for r in s["per_scene_label"]} == {("car", 2), ("tree", 1)}
    assert s["box_area_sum"] == pytest.approx(100 + 100 + 25)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sql", "SELECT nope FROM detections"], "nope"),
        (["--bbox", "5", "0", "1", "1"], "malformed bbox"),
        (["--bbox", "0", "0", "1", "1", "--bbox-crs", "EPSG:99999999"], "not a CRS"),
        (["--bbox", "0", "0", "1", "1", "--bbox-crs", "ESRI:0"], "bbox-crs"),
    ],
)
def test_bad_queries_one_line_nonzero(dataset, args, message):
    result = CliRunner().invoke(cli, ["query", str(dataset), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0


def test_path_without_detections(tmp_path):
    result = CliRunner().invoke(cli, ["query", str(tmp_path)])
    assert result.exit_code == 2 and "holds no detections" in result.output
    with pytest.raises(QueryError):
        read_detections(tmp_path / "missing")


def test_cli_formats(dataset, tmp_path):
    r = CliRunner().invoke(cli, ["query", str(dataset), "--format", "geojson"])
    assert r.exit_code == 0 and len(json.loads(r.output)["features"]) == 3
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(cli, ["query", str(dataset), "--label", "car", "--format", "gpkg", "-o", str(out)])
    assert r.exit_code == 0
    import geopandas as gpd

    assert len(gpd.read_file(out)) == 2
    r = CliRunner().invoke(cli, ["query", str(dataset), "--summary"])
    assert json.loads(r.output)["num_detections"] == 3


def test_a_folder_with_glob_characters_is_read_as_named(tmp_path):
    write_detections(tmp_path / "out[1]", "/data/a.tif")
    write_detections(tmp_path / "out1", "/data/b.tif")
    # before: `out[1]` was expanded as a glob (it matches `out1`), and DuckDB globbed each file path
    assert set(read_detections(tmp_path / "out[1]")["scene"]) == {"/data/a.tif"}
    assert set(read_detections(tmp_path / "out1")["scene"]) == {"/data/b.tif"}
    assert len(read_detections(str(tmp_path / "out*" / "*.parquet"))) == 6


def test_parquet_output_is_written_by_the_pipeline_writer(dataset, tmp_path):
    import pyarrow.parquet as pq

    from pipeline.geoparquet import SCHEMA, read_geo_metadata

    out = tmp_path / "cars.parquet"
    r = CliRunner().invoke(
        cli, ["query", str(dataset), "--label", "car", "--format", "parquet", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    # the contract's schema and "geo" metadata, as `detect` writes them (not geopandas' own)
    assert pq.read_schema(out).remove_metadata() == SCHEMA
    geo = read_geo_metadata(out)
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == [
        "bbox",
        "xmin",
    ]
    got = read_detections(out)
    assert sorted(got["score"]) == pytest.approx([0.7, 0.9]) and got.crs == CRS.from_epsg(32633)


@pytest.mark.parametrize("fmt", ["geojson", "csv", "gpkg", "parquet"])
def test_output_in_a_missing_folder_is_one_line(dataset, tmp_path, fmt):
    target = tmp_path / "missing" / f"x.{fmt}"
    r = CliRunner().invoke(cli, ["query", str(dataset), "--format", fmt, "-o", str(target)])
    # before: a FileNotFoundError traceback (geojson), or the folder was created (parquet)
    assert r.exit_code == 2, r.output
    assert "does not exist" in r.output and r.output.strip().count("\n") == 0
    assert not target.parent.exists()


def test_file_formats_need_an_output(dataset):
    r = CliRunner().invoke(cli, ["query", str(dataset), "--format", "parquet"])
    assert r.exit_code == 2 and "pass -o FILE" in r.output


def test_where_is_one_expression(dataset, tmp_path):
    assert list(read_detections(dataset, where="score > 0.8")["score"]) == pytest.approx([0.9])
    target = tmp_path / "x.csv"
    with pytest.raises(QueryError):
        read_detections(dataset, where=f"true; COPY (SELECT 1 AS a) TO '{target}'")
    assert not target.exists()
