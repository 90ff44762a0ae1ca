"""The reaper ends a private cluster's processes, those that retitle themselves included.

Before: it killed only processes whose command line names the cluster's
directory; Ray's workers and its dashboard and runtime-env agents retitle
themselves ``ray::...``, so they were left to die with their raylet, or not.
Now it also ends every descendant of those processes (found with psutil).
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from jobs.reaper import reap

# a "raylet" naming the directory, with a child whose command line does not (a retitled worker)
PARENT = "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"


def test_reap_ends_the_named_processes_and_their_children(tmp_path):
    cluster = tmp_path / "aerialdet-ray-test"
    (cluster / "r").mkdir(parents=True)
    raylet = subprocess.Popen([sys.executable, "-c", PARENT, f"--temp-dir={cluster}/r/session_1"])
    try:
        deadline = time.time() + 30
        while not psutil.Process(raylet.pid).children() and time.time() < deadline:
            time.sleep(0.1)
        worker = psutil.Process(raylet.pid).children()[0]
        assert str(cluster) not in " ".join(worker.cmdline())
        assert reap(str(cluster), grace_s=5) == 2
        raylet.wait(timeout=10)
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        assert not cluster.exists()
    finally:
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
        raylet.wait(timeout=10)
