"""The progress bar of a detect run: redrawn at most every REFRESH_S, its last state drawn at the end."""

from __future__ import annotations

import tqdm

from pipeline.job import DetectJob
from pipeline.run_progress import run_job
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor


def test_the_bar_is_not_redrawn_per_tile_and_ends_at_every_tile(tmp_path, monkeypatch):
    for i in range(2):
        write_scene(tmp_path / "in" / f"s{i}.tif", [(10, 10, 30, 30, 0)], width=256, height=256)
    job = DetectJob(
        source=str(tmp_path / "in"),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=64, overlap_px=16),
        progress=True,
    )
    redraws: list[int] = []
    closed: list[tuple[int, float]] = []
    refresh, close = tqdm.tqdm.refresh, tqdm.tqdm.close
    monkeypatch.setattr(
        tqdm.tqdm, "refresh", lambda bar, *a, **k: (redraws.append(bar.n), refresh(bar, *a, **k))
    )
    monkeypatch.setattr(tqdm.tqdm, "close", lambda bar: (closed.append((bar.n, bar.total)), close(bar)))
    record = run_job(job, InlineExecutor(job, max_groups=8), log=lambda m: None)
    tiles = record.to_json()["num_tiles"]
    assert tiles == 2 * 25 and record.counts()["done"] == 2
    assert len(redraws) < tiles // 4  # was one redraw per tile and per scene recorded
    assert closed[-1] == (tiles, tiles)  # the last state, drawn by close
