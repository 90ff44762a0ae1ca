"""OUT/_report.html: written at the end of a detect run (inline executor, no Ray) and by `aerialdet report`."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import run_report_data
from pipeline.detection import ModelInfo
from pipeline.job import DetectJob
from pipeline.query import run_sql
from pipeline.run import DetectRun
from pipeline.run_report_data import gather
from pipeline.run_report_html import REPORT_HTML, write_report_html
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_SCENE = "<img src=x onerror=alert(1)>.tif"  # a file name cannot hold the "/" of </script>
OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1), (200, 190, 215, 215, 1), (40, 200, 60, 220, 2)]
LOADER = StandinLoader(
    ModelInfo(model_id="standin:blobs", class_names=("red", HOSTILE_LABEL, "blue"), bands=(1, 2, 3))
)


class Tables(HTMLParser):
    """The page's tables as lists of rows of cell texts (unescaped, as a browser shows them)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    """Tables by their first header cell."""
    parser = Tables()
    parser.feed(html)
    return {t[0][0]: t for t in parser.tables if t and t[0]}


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    """A detect run over two scenes (one with a hostile name) and two that fail; its output."""
    tmp_path = tmp_path_factory.mktemp("run")
    src = tmp_path / "in"
    write_scene(src / "s000.tif", OBJECTS, width=256, height=256)
    write_scene(src / HOSTILE_SCENE, OBJECTS[:2], width=256, height=256)
    (src / "bad.tif").write_bytes(b"not a tiff")
    (src / "worse.tif").write_bytes(b"<b>not a tiff either</b>")
    out = tmp_path / "out"
    job = DetectJob(
        source=str(src),
        out_dir=str(out),
        model=LOADER,
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    messages: list[str] = []
    record = DetectRun(job, InlineExecutor(job), log=messages.append).run()
    assert record.counts() == {"done": 2, "exists": 0, "failed": 2, "skipped": 0}
    assert not [m for m in messages if "HTML report" in m]
    return out


def test_a_run_writes_its_report_with_duckdbs_counts_per_class_and_scene(run_out):
    html = (run_out / REPORT_HTML).read_text()
    assert (run_out / REPORT_HTML).stat().st_mode == (run_out / "_run.json").stat().st_mode  # as readable
    found = tables(html)
    per_class = run_sql(run_out, "SELECT label, count(*) AS n FROM detections GROUP BY ALL ORDER BY ALL")
    expected = [[lab, str(n)] for lab, n in zip(*per_class.to_pydict().values())]
    assert found["class"][1:] == [*expected, ["all", str(sum(int(n) for _, n in expected))]]
    assert HOSTILE_LABEL in dict(expected)  # the hostile class has detections to show
    per_scene = run_sql(
        run_out, "SELECT scene, label, count(*) AS n FROM detections GROUP BY ALL ORDER BY ALL"
    )
    labels = found["scene"][0][1:-1]
    cells = {(row[0], lab): int(n) for row in found["scene"][1:] for lab, n in zip(labels, row[1:-1])}
    assert {k: v for k, v in cells.items() if v} == {
        (s, lab): n for s, lab, n in zip(*per_scene.to_pydict().values())
    }
    assert found["status"][1:] == [["done", "2"], ["exists", "0"], ["failed", "2"], ["skipped", "0"]]


def test_figures_add_up_to_the_detections(run_out):
    data = gather(str(run_out))
    total = data.num_detections
    assert total == len(OBJECTS) + 2
    assert {k: sum(v) for k, v in data.histograms.items()} == data.class_counts
    assert sum(n for _, _, n in data.density) == total
    assert sorted(Path(s).name for s, _ in data.footprints) == sorted(["s000.tif", HOSTILE_SCENE])


def test_failed_scenes_are_listed_with_their_reasons_and_texts_are_escaped(run_out):
    html = (run_out / REPORT_HTML).read_text()
    assert "2 scene(s) failed" in html
    for name in ("bad.tif", "worse.tif"):
        assert re.search(rf"{name}</code>: <span class=\"err\">[^<]*{name}", html), name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.tif" in html
    assert "<script" not in html.lower() and "<img" not in html.lower()  # no markup from the data, no script
    assert "<b>" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched


def test_long_lists_are_cut_and_say_how_many_more(run_out, monkeypatch, tmp_path):
    monkeypatch.setattr(run_report_data, "MAX_FAILED", 1)
    monkeypatch.setattr(run_report_data, "MAX_SCENES", 1)
    monkeypatch.setattr(run_report_data, "MAX_FOOTPRINTS", 1)
    write_report_html(str(run_out), tmp_path / "cut.html")
    html = (tmp_path / "cut.html").read_text()
    assert "and 1 more failed scene(s)" in html and "and 1 more scene(s) with detections" in html
    assert "1 more scene file(s) not outlined" in html
    assert len(tables(html)["scene"]) == 2  # the header and one scene


@pytest.mark.parametrize("to_file", [False, True])
def test_the_report_is_replaced_atomically(run_out, monkeypatch, tmp_path, to_file):
    target = tmp_path / "r.html" if to_file else run_out / REPORT_HTML
    write_report_html(str(run_out), target if to_file else None)
    before = target.read_text()

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(Exception, match="No space left"):
        write_report_html(str(run_out), target if to_file else None)
    assert target.read_text() == before  # the old page, whole
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_report_that_cannot_be_written_is_one_warning_and_the_run_still_succeeds(tmp_path, monkeypatch):
    import pipeline.run_report_html as page

    write_scene(tmp_path / "in" / "s.tif", OBJECTS, width=128, height=128)
    monkeypatch.setattr(page, "gather", lambda out: (_ for _ in ()).throw(OSError("disk gone")))
    job = DetectJob(source=str(tmp_path / "in"), out_dir=str(tmp_path / "out"), model=LOADER, progress=False)
    messages: list[str] = []
    record = DetectRun(job, InlineExecutor(job), log=messages.append).run()
    assert record.counts()["done"] == 1 and (tmp_path / "out" / "_run.json").is_file()
    (warning,) = [m for m in messages if "HTML report" in m]
    assert "disk gone" in warning and "aerialdet report" in warning


def test_report_command_rewrites_the_page_and_refuses_bad_paths_in_one_line(run_out, tmp_path):
    from jobs.cli import _register_optional, cli

    _register_optional()
    (run_out / REPORT_HTML).unlink()
    result = CliRunner().invoke(cli, ["report", str(run_out)])
    assert result.exit_code == 0, result.output
    assert (run_out / REPORT_HTML).is_file() and str(run_out / REPORT_HTML) in result.output
    result = CliRunner().invoke(cli, ["report", str(run_out), "-o", str(tmp_path / "copy.html")])
    assert result.exit_code == 0 and "failed" in (tmp_path / "copy.html").read_text()
    for args, message in (
        ([str(tmp_path / "nowhere")], "no such output folder"),
        ([str(run_out), "-o", str(tmp_path / "no" / "r.html")], "does not exist"),
        ([str(run_out.parent / "in")], "no run record"),
    ):
        result = CliRunner().invoke(cli, ["report", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, args
        assert len(result.output.strip().splitlines()) == 1


def test_report_help_has_examples():
    from jobs.cli import _register_optional, cli

    _register_optional()
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0 and "$ aerialdet report out/" in result.output


def test_an_s3_output_gets_its_report_in_the_bucket(tmp_path, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="runs")
    write_scene(tmp_path / "in" / "s.tif", OBJECTS, width=128, height=128)
    (tmp_path / "in" / "bad.tif").write_bytes(b"not a tiff")
    job = DetectJob(source=str(tmp_path / "in"), out_dir="s3://runs/out", model=LOADER, progress=False)
    messages: list[str] = []
    DetectRun(job, InlineExecutor(job), log=messages.append).run()
    assert not [m for m in messages if "HTML report" in m]
    html = s3.get_object(Bucket="runs", Key=f"out/{REPORT_HTML}")["Body"].read().decode()
    expected = run_sql("s3://runs/out", "SELECT label, count(*) FROM detections GROUP BY ALL ORDER BY ALL")
    assert tables(html)["class"][1:-1] == [[lab, str(n)] for lab, n in zip(*expected.to_pydict().values())]
    assert "1 scene(s) failed" in html and "bad.tif" in html
    assert len(gather("s3://runs/out").footprints) == 1


def test_a_run_over_more_scenes_than_the_cap_leaves_the_page_to_the_command(tmp_path, monkeypatch):
    import pipeline.run_report_html as page

    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=128, height=128)
    write_scene(tmp_path / "in" / "b.tif", OBJECTS, width=128, height=128)
    monkeypatch.setattr(page, "REPORT_AFTER_RUN_MAX_SCENES", 1)
    job = DetectJob(source=str(tmp_path / "in"), out_dir=str(tmp_path / "out"), model=LOADER, progress=False)
    messages: list[str] = []
    DetectRun(job, InlineExecutor(job), log=messages.append).run()
    assert not (tmp_path / "out" / REPORT_HTML).exists()
    (note,) = [m for m in messages if "HTML report" in m]
    assert note.startswith("NOTE 2 scenes") and f"aerialdet report {tmp_path / 'out'}" in note
