"""Filter values never become SQL (issue 13): the exact repros, each of which misbehaved before.

``pipeline.query`` used to paste each value into the view's SQL text with
``str.replace("?", literal, 1)``, so a value holding ``?`` turned the next value
into raw SQL.  Values are now DuckDB constants of the relational API.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from pyproj import CRS

from jobs.query import query_command, quicklook_command
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.query import QueryError, read_detections
from pipeline.reading import ReadConfig, open_scene
from tests.conftest import write_scene
from tests.unit.pipeline.test_query import write_detections

UTM33 = CRS.from_epsg(32633)


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "out"
    write_detections(out, "/data/a.tif")
    return out


def test_question_mark_in_a_label_does_not_make_the_next_label_sql(dataset):
    # before: `label IN ('nosuch'') OR true --', ?)` -> every row
    assert len(read_detections(dataset, labels=["nosuch?", ") OR true --"])) == 0
    assert len(read_detections(dataset)) == 3


def test_a_label_cannot_read_a_file(dataset, tmp_path):
    # before: a yes/no probe over read_text() read a file character by character
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    probe = f") OR (SELECT content FROM read_text($${secret}$$)) = $$s$$ --"
    assert len(read_detections(dataset, labels=["x?", probe])) == 0


def test_cli_label_cannot_write_a_file(dataset, tmp_path):
    # before: the COPY ran and wrote the file
    target = tmp_path / "x.csv"
    result = CliRunner().invoke(
        query_command,
        [str(dataset), "--label", "x?", "--label", f"); COPY (SELECT 1 AS a) TO $${target}$$; --"],
    )
    assert not target.exists()
    assert result.exit_code == 0, result.output
    assert "0 detection(s)" in result.output


@pytest.mark.parametrize("name", ["what?.tif", "it's; a.tif", "50%_off.tif", 'quo"te.tif'])
def test_scene_names_with_sql_characters(tmp_path, name):
    out = tmp_path / "out"
    write_detections(out, f"/data/{name}")
    write_detections(out, "/data/other.tif")
    assert set(read_detections(out, scenes=[name])["scene"]) == {f"/data/{name}"}
    result = CliRunner().invoke(query_command, [str(out), "--scene", name])
    assert result.exit_code == 0, result.output
    assert "3 detection(s)" in result.output


def test_like_wildcards_in_a_scene_name_match_literally(tmp_path):
    out = tmp_path / "out"
    write_detections(out, "/data/a.tif")
    # before: `scene LIKE '%/_.tif'`, where `_` matches any character
    assert len(read_detections(out, scenes=["_.tif"])) == 0
    assert len(read_detections(out, scenes=["%.tif"])) == 0


def test_quicklook_scene_with_a_question_mark(tmp_path):
    raster = write_scene(tmp_path / "what?.tif", [(8, 8, 16, 16, 0)])
    out = tmp_path / "out"
    scene = open_scene(str(raster), ReadConfig())
    merged = MergedBoxes(np.array([[8.0, 8, 16, 16]]), np.array([0.9], np.float32), np.array([0]))
    write_scene_detections(out, scene, merged, class_names=("car",), out_crs=UTM33, model_id="m", run_id="r")
    png = tmp_path / "q.png"
    result = CliRunner().invoke(quicklook_command, [str(out), "--scene", "what?.tif", "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert png.exists() and "(1 detections)" in result.output


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bbox": (-math.inf, 0.0, 1.0, 1.0)},
        {"bbox": (0.0, 0.0, 1.0, math.nan)},
        {"min_score": math.nan},
        {"min_score": math.inf},
    ],
)
def test_non_finite_numbers_are_refused(dataset, kwargs):
    with pytest.raises(QueryError, match="finite"):
        read_detections(dataset, **kwargs)


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--bbox", "-inf", "0", "1", "1"], "--bbox"),
        (["--bbox", "0", "0", "1", "nan"], "--bbox"),
        (["--min-score", "nan"], "--min-score"),
    ],
)
def test_cli_non_finite_numbers_are_usage_errors(dataset, args, hint):
    result = CliRunner().invoke(query_command, [str(dataset), *args])
    assert result.exit_code == 2, result.output
    assert hint in result.output and "finite" in result.output
    assert "Traceback" not in result.output


def test_summary_is_not_injectable(dataset):
    result = CliRunner().invoke(
        query_command, [str(dataset), "--summary", "--label", "car?", "--label", ") OR true --"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_detections"] == 0
