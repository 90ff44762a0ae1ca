"""Where one tiny scene's ``aerialdet detect`` spends its start: a timestamped breakdown.

Runs what ``jobs.detect.detect_command`` runs, in this process, on one
64 x 64 px scene with the blob stand-in, and prints for each step the wall
seconds since the process started and the driver's CPU seconds
(``time.process_time``) spent in it::

    imports        jobs.detect + pipeline.ray_stages (what the CLI loads)
    cluster        jobs.ray_session.ray_session: the private cluster's ray.init
    executor       RayExecutor(job): actors asked for (not waited on)
    footprints     the footprint pass (listing + local headers on the driver)
    first_header   the first batch of headers back (scenes_opened)
    actor_ready    the first model actor's probe answered (model loaded)
    first_tile     the first tile back
    done           the run recorded

The cluster's own processes (raylet, GCS, workers) are not in the driver's
CPU; their CPU seconds are summed from ``psutil`` over the session's
process tree at the end (``cluster_cpu_s``).  Benchmarks are not tests.

    .venv/bin/python -m bench.startup [--ray-data]   # --ray-data: import ray.data in the session, as before
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

_T0 = time.time()
_CPU0 = time.process_time()
marks: dict[str, tuple[float, float]] = {}


def mark(name: str) -> None:
    """Note the wall seconds since the start and the driver's CPU seconds so far."""
    marks[name] = (round(time.time() - _T0, 2), round(time.process_time() - _CPU0, 2))


def _tree_cpu_s() -> float:
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            cpu = child.cpu_times()
            total += cpu.user + cpu.system
        except psutil.Error:
            continue
    return total


def main() -> None:
    """Print the breakdown as one JSON object."""
    import jobs.detect  # noqa: F401
    from pipeline import ray_stages

    mark("imports")
    from bench.scale import _bucket, _standin_job
    from jobs.ray_session import ray_session
    from pipeline.run_progress import run_job

    root = Path(tempfile.mkdtemp(prefix="aerialdet-startup-"))
    src, out = _bucket(root, 1), root / "out"
    job = _standin_job(src, out)
    ready: list[float] = []

    class Timed(ray_stages.RayExecutor):
        def _probed(self, ref: object) -> None:
            super()._probed(ref)
            if not ready and any(self.healthy):
                ready.append(time.time())
                mark("actor_ready")

    with ray_session(None, root / "logs", ray_data="--ray-data" in sys.argv):
        mark("cluster")
        executor = Timed(job)
        mark("executor")
        record = run_job(job, executor, log=lambda m: None, progress=False)
        mark("done")
        cluster_cpu = _tree_cpu_s()
    phases = {k: round(t - _T0, 2) for k, t in record.marks.items()}
    print(
        json.dumps(
            {
                "marks_wall_cpu_s": marks,
                "record_phases_wall_s": phases,
                "cluster_cpu_s": round(cluster_cpu, 1),
            }
        )
    )
    os.system(f"rm -rf {root}")


if __name__ == "__main__":
    main()
