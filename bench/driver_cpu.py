"""The driver's CPU a scene, without Ray: ``DetectRun`` in-process over N tiny scenes.

Each bucket is N hard links of one 64 x 64 px GeoTIFF (``bench.scale``'s).
The executor does what Ray's workers would (header tasks, reads, the model
actor, finish tasks) in this process, with their CPU time taken out of the
figure; what it does on the driver in production (unpacking the actors'
results into ``TileResult``s) stays in.  What is left is the lifecycle's own
cost: listing, claims, the footprint pass (local headers open on the driver
there, as in production), planning, the record, progress, writing each
scene's file and manifest entry.

CPU time (``time.process_time``: this process, every thread), since the
machine is shared.  ``--profile FILE`` writes a cProfile dump of the run.

    .venv/bin/python -m bench.driver_cpu --scenes 2000,10000
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from bench.scale import _bucket, _standin_job
from pipeline.executor import Finished, TileGroup, TileResult, TileStatus
from pipeline.finishing import FinishSettings, prepare_scene
from pipeline.job import DetectJob
from pipeline.ray_stages import TileDetector, open_headers, read_group, unpack_detections
from pipeline.run import DetectRun
from pipeline.types import SceneInfo, TileDetections


class WorkerSideExecutor:
    """In-process executor whose worker-side work is timed apart (``worker_cpu_s``)."""

    def __init__(self, job: DetectJob, max_groups: int = 8) -> None:
        self.job, self.max_groups = job, max_groups
        self.detector = TileDetector(job.model, job.detect.precision, 1, False, job.detect.batch_size)
        self.groups: deque[TileGroup] = deque()
        self.finishes: deque[tuple[SceneInfo, list[TileDetections], FinishSettings]] = deque()
        self.worker_cpu_s = 0.0

    def open_headers(self, uris: Sequence[str]) -> list[SceneInfo | str]:  # noqa: D102
        t0 = time.process_time()
        try:
            return open_headers(uris, self.job.read, self.job.tiling)
        finally:
            self.worker_cpu_s += time.process_time() - t0

    def has_room(self) -> bool:  # noqa: D102
        return len(self.groups) < self.max_groups

    def submit_tiles(self, group: TileGroup) -> None:  # noqa: D102
        self.groups.append(group)

    def submit_finish(self, scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> None:  # noqa: D102
        self.finishes.append((scene, tiles, settings))

    def wait(self, timeout_s: float) -> list[TileResult | Finished]:  # noqa: D102
        events: list[TileResult | Finished] = []
        while self.groups:
            group = self.groups.popleft()
            t0 = time.process_time()
            rows = self.detector.detect(read_group(group.tiles, self.job.read))
            self.worker_cpu_s += time.process_time() - t0
            by_index = {t.index: t for t in group.tiles}
            for uri, index, status, error, packed in rows:
                found = unpack_detections(by_index[index], packed) if status == "ok" else None
                events.append(TileResult(uri, index, TileStatus(status), error, found))
        while self.finishes:
            scene, tiles, settings = self.finishes.popleft()
            t0 = time.process_time()
            prepared = prepare_scene(scene, tiles, settings)
            self.worker_cpu_s += time.process_time() - t0
            events.append(Finished(scene.uri, prepared))
        return events

    def close(self) -> None:  # noqa: D102
        pass


def run_once(root: Path, num: int, profile: str | None = None) -> dict[str, float]:
    """One run over ``num`` scenes; the driver's CPU ms a scene (worker-side work taken out)."""
    src, out = _bucket(root, num), root / f"out-{num}"
    job = _standin_job(src, out)
    executor = WorkerSideExecutor(job)
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    record = DetectRun(job, executor, log=lambda m: None).run()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)  # type: ignore[arg-type]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert record.counts()["done"] == num, record.counts()
    driver = cpu - executor.worker_cpu_s
    shutil.rmtree(src)
    shutil.rmtree(out)
    return {
        "scenes": num,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 2),
        "worker_side_cpu_s": round(executor.worker_cpu_s, 2),
        "driver_cpu_ms_per_scene": round(1000 * driver / num, 2),
    }


def main() -> None:
    """Print one JSON line per bucket size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="2000,10000", help="Comma-separated bucket sizes.")
    parser.add_argument("--profile", default=None, help="cProfile dump of the (last) run here.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aerialdet-driver-"))
    try:
        for num in (int(n) for n in args.scenes.split(",")):
            print(json.dumps(run_once(root, num, args.profile)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
