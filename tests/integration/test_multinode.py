"""Detect on a Ray cluster of a head and two worker nodes on this machine, and faults in it.

``ray.cluster_utils.Cluster`` starts each node as its own raylet (as Ray's own
chaos tests do).  The head has no CPU, so every task and model actor runs on
a worker node; each worker node has 2 logical CPUs: one model actor (1.5) and
one read task (0.5).  Every run is compared with the same input run by a
single-node private cluster (``python -m jobs.detect``), which in turn equals
the painted objects: same rows after sorting, none missing, none twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pytest

from pipeline.detection import ModelInfo
from pipeline.ray_stages import DetectConfig, DetectJob, run_detect
from pipeline.report import read_report
from pipeline.standin import STANDIN_INFO, BlobDetector
from pipeline.storage import RESERVED_PREFIXES, LocalStore
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.integration.conftest import node_cluster, standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
TILING = TilingConfig(tile_size_px=128, overlap_px=32)
NUM_SCENES = 6
SIZE_PX = 384  # tile origins 0, 96, 192, 288: 16 tiles a scene
KEY = ["scene", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "label"]


def _objects(i: int) -> list[tuple[int, int, int, int, int]]:
    """Scene i's painted objects: one on a tile seam, one in a corner, one inside a tile."""
    return [
        (100 + i, 20, 130 + i, 40, i % 3),
        (300, 300 + i, 330, 320 + i, (i + 1) % 3),
        (10, 10, 20, 20 + i, 2),
    ]


class SlowDetector(BlobDetector):
    """The blob stand-in, ``delay_s`` slower per batch, that dies once on its ``die_on``-th batch.

    Dying is ``os._exit`` in the actor process (what a segfault or an OOM kill
    looks like to Ray), once per marker file: a restarted actor carries on.
    """

    def __init__(self, delay_s: float, die_on: int | None, marker: str | None) -> None:
        super().__init__()
        self.delay_s, self.die_on, self.marker, self.calls = delay_s, die_on, marker, 0

    def __call__(self, images):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.die_on is not None and self.calls == self.die_on and self.marker:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # died already once: carry on
            else:
                os.close(fd)
                os._exit(1)
        time.sleep(self.delay_s)
        return super().__call__(images)


@dataclass(frozen=True)
class SlowLoader:
    """``ModelLoader`` of ``SlowDetector`` (test only)."""

    delay_s: float = 0.1
    die_on: int | None = None
    marker: str | None = None
    info: ModelInfo = field(default=STANDIN_INFO)

    def load(self, device: str) -> SlowDetector:
        """The detector, on the CPU."""
        return SlowDetector(self.delay_s, self.die_on, self.marker)


def _rows(out: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(out).sort_values(KEY).reset_index(drop=True)


def assert_same_detections(out: Path, reference: Path) -> None:
    """Same rows after sorting (geometry included), no duplicate, no partial file.

    A writer killed mid-write may leave a ``.<name>.<hex>.tmp`` behind (a reserved
    name: never renamed into place, skipped by every reader); every other file
    is a complete detection file (``gpd.read_parquet`` reads them all).
    """
    got, want = _rows(out), _rows(reference)
    cols = [c for c in want.columns if c not in ("geometry", "run_id")]
    assert len(got) == len(want) and not got.duplicated(KEY).any()
    assert got[cols].equals(want[cols])
    assert got.geometry.geom_equals(want.geometry).all()
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith(RESERVED_PREFIXES))
    assert visible == LocalStore(out).list_parquet() and len(visible) == NUM_SCENES


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multinode") / "in"
    for i in range(NUM_SCENES):
        write_scene(folder / f"s{i}.tif", _objects(i), width=SIZE_PX, height=SIZE_PX)
    return folder


@pytest.fixture(scope="module")
def reference(scenes) -> Path:
    """The single-node run of the same input: ``python -m jobs.detect`` on a private local cluster."""
    out = scenes.parent / "single-node"
    args = standin_detect_args(str(scenes), str(out))
    subprocess.run([sys.executable, "-m", "jobs.detect", *args], cwd=ROOT, check=True, capture_output=True)
    rows = _rows(out)
    painted = sorted(
        (str(scenes / f"s{i}.tif"), x1, y1, x2, y2)
        for i in range(NUM_SCENES)
        for x1, y1, x2, y2, _ in _objects(i)
    )
    assert sorted(zip(rows.scene, *(rows[c].astype(int) for c in KEY[1:5]))) == painted
    return out


@pytest.fixture(scope="module")
def cluster(reference):
    """A head with no CPU and two worker nodes with 2 logical CPUs each; this process is the driver."""
    with node_cluster(num_workers=2, worker_cpus=2) as c:
        yield c


def _ensure_two_workers(cluster) -> None:
    import ray

    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=2, object_store_memory=80 * 1024**2)
    cluster.wait_for_nodes()
    deadline = time.time() + 30
    while sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")) < 2:
        assert time.time() < deadline, "worker nodes did not come back"
        time.sleep(0.5)


def _job(source: Path, out: Path, loader: object) -> DetectJob:
    return DetectJob(
        source=str(source),
        out_dir=str(out),
        model=loader,  # type: ignore[arg-type]
        detect=DetectConfig(batch_size=4),
        tiling=TILING,
        progress=False,
    )


def test_detect_across_nodes_equals_single_node(cluster, scenes, reference, tmp_path):
    _ensure_two_workers(cluster)
    report = run_detect(_job(scenes, tmp_path / "out", SlowLoader(delay_s=0.0)), log=lambda m: None)
    assert report.counts()["done"] == NUM_SCENES
    assert_same_detections(tmp_path / "out", reference)


def test_tiles_inferred_on_more_than_one_node(cluster, scenes, tmp_path):
    _ensure_two_workers(cluster)
    run_detect(_job(scenes, tmp_path / "out", SlowLoader(delay_s=0.05)), log=lambda m: None)
    rep = read_report(tmp_path / "out")
    assert len(rep["nodes"]) >= 2, rep["nodes"]
    assert sum(n["num_tiles"] for n in rep["nodes"].values()) == rep["num_tiles"]
    assert all(s["actor_ids"] and s["node_ids"] for s in rep["scenes"])


def _when_some_done(out: Path, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while not LocalStore(out).list_parquet():
        assert time.time() < deadline, "no scene finished"
        time.sleep(0.1)


def test_worker_node_removed_mid_run(cluster, scenes, reference, tmp_path):
    _ensure_two_workers(cluster)
    out = tmp_path / "out"
    result: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: result.update(
            report=run_detect(_job(scenes, out, SlowLoader(delay_s=0.3)), log=lambda m: None)
        )
    )
    runner.start()
    _when_some_done(out)
    assert len(LocalStore(out).list_parquet()) < NUM_SCENES, "the run ended before a node could be removed"
    cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
    runner.join(timeout=180)
    assert not runner.is_alive(), "the run did not finish after losing a node"
    assert result["report"].counts()["done"] == NUM_SCENES  # type: ignore[attr-defined]
    assert_same_detections(out, reference)


def test_model_actor_that_dies_is_restarted(cluster, scenes, reference, tmp_path):
    _ensure_two_workers(cluster)
    marker = tmp_path / "died-once"
    loader = SlowLoader(delay_s=0.0, die_on=3, marker=str(marker))
    report = run_detect(_job(scenes, tmp_path / "out", loader), log=lambda m: None)
    assert marker.exists()  # an actor did die
    assert report.counts() == {"done": NUM_SCENES, "exists": 0, "failed": 0, "skipped": 0}
    assert_same_detections(tmp_path / "out", reference)


DRIVER = """
import sys, ray
from pathlib import Path
from tests.integration.test_multinode import SlowLoader, _job
from pipeline.ray_stages import run_detect
ray.init(address=sys.argv[3])
run_detect(_job(Path(sys.argv[1]), Path(sys.argv[2]), SlowLoader(delay_s=0.3)), log=lambda m: None)
"""


def test_driver_killed_then_rerun_does_only_the_rest(cluster, scenes, reference, tmp_path):
    _ensure_two_workers(cluster)
    out = tmp_path / "out"
    command = [sys.executable, "-c", DRIVER, str(scenes), str(out), cluster.address]
    driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _when_some_done(out)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    finished = set(LocalStore(out).list_parquet())
    assert 0 < len(finished) < NUM_SCENES, "the driver was not killed mid-run"
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=180).returncode == 0
    rep = read_report(out)
    assert rep["counts"] == {
        "done": NUM_SCENES - len(finished),
        "exists": len(finished),
        "failed": 0,
        "skipped": 0,
    }
    assert {Path(s["output"]).name for s in rep["scenes"] if s["status"] == "exists"} == finished
    assert_same_detections(out, reference)
