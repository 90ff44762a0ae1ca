"""``aerialdet review``: help, one-line user errors, and a real start that prints its URL once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

from click.testing import CliRunner

from jobs.cli import _register_optional, cli
from tests.review_helpers import make_review_case

_register_optional()


def test_help_has_examples():
    result = CliRunner().invoke(cli, ["review", "--help"])
    assert result.exit_code == 0 and "$ aerialdet review" in result.output and "--labels" in result.output


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    for word in words:
        assert word in lines[0]


def test_no_openlayers_says_make_install(tmp_path, monkeypatch):
    monkeypatch.setenv("AERIALDET_WEB_VENDOR", str(tmp_path / "nothing"))
    result = CliRunner().invoke(cli, ["review", str(tmp_path), "--source", str(tmp_path)])
    _one_line_error(result, "OpenLayers", "make install")


def test_missing_detections_is_one_line(tmp_path):
    case = make_review_case(tmp_path)
    result = CliRunner().invoke(cli, ["review", str(tmp_path / "nope"), "--source", str(tmp_path / "scenes")])
    _one_line_error(result, "nope")
    assert case.det.exists()


def test_a_labels_file_of_another_kind_is_refused(tmp_path):
    case = make_review_case(tmp_path)
    other = next(case.det.glob("*.parquet"))
    args = ["review", str(case.det), "--source", str(tmp_path / "scenes"), "--labels", str(other)]
    result = CliRunner().invoke(cli, args)
    _one_line_error(result, "not a labels file aerialdet review wrote")


def test_starts_on_loopback_and_prints_the_url_once(tmp_path):
    case = make_review_case(tmp_path)
    labels = tmp_path / "fixes.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "from jobs.cli import main; main()"
    args = [
        "review",
        str(case.det),
        "--source",
        str(tmp_path / "scenes"),
        "--labels",
        str(labels),
        "--reviewer",
        "ann",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert "7 detection(s) on 2 scene(s)" in first and str(labels) in first
        url = second.split()[1]
        assert url.startswith("http://127.0.0.1:") and len(url.rstrip("/").rsplit("/", 1)[1]) >= 32
        config = json.load(urllib.request.urlopen(url + "api/config", timeout=30))
        assert config["reviewer"] == "ann" and labels.exists()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert url not in out and url not in err  # printed once, never logged again


def test_compare_queues_the_cells_where_two_outputs_disagree(tmp_path):
    from tests.review_helpers import open_case_session

    case = make_review_case(tmp_path)
    other = make_review_case(tmp_path, det_name="det2", first_only=True, model_id="model-2").det
    session = open_case_session(case, tmp_path / "labels.parquet", other=other)
    items = session.queue(100)["items"]
    kinds = [i["kind"] for i in items]
    assert kinds[:7] == ["detection"] * 7 and "cell" in kinds[7:]
    # at 0.5: the first output keeps 5 boxes, the second 2 of them: 3 boxes disagree
    assert sum(int(i["reason"].split()[0]) for i in items if i["kind"] == "cell") == 3


def test_viewport_filters_by_label_and_score(tmp_path):
    from tests.review_helpers import open_case_session

    case = make_review_case(tmp_path)
    session = open_case_session(case, tmp_path / "labels.parquet")
    everywhere = [-2e7, -2e7, 2e7, 2e7]
    assert len(session.viewport(everywhere, [], None)["items"]) == 7
    buildings = session.viewport(everywhere, ["building"], None)["items"]
    assert len(buildings) == 2 and {i["label"] for i in buildings} == {"building"}
    sure = session.viewport(everywhere, [], 0.6)["items"]
    assert sorted(round(i["score"], 2) for i in sure) == [0.62, 0.8, 0.9]
    scene0 = session.config()["scenes"][0]["bbox"]
    assert {i["scene"] for i in session.viewport(scene0, [], None)["items"]} == {case.scenes[0]}


def test_an_s3_output_needs_labels(tmp_path):
    result = CliRunner().invoke(cli, ["review", "s3://bucket/det", "--source", str(tmp_path)])
    _one_line_error(result, "pass --labels")
