"""Detect on a cluster of 1-CPU worker nodes and a head with no CPU: it must finish (issue 24).

Before, each CPU model actor asked for ``max(1, node CPUs - 0.5)``: on a 1-CPU
node the actor took the whole node, the read tasks (0.5 CPU) could never be
scheduled, and the run waited forever with no message.  Actors now ask for a
node's CPUs but the half a read needs, at least half a CPU.
"""

from __future__ import annotations

import threading

import pytest

from pipeline.job import DetectJob
from pipeline.ray_stages import run_detect
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.integration.conftest import node_cluster

pytestmark = pytest.mark.integration
OBJECTS = [(10, 10, 30, 30, 0), (150, 40, 170, 60, 1), (60, 200, 90, 220, 2)]


@pytest.fixture(scope="module")
def one_cpu_nodes():
    with node_cluster(num_workers=2, worker_cpus=1) as cluster:
        yield cluster


def test_detect_finishes_on_one_cpu_nodes(one_cpu_nodes, tmp_path):
    for i in range(3):
        write_scene(tmp_path / "in" / f"s{i}.tif", OBJECTS, width=256, height=256)
    job = DetectJob(
        source=str(tmp_path / "in"),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    result: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: result.update(record=run_detect(job, log=lambda m: None)), daemon=True
    )
    runner.start()
    runner.join(timeout=300)
    assert not runner.is_alive(), "detect made no progress on 1-CPU nodes"
    record = result["record"]
    assert record.counts()["done"] == 3  # type: ignore[attr-defined]
    actors = record.config["model_actors"]  # type: ignore[attr-defined]  # those that inferred tiles
    nodes = {about.split()[0] for about in actors}  # "node=<id>"
    assert actors and len(nodes) == len(actors)  # never two actors on one node (1 CPU holds two 0.5s)
