"""A driver killed with SIGKILL leaves no process of its private Ray cluster behind.

Before: the dashboard and runtime-env agents of the private cluster stayed
alive after the driver was killed.  ``jobs.reaper`` now ends them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.reaper import processes_naming
from tests.conftest import wait_until as _wait
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def test_killed_driver_takes_its_cluster_down(tmp_path):
    for i in range(4):
        write_scene(tmp_path / "in" / f"s{i}.tif", [(10, 10, 30, 30, 0)], width=1500, height=1500)
    before = set(Path("/tmp").glob("aerialdet-ray-*"))
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.detect",
            *standin_detect_args(str(tmp_path / "in"), str(tmp_path / "out")),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait(lambda: set(Path("/tmp").glob("aerialdet-ray-*")) - before, 60)
        temp_dir = str((set(Path("/tmp").glob("aerialdet-ray-*")) - before).pop())
        # the cluster is up and working (raylet + workers) when the driver dies
        assert _wait(lambda: len(processes_naming(temp_dir)) >= 3, 60), processes_naming(temp_dir)
        time.sleep(3)
        assert driver.poll() is None, "the run ended before it could be killed; make the scenes larger"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        assert _wait(lambda: not processes_naming(temp_dir), 45), processes_naming(temp_dir)
        assert _wait(lambda: not Path(temp_dir).exists(), 10)
    finally:
        if driver.poll() is None:
            driver.kill()
