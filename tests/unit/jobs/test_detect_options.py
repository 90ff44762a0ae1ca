"""detect's command line -> DetectJob (parsed by click, no Ray)."""

import os

from jobs.detect import _build_job, detect_command
from pipeline.standin import StandinLoader


def _job(tmp_path, out, *args):
    ctx = detect_command.make_context(
        "detect", [str(tmp_path), "--model", "standin:blobs", "--out", out, *args]
    )
    params = dict(ctx.params)
    source, out_dir = params.pop("source"), params.pop("out_dir")
    params.pop("model")
    return _build_job(source, out_dir, StandinLoader(), params)


def test_relative_out_becomes_absolute_for_the_workers(tmp_path, monkeypatch):
    # merge + write run in Ray workers, whose working directory need not be the driver's
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path, "det/out")
    assert os.path.isabs(job.out_dir) and job.out_dir == str(tmp_path / "det" / "out")


def test_s3_out_is_left_as_given(tmp_path):
    assert _job(tmp_path, "s3://bucket/det").out_dir == "s3://bucket/det"
