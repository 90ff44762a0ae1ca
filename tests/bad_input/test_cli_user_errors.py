"""Every subcommand answers a user's mistake with one line and exit 2, never a traceback.

For each command: a missing path, a bad option value and a corrupt input.
``tests/unit/jobs/test_cli.py`` holds the rest (help, a good run); a case
lives in one of the two files, not both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import _register_optional, cli

_register_optional()


INPUTS = {
    "bad.parquet": b"\x00garbage\xff",
    "bad.xml": b"<annotation><object><name>tree</name><bndbox><xmin>1",
    "plain.txt": b"text",
}


def _cases(tmp_path):
    missing = str(tmp_path / "no" / "such")
    bad_parquet, bad_xml, a_file = (str(tmp_path / name) for name in INPUTS)
    detect = ["detect", str(tmp_path), "--model", "standin:blobs", "--out", str(tmp_path / "o")]
    return {
        # detect
        "detect missing source": (
            ["detect", missing, "--model", "standin:blobs", "--out", str(tmp_path / "o")],
            "does not exist",
        ),
        "detect missing model": (
            ["detect", str(tmp_path), "--model", missing, "--out", str(tmp_path / "o")],
            ("--model", "not a directory"),
        ),
        "detect bad overlap": (
            [*detect, "--overlap-px", "-3"],
            "--overlap-px",
        ),
        "detect unknown driver": (
            [*detect, "--drivers", "GTif"],
            "GTif: not a GDAL raster driver",
        ),
        "detect huge tile": (
            [*detect, "--tile-size-px", "100000"],
            "--tile-size-px",
        ),
        "detect tile not a number": (
            ["detect", "x", "--model", "m", "--out", "o", "--tile-size-px", "nope"],
            "--tile-size-px",
        ),
        "detect bad crs": ([*detect, "--assume-crs", "EPSG:nope"], "--assume-crs"),
        "detect out under a file": (
            ["detect", str(tmp_path), "--model", "standin:blobs", "--out", a_file + "/out"],
            "--out",
        ),
        # train
        "train missing labels": (["train", missing, "--out", str(tmp_path / "r")], "such"),
        "train bad bands": (["train", bad_xml, "--out", str(tmp_path / "r"), "--bands", "a,b"], "--bands"),
        "train zero band": (["train", bad_xml, "--out", str(tmp_path / "r"), "--bands", "0"], "--bands"),
        "train corrupt labels": (["train", bad_xml, "--out", str(tmp_path / "r")], "bad.xml"),
        # synth
        "synth under a file": (
            ["synth", a_file + "/scenes", "--scenes", "1", "--size-px", "64"],
            "plain.txt",
        ),
        "synth bad size": (["synth", str(tmp_path / "s"), "--size-px", "ten"], "--size-px"),
        "synth geographic crs": (["synth", str(tmp_path / "s"), "--crs", "EPSG:4326"], "projected"),
        # evaluate
        "evaluate missing detections": (["evaluate", missing, bad_parquet], "such"),
        "evaluate corrupt ground truth": (["evaluate", bad_parquet, bad_parquet], "bad.parquet"),
        "evaluate bad iou": (["evaluate", bad_parquet, bad_parquet, "--iou", "2"], "--iou"),
        # query
        "query missing": (["query", missing], "such"),
        "query corrupt": (["query", bad_parquet], "bad.parquet"),
        "query nan score": (["query", bad_parquet, "--min-score", "nan"], "--min-score"),
        "query inf bbox": (["query", bad_parquet, "--bbox", "0", "0", "inf", "1"], "--bbox"),
        # quicklook
        "quicklook missing": (
            ["quicklook", missing, "--scene", "a.tif", "-o", str(tmp_path / "q.png")],
            "such",
        ),
        "quicklook corrupt": (
            ["quicklook", bad_parquet, "--scene", "a.tif", "-o", str(tmp_path / "q.png")],
            "bad.parquet",
        ),
        "quicklook bad size": (
            ["quicklook", bad_parquet, "--scene", "a.tif", "-o", "x.png", "--max-size-px", "1"],
            "--max-size-px",
        ),
    }


@pytest.mark.parametrize("case", sorted(_cases(Path("/collect"))))
def test_user_error_is_one_line_exit_two(tmp_path, case):
    for name, data in INPUTS.items():
        (tmp_path / name).write_bytes(data)
    args, fragment = _cases(tmp_path)[case]
    result = CliRunner().invoke(cli, args)
    output = result.output
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{output}"
    assert "Traceback" not in output and result.exc_info[0] is SystemExit, output
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part in output, f"{case}: {part!r} not in\n{output}"
    error_lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, output
