"""A run lists its source once (pipeline.listing_once): the footprint pass walks it, the lifecycle replays it.

Listings are counted with a wrapper around the real entry points
(``sources.iter_listing`` for a folder, ``stac_source.iter_items`` for a STAC
document, as ``pipeline.stac_source`` calls them), so the real listing runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest

import pipeline.stac_source as stac_source
from pipeline.job import DetectJob
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.stac_items import item, item_collection, write_json
from tests.unit.pipeline.inline_executor import InlineExecutor

TILING = TilingConfig(tile_size_px=128, overlap_px=32)
OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1)]


class Counted:
    """A wrapper around a real listing function: how often it was called, and how many entries it gave."""

    def __init__(self, real: Callable[..., Iterator[Any]]) -> None:
        self.real, self.calls, self.pulled = real, 0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.calls += 1
        for entry in self.real(*args, **kwargs):
            self.pulled += 1
            yield entry


def _run(source: Path, out: Path, **kw: Any) -> tuple[Any, InlineExecutor]:
    job = DetectJob(
        source=str(source), out_dir=str(out), model=StandinLoader(), tiling=TILING, progress=False, **kw
    )
    executor = InlineExecutor(job)
    return DetectRun(job, executor, log=lambda m: None).run(), executor


def _folder(root: Path, num: int) -> Path:
    for i in range(num):
        write_scene(root / f"s{i}.tif", OBJECTS, width=150, height=150)
    return root


@pytest.mark.parametrize("cross_scene_merge", [True, False])
def test_a_folder_is_listed_once_per_run(tmp_path, monkeypatch, cross_scene_merge):
    counted = Counted(stac_source.iter_listing)
    monkeypatch.setattr(stac_source, "iter_listing", counted)
    src = _folder(tmp_path / "in", 3)
    (src / "notes.txt").write_text("not a raster")
    record, _ = _run(src, tmp_path / "out", cross_scene_merge=cross_scene_merge)
    assert counted.calls == 1
    assert record.counts() == {"done": 3, "exists": 0, "failed": 0, "skipped": 1}
    assert len(gpd.read_parquet(tmp_path / "out")) == 3 * len(OBJECTS)


def test_without_the_footprint_pass_the_lifecycle_still_lists_lazily(tmp_path, monkeypatch):
    counted = Counted(stac_source.iter_listing)
    monkeypatch.setattr(stac_source, "iter_listing", counted)
    src = _folder(tmp_path / "in", 6)
    pulled_at_first_open: list[int] = []
    job = DetectJob(
        source=str(src),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TILING,
        progress=False,
        cross_scene_merge=False,
        window_scenes=2,
        header_batch=1,
    )
    executor = InlineExecutor(job)
    real_open = executor.open_headers

    def open_headers(uris: Any) -> Any:
        pulled_at_first_open.append(counted.pulled)
        return real_open(uris)

    executor.open_headers = open_headers  # type: ignore[method-assign]
    record = DetectRun(job, executor, log=lambda m: None).run()
    assert record.counts()["done"] == 6 and counted.calls == 1
    assert pulled_at_first_open[0] <= 2  # the first header opens before the listing is read through


def test_a_stac_document_is_read_once_and_each_item_keeps_its_own_line(tmp_path, monkeypatch):
    counted = Counted(stac_source.iter_items)
    monkeypatch.setattr(stac_source, "iter_items", counted)
    scenes = [write_scene(tmp_path / f"s{i}.tif", OBJECTS, width=150, height=150) for i in range(2)]
    docs = [
        item("a", scenes[0], str(scenes[0])),
        item("a-again", scenes[0], str(scenes[0])),  # one href, two items: the second is skipped
        item("b", scenes[1], str(scenes[1])),
    ]
    source = write_json(tmp_path / "items.json", item_collection(docs))
    record, _ = _run(source, tmp_path / "out")
    assert counted.calls == 1
    assert record.counts() == {"done": 2, "exists": 0, "failed": 0, "skipped": 1}
    by_item = {s["item_id"]: s for s in read_report(tmp_path / "out")["scenes"]}
    assert by_item["a"]["status"] == "done" and by_item["b"]["status"] == "done"
    assert by_item["a-again"]["status"] == "skipped" and "scene of item a" in by_item["a-again"]["error"]
    assert (
        tmp_path / "out" / "_mosaic.000000.parquet"
    ).exists()  # the footprint pass ran, on the one listing
