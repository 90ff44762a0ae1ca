"""2,000 tiny scenes through `aerialdet detect` on a real local Ray cluster (issue 26).

Every scene is done exactly once (one line in the record, one output file), and the
summary ``_run.json`` is rewritten every ``summary_every_s`` seconds and at the end,
not once per scene: the old report was rewritten whole after every scene (2,000
writes of a growing file here, quadratic in the bucket).

The scenes are all nodata (their one tile is read, found empty and skipped, no
model call): with the machine shared by several test runs, 2,000 inferred scenes
took far longer than the 3-4 minutes this test may take; the driver's per-scene
work (claim, header, read, finish, output file, manifest entry, record line) is
all still done.

Writes are counted twice, independently: a spy on the driver's real
``LocalStore.write_text`` (it counts, then writes as before) and the record's own
``num_summary_writes`` in the final file; the two must agree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from pipeline.report import REPORT_FILE, read_report
from pipeline.storage import LocalStore
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

# slow (`make test-all`): 2,000 scenes through a real cluster took longer than the rest of an integration
# file on this 2-core machine; `make test` keeps the 300-scene in-process run (unit/pipeline/test_run.py)
# and the 3-driver x 300-scene cluster run (test_concurrent_runs.py)
pytestmark = [pytest.mark.integration, pytest.mark.slow]
# AERIALDET_MANY_SCENES=40 checks the test itself quickly; the figure that matters is 2,000
NUM_SCENES = int(os.environ.get("AERIALDET_MANY_SCENES", "2000"))


def test_two_thousand_scenes_each_done_once_and_summary_written_rarely(ray_cluster, tmp_path, monkeypatch):
    first = write_scene(tmp_path / "in" / "s0000.tif", [], width=64, height=64, nodata=0, fill=0)
    for i in range(1, NUM_SCENES):
        os.link(first, tmp_path / "in" / f"s{i:04d}.tif")
    summary_writes: list[float] = []
    real_write_text = LocalStore.write_text

    def counting_write_text(self: LocalStore, name: str, text: str) -> None:
        if name == REPORT_FILE:
            summary_writes.append(time.time())
        real_write_text(self, name, text)

    monkeypatch.setattr(LocalStore, "write_text", counting_write_text)
    out = tmp_path / "out"
    args = [
        *standin_detect_args(str(tmp_path / "in"), str(out)),
        "--tile-size-px",
        "64",
        "--overlap-px",
        "16",
    ]
    started = time.time()
    result = CliRunner().invoke(cli, ["detect", *args, "--cpus-per-actor", "0.5"])
    elapsed_s = time.time() - started
    assert result.exit_code == 0, result.output
    assert f"{NUM_SCENES} scene(s) done, 0 already done, 0 failed" in result.output

    report = read_report(out)
    uris = [line["uri"] for line in report["scenes"]]
    assert len(uris) == NUM_SCENES and len(set(uris)) == NUM_SCENES  # one line per scene, none twice
    assert {line["status"] for line in report["scenes"]} == {"done"}
    assert {line["num_tiles_skipped_nodata"] for line in report["scenes"]} == {1}
    assert report["counts"]["done"] == NUM_SCENES and report["num_pending"] == 0
    outputs = {line["output"] for line in report["scenes"]}
    assert len(outputs) == NUM_SCENES and all(Path(p).is_file() for p in outputs)  # one file each
    assert len(list(out.glob("*.parquet"))) == NUM_SCENES

    # the summary: written by the driver every 30 s and once at the end
    assert report["num_summary_writes"] == len(summary_writes), (report["num_summary_writes"], summary_writes)
    assert 1 <= len(summary_writes) <= elapsed_s / 30 + 2, (len(summary_writes), elapsed_s)
    if NUM_SCENES >= 2000:  # far fewer than one a scene: at most 40 (a 20-minute run)
        assert len(summary_writes) <= NUM_SCENES // 50, (len(summary_writes), elapsed_s)
