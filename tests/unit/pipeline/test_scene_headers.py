"""One header function for the footprint pass (driver) and the header tasks (executor)."""

from __future__ import annotations

from pipeline.job import DetectJob
from pipeline.reading import ReadConfig
from pipeline.run import DetectRun
from pipeline.scene_headers import open_header, open_headers
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from pipeline.types import SceneInfo
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

TILING = TilingConfig(tile_size_px=64, overlap_px=16, max_scene_px=100 * 100)


def test_a_scene_header_error_reads_the_same_on_the_driver_and_in_the_header_task(tmp_path):
    src = tmp_path / "in"
    small = str(write_scene(src / "small.tif", [], width=64, height=64))
    big = str(write_scene(src / "big.tif", [], width=128, height=128))  # over max_scene_px
    broken = src / "broken.tif"
    broken.write_bytes(b"not a tiff")
    uris = [small, big, str(broken)]
    job = DetectJob(
        source=str(src), out_dir=str(tmp_path / "out"), model=StandinLoader(), tiling=TILING, progress=False
    )
    executor = InlineExecutor(job)
    on_driver = DetectRun(job, executor, log=lambda m: None)._footprint_headers(uris)
    assert executor.header_calls == []  # local files: opened on the driver, not by the executor
    in_tasks = open_headers(uris, job.read, job.tiling)
    assert isinstance(on_driver[0], SceneInfo) and on_driver[0] == in_tasks[0]
    assert on_driver[1:] == in_tasks[1:]
    assert "big.tif" in str(on_driver[1]) and "max-scene-px" in str(on_driver[1])
    assert "broken.tif" in str(on_driver[2])


def test_open_header_never_raises_for_a_scene_of_its_own(tmp_path):
    missing = str(tmp_path / "gone.tif")
    line = open_header(missing, ReadConfig(), TILING)
    assert isinstance(line, str) and line.startswith(missing) and "\n" not in line
