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


@pytest.fixture
def dataset(tmp_path):
    sc = SceneInfo(
        "/data/a.tif",
        100,
        100,
        3,
        "uint8",
        CRS.from_epsg(32633).to_wkt(),
        (1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0),
    )
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [90, 90, 95, 95]], float)
    m = MergedBoxes(boxes, np.array([0.9, 0.4, 0.7], np.float32), np.array([0, 1, 0]))
    write_scene_detections(
        tmp_path, sc, m, class_names=("car", "tree"), out_crs=CRS.from_epsg(32633), model_id="m", run_id="r"
    )
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
    assert result.exit_code == 1 and "holds no detections" in result.output
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
