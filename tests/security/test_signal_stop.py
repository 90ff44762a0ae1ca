"""SIGTERM and SIGINT stop a detect run in order (issue 24).

Before: SIGTERM (what ``kill``, a scheduler or Kubernetes sends) hit Ray's
C++ failure handler: exit by signal 6 (status 134) with a C stack in the log,
no logs kept, and the cluster left to the reaper.  Now the signal becomes
``RunStopped`` in the main thread: Ray is shut down, its logs are kept, the
private cluster is gone, and the command exits 143 (SIGTERM) or 130
(SIGINT) with one line, ``stopped by SIGTERM``, and no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until as _wait
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
AGENTS = {"ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _working(pid: int) -> bool:
    """A task or actor of the run is executing (a worker retitled ``ray::<name>``, not an agent or idle)."""
    for proc in _descendants(pid):
        try:
            name = proc.name() if proc.name().startswith("ray::") else " ".join(proc.cmdline()[:1])
        except psutil.Error:
            continue
        if name.startswith("ray::") and name not in AGENTS:
            return True
    return False


def _alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            continue
    return left


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_the_run_in_order(tmp_path, sig, status):
    for i in range(4):
        write_scene(tmp_path / "in" / f"s{i}.tif", [(10, 10, 30, 30, 0)], width=1500, height=1500)
    out = tmp_path / "out"
    before = set(Path("/tmp").glob("aerialdet-ray-*"))
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.detect", *standin_detect_args(str(tmp_path / "in"), str(out))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait(lambda: _working(driver.pid), 180), "no task of the run started"
        time.sleep(2)  # tiles flow
        assert driver.poll() is None, "the run ended before the signal; make the scenes larger"
        procs = _descendants(driver.pid)
        parents = set(Path("/tmp").glob("aerialdet-ray-*")) - before
        driver.send_signal(sig)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == status, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"stopped by {sig.name}", stderr[-3000:]
    for needle in ("Traceback", "Aborted", "signal 6", "received at time", "core dumped"):
        assert needle not in stderr, stderr[-3000:]
    driver_log = (out / "_logs" / "driver.log").read_text(errors="replace")
    assert "received at time" not in driver_log  # Ray's C++ failure handler never ran
    assert _wait(lambda: not _alive(procs), 30), _alive(procs)  # the private cluster is gone
    assert parents and not any(p.exists() for p in parents)  # its temp dir too
    kept = out / "_logs" / "ray"
    assert kept.is_dir() and any(kept.rglob("raylet.out")), "Ray's logs were not kept"
    from pipeline.claims import read_claim
    from pipeline.report import read_report
    from pipeline.storage import LocalStore

    rep = read_report(out)  # the record is finished, says why, and no scene stays claimed
    assert rep["finished_at"] is not None and (rep["stopped"] or "").startswith("run stopped"), rep
    store = LocalStore(out)
    for name in store.list_names("_claim."):
        assert read_claim(store, name[len("_claim.") : -len(".json")]).expires_at == 0.0
