"""Submit the detect job to a real `ray start --head` through the job API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import geopandas as gpd
import pytest

from tests.conftest import write_scene
from tests.integration.conftest import free_port, standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` in its own process group; killed (with its cluster) at the end."""
    port, dash = free_port(), free_port()
    temp = tmp_path_factory.mktemp("rayhead")
    # as with an activated venv: the job's `python` is this interpreter
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without a token: the API is up
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"ray start --head exited: {proc.stdout.read()}")
                time.sleep(1)
        else:
            pytest.fail("the Ray job API did not come up on 127.0.0.1")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_detect_job_submitted_to_head(ray_head, tmp_path):
    scenes = tmp_path / "scenes"
    write_scene(scenes / "a.tif", [(10, 10, 30, 30, 0), (100, 100, 120, 118, 2)], width=200, height=200)
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "-m",
        "jobs.detect",
        *standin_detect_args(str(scenes), str(out)),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    report = json.loads((out / "_run.json").read_text())
    assert report["counts"]["done"] == 1
    gdf = gpd.read_parquet(out)
    assert sorted(gdf["label"]) == ["blue", "red"]
