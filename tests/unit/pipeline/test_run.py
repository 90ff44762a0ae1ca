"""The detect lifecycle (pipeline.run) driven in-process by the inline executor: no Ray."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path

import geopandas as gpd
import pytest

from pipeline.claims import Claim, claim_name, read_claim
from pipeline.dataset import DATASET_FILE
from pipeline.errors import PipelineError
from pipeline.job import DetectJob
from pipeline.merging import MergeConfig
from pipeline.output import scene_output_name
from pipeline.report import REPORT_FILE, read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.storage import LocalStore
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

TILING = TilingConfig(tile_size_px=128, overlap_px=32)
OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1), (200, 190, 215, 215, 2)]
KEY = ["scene", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "label"]


def _job(src: Path, out: Path, **kw: object) -> DetectJob:
    return DetectJob(
        source=str(src), out_dir=str(out), model=StandinLoader(), tiling=TILING, progress=False, **kw
    )


def _bucket(root: Path, num: int = 3, size: int = 300) -> Path:
    for i in range(num):
        write_scene(root / f"s{i:03d}.tif", OBJECTS, width=size, height=size)
    return root


def _run(job: DetectJob, **executor_kw: object):
    messages: list[str] = []
    record = DetectRun(job, InlineExecutor(job, **executor_kw), log=messages.append).run()
    return record, messages


def test_every_listed_uri_gets_one_line_and_a_rerun_finds_them_done(tmp_path):
    src = _bucket(tmp_path / "in")
    (src / "notes.txt").write_text("not a raster")
    (src / "bad.tif").write_bytes(b"not a tiff")
    record, messages = _run(_job(src, tmp_path / "out"))
    assert record.counts() == {"done": 3, "exists": 0, "failed": 1, "skipped": 1}
    assert any("bad.tif" in m for m in messages)
    rep = read_report(tmp_path / "out")
    assert rep["counts"] == record.counts() and rep["num_listed"] == 5 and rep["num_pending"] == 0
    assert sorted(Path(s["uri"]).name for s in rep["scenes"]) == [
        "bad.tif",
        "notes.txt",
        "s000.tif",
        "s001.tif",
        "s002.tif",
    ]
    assert len(gpd.read_parquet(tmp_path / "out")) == 3 * len(OBJECTS)
    again, _ = _run(_job(src, tmp_path / "out"))
    assert again.counts() == {"done": 0, "exists": 3, "failed": 1, "skipped": 1}


def test_claims_are_released_and_a_live_claim_of_another_run_is_left_alone(tmp_path):
    src = _bucket(tmp_path / "in")
    out = LocalStore(tmp_path / "out")
    held_name = scene_output_name(str((src / "s001.tif").resolve()))
    other = Claim("other-run", socket.gethostname(), os.getpid(), time.time() + 300)  # alive: this process
    out.write_bytes_once(claim_name(held_name), json.dumps(dataclasses.asdict(other)).encode())
    record, _ = _run(_job(src, tmp_path / "out"))
    assert record.counts() == {"done": 2, "exists": 0, "failed": 0, "skipped": 1}
    (line,) = [s for s in read_report(out)["scenes"] if s["status"] == "skipped"]
    assert "other-run" in line["error"] and "re-run this command later" in line["error"]
    assert read_claim(out, held_name).run_id == "other-run"  # theirs, untouched
    for i in (0, 2):  # ours: released (expired now)
        claim = read_claim(out, scene_output_name(str((src / f"s00{i}.tif").resolve())))
        assert claim.run_id == record.run_id and claim.expires_at == 0.0


def test_the_window_bounds_the_scenes_claimed_at_once(tmp_path):
    src = _bucket(tmp_path / "in", num=7, size=200)
    store = LocalStore(tmp_path / "out")
    held_at_submit: list[int] = []

    def count_live_claims(group: object) -> None:
        live = [
            n
            for n in store.list_names("_claim.")
            if read_claim(store, n[len("_claim.") : -len(".json")]).expires_at > time.time()
        ]
        held_at_submit.append(len(live))

    job = _job(src, tmp_path / "out", window_scenes=2, header_batch=2)
    record, _ = _run(job, on_submit=count_live_claims)
    assert record.counts()["done"] == 7
    assert held_at_submit and max(held_at_submit) <= 2  # never the whole bucket


def test_a_broken_stream_fails_the_scenes_in_flight_and_still_writes_the_record(tmp_path):
    src = _bucket(tmp_path / "in", num=4)
    job = _job(src, tmp_path / "out", window_scenes=2, header_batch=2)
    record, messages = _run(
        job, break_after=3, break_with=PipelineError("the model actor could not start: boom")
    )
    rep = read_report(tmp_path / "out")
    assert rep["finished_at"] is not None and rep["counts"]["failed"] >= 1
    failed = [s for s in rep["scenes"] if s["status"] == "failed"]
    assert all("run aborted" in s["error"] and "boom" in s["error"] for s in failed)
    assert any("run aborted" in m for m in messages)
    store = LocalStore(tmp_path / "out")
    for name in store.list_names("_claim."):  # nothing stays claimed
        assert read_claim(store, name[len("_claim.") : -len(".json")]).expires_at == 0.0


def test_a_stopped_run_records_it_releases_its_scenes_and_re_raises(tmp_path):
    src = _bucket(tmp_path / "in", num=3)
    job = _job(src, tmp_path / "out", window_scenes=1, header_batch=1)
    with pytest.raises(KeyboardInterrupt):
        _run(job, break_after=2, break_with=KeyboardInterrupt())
    rep = read_report(tmp_path / "out")
    assert rep["stopped"] and "KeyboardInterrupt" in rep["stopped"] and rep["finished_at"] is not None
    assert any(s["status"] == "failed" and "run stopped" in s["error"] for s in rep["scenes"])


def test_a_scene_failing_on_a_tile_reads_no_more_of_its_tiles(tmp_path):
    src = tmp_path / "in"
    good = write_scene(src / "a.tif", OBJECTS, width=600, height=600)  # 36 tiles of 128/96
    bad = src / "b.tif"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])  # header intact, strips cut
    submitted: list[str] = []
    job = _job(src, tmp_path / "out", header_batch=2)
    record, _ = _run(job, on_submit=lambda g: submitted.append(Path(g.scene_uri).name), max_groups=1)
    assert record.counts()["failed"] == 1 and record.counts()["done"] == 1
    groups_of_a = submitted.count("a.tif")
    assert 0 < submitted.count("b.tif") < groups_of_a  # stopped early, not read to the end


def test_rows_do_not_depend_on_the_order_tiles_come_back(tmp_path):
    # each object ends 2 px past a tile's right edge (x 96k+100..96k+130; tiles 96k..96k+128): the tile to
    # its left sees it cut at 28 of 30 px, the next tile whole; equal scores (the stand-in gives every blob
    # 0.9), IoU 0.93: plain IoU-NMS keeps whichever box comes first, so the merge must not take arrival order
    src = tmp_path / "in"
    objects = [(96 * k + 100, 96 * j + 40, 96 * k + 130, 96 * j + 60, 0) for k in range(5) for j in range(5)]
    write_scene(src / "a.tif", objects, width=600, height=600)
    frames = []
    for seed in (1, 2, 3):
        out = tmp_path / f"out{seed}"
        _run(_job(src, out, merge=MergeConfig(strategy="iou")), shuffle_seed=seed, max_groups=6)
        gdf = gpd.read_parquet(out).sort_values(KEY).reset_index(drop=True)
        frames.append(gdf[KEY + ["score"]])
    assert len(frames[0]) == len(objects)
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])


def test_many_scenes_write_the_summary_rarely_and_every_line_once(tmp_path):
    src = tmp_path / "in"
    first = write_scene(src / "s0000.tif", OBJECTS[:1], width=64, height=64)
    for i in range(1, 300):
        os.link(first, src / f"s{i:04d}.tif")
    started = time.time()
    record, _ = _run(_job(src, tmp_path / "out"), max_groups=8)
    elapsed_s = time.time() - started
    assert record.counts()["done"] == 300
    # not once per scene: a segment per 256 lines or per flush_every_s, a summary per summary_every_s
    assert record.num_segments <= 2 + 300 // record.lines_per_segment + elapsed_s / record.flush_every_s
    assert record.num_summary_writes <= 2 + elapsed_s / record.summary_every_s
    assert record.num_segments + record.num_summary_writes < 300 / 10
    rep = read_report(tmp_path / "out")
    assert len(rep["scenes"]) == 300 and len({s["uri"] for s in rep["scenes"]}) == 300


def test_the_output_crs_is_fixed_by_the_first_run_and_kept(tmp_path):
    src = tmp_path / "in"
    write_scene(src / "a.tif", OBJECTS, width=200, height=200, crs="EPSG:32633")
    out = tmp_path / "out"
    _run(_job(src, out))
    assert json.loads((out / DATASET_FILE).read_text())["crs"] == "EPSG:32633"
    # a second scene in another zone: the output stays in the first run's CRS
    write_scene(src / "b.tif", OBJECTS, width=200, height=200, crs="EPSG:32634")
    record, _ = _run(_job(src, out))
    assert record.counts()["done"] == 1 and read_report(out)["crs"] == "EPSG:32633"
    assert set(gpd.read_parquet(out).crs.to_epsg() for _ in range(1)) == {32633}
    with pytest.raises(PipelineError, match="--to-crs EPSG:4326 differs"):
        DetectRun(_job(src, out, to_crs="EPSG:4326", overwrite=True), InlineExecutor(_job(src, out))).run()


def test_a_scene_whose_crs_cannot_reach_the_output_fails_before_any_tile(tmp_path):
    src = tmp_path / "in"
    write_scene(src / "a.tif", OBJECTS, width=200, height=200, crs="EPSG:32633")
    local = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    write_scene(src / "b.tif", OBJECTS, width=200, height=200, crs=local)
    submitted: list[str] = []
    record, messages = _run(
        _job(src, tmp_path / "out", header_batch=1), on_submit=lambda g: submitted.append(g.scene_uri)
    )
    assert record.counts() == {"done": 1, "exists": 0, "failed": 1, "skipped": 0}
    assert not any(uri.endswith("b.tif") for uri in submitted)
    assert any("b.tif" in m and "cannot be transformed" in m for m in messages)


def test_report_file_is_the_summary(tmp_path):
    src = _bucket(tmp_path / "in", num=1)
    _run(_job(src, tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert "scenes" not in summary and summary["scene_lines"].startswith("_run.")
    assert summary["counts"]["done"] == 1 and summary["config"]["model_actors"]


def test_a_source_that_does_not_exist_or_is_empty_is_the_callers_error(tmp_path):
    from pipeline.errors import SourceError

    (tmp_path / "empty").mkdir()
    for src, message in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "holds no files")):
        job = _job(src, tmp_path / "out")
        with pytest.raises(SourceError, match=message):
            DetectRun(job, InlineExecutor(job))
    assert not (tmp_path / "out" / "_run.json").exists()  # nothing written, nothing claimed
