"""The run record: scene lines appended once in segments, totals kept, the summary rewritten rarely."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.report import REPORT_FILE, RunRecord, SceneReport, read_report
from pipeline.storage import LocalStore


def _record(num_listed: int, store: LocalStore | None = None, **kw: object) -> RunRecord:
    record = RunRecord(run_id="r", source="in", output="out", model="m", store=store, **kw)
    record.num_listed = num_listed
    record.add(SceneReport("a.tif", "done", num_tiles=4, tiles_by_node={"n1": 3, "n2": 1}, actor_ids=["x"]))
    record.add(SceneReport("b.tif", "done", num_tiles=2, tiles_by_node={"n2": 2}, retries=1))
    record.add(SceneReport("c.tif", "exists"))
    record.add(SceneReport("d.txt", "skipped"))
    record.add(SceneReport("e.tif", "failed", error="e.tif: broken"))
    return record


def test_record_accounts_for_every_listed_uri():
    record = _record(num_listed=6)
    assert record.to_json()["num_pending"] == 1  # one scene still running: no line yet
    with pytest.raises(AssertionError, match="accounts for 5 of 6"):
        record.finish()
    record.add(SceneReport("f.tif", "failed", error="f.tif: run aborted"))
    record.finish()
    body = record.to_json()
    assert body["num_listed"] == 6 and body["num_pending"] == 0
    assert sum(body["counts"].values()) == body["num_listed"]


def test_a_stopped_run_may_finish_with_lines_missing():
    record = _record(num_listed=7)
    record.stopped = "run stopped (KeyboardInterrupt)"
    record.finish()  # no assertion: what was not reached is not listed as done
    assert record.to_json()["stopped"] == "run stopped (KeyboardInterrupt)"


def test_record_nodes_retries_and_actors(tmp_path):
    record = _record(num_listed=5, store=LocalStore(tmp_path / "out"))
    record.storage_retries = 3
    record.started_at, record.finished_at = 100.0, 102.0
    body = record.to_json()
    # done scenes only: n1 3 tiles (a), n2 1 (a) + 2 (b); over 2 s
    assert body["nodes"] == {
        "n1": {"num_tiles": 3, "num_scenes": 1, "tiles_per_s": 1.5},
        "n2": {"num_tiles": 3, "num_scenes": 2, "tiles_per_s": 1.5},
    }
    assert body["retries"] == {"storage": 3, "scenes": 1}
    record.close()
    line = next(s for s in read_report(tmp_path / "out")["scenes"] if s["uri"] == "a.tif")
    assert line["node_ids"] == ["n1", "n2"] and line["actor_ids"] == ["x"]


def test_record_written_through_the_store_and_read_back(tmp_path):
    record = _record(num_listed=5, store=LocalStore(tmp_path / "out"))
    path = record.close()
    assert path == tmp_path / "out" / REPORT_FILE
    assert json.loads(path.read_text())["counts"] == {"done": 2, "exists": 1, "failed": 1, "skipped": 1}
    rep = read_report(tmp_path / "out")
    assert rep["run_id"] == "r" and [s["uri"] for s in rep["scenes"]] == [
        "a.tif",
        "b.tif",
        "c.tif",
        "d.txt",
        "e.tif",
    ]
    assert sorted(os.listdir(tmp_path / "out")) == ["_run.json", "_run.r.000000000.jsonl"]


def test_lines_flush_in_segments_and_the_summary_waits(tmp_path):
    store = LocalStore(tmp_path / "out")
    record = RunRecord(run_id="r", source="in", output="out", model="m", store=store, lines_per_segment=10,
                       flush_every_s=3600, summary_every_s=3600)  # fmt: skip
    record.write_summary()
    for i in range(25):
        record.num_listed += 1
        record.add(SceneReport(f"{i:02d}.tif", "done", num_tiles=1))
    assert record.num_segments == 2 and record.num_summary_writes == 1  # lines 0-9 and 10-19 written
    record.finish()
    record.close()
    assert record.num_segments == 3
    names = sorted(n for n in os.listdir(tmp_path / "out") if n.endswith(".jsonl"))
    assert names == ["_run.r.000000000.jsonl", "_run.r.000000010.jsonl", "_run.r.000000020.jsonl"]
    assert len(read_report(store)["scenes"]) == 25


def test_a_line_needs_a_known_status():
    with pytest.raises(ValueError, match="'finished' is not a valid SceneStatus"):
        SceneReport("a.tif", "finished")
