"""A private cluster keeps its task workers while a CPU model actor holds most of the node.

Ray keeps as many idle workers as the node has *available* CPUs and kills
the rest after 1 s; with the model actor holding all but 0.5 CPU, every read,
header and finish task then started a fresh worker process (imports and all).
``jobs.private_cluster`` raises the number kept (``RAY_num_workers_soft_limit``).
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.integration


def test_tasks_between_idle_gaps_reuse_their_workers(tmp_path):
    import ray

    from jobs.ray_session import ray_session

    assert not ray.is_initialized()
    with ray_session(None, tmp_path / "logs", num_cpus=2):

        @ray.remote(num_cpus=1.5)
        class Holder:  # a CPU model actor's share of a 2-CPU node (pipeline.ray_stages)
            def ready(self) -> bool:
                return True

        @ray.remote(num_cpus=0.25)
        def pid() -> int:
            time.sleep(0.2)
            return os.getpid()

        holder = Holder.remote()
        ray.get(holder.ready.remote())
        waves = []
        for _ in range(4):
            waves.append(set(ray.get([pid.remote() for _ in range(2)])))
            time.sleep(2.5)  # idle past Ray's 1 s: workers beyond the kept number are killed
        started = set().union(*waves)
    # every wave after the first runs on workers already started
    assert len(started) <= 3, f"{len(started)} worker processes for 4 waves of 2 tasks: {waves}"
