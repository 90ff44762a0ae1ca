"""``--address`` where no Ray answers: one line naming the address, exit 2, never a traceback or a hang.

No Ray cluster is started: the address is a closed port, or a port where
something listens that is no Ray GCS or Ray Client server (``ray.init`` then
retried for about 13 minutes, Ray Client for 35 s with a warning; Ray
Client's timeouts are shortened here through Ray's own
``RAY_CLIENT_*_CONNECTION_TIMEOUT_S``).  The working cases run on the
separate-hosts cluster (``test_separate_hosts.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _detect_via(address: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    write_scene(tmp_path / "in" / "a.tif", [(10, 10, 20, 20, 0)])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",
        "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "2",
    }
    args = [*standin_detect_args(str(tmp_path / "in"), str(tmp_path / "out")), "--address", address]
    return subprocess.run(
        [sys.executable, "-m", "jobs.detect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_ray_client_to_a_closed_port_fails_in_one_line(tmp_path):
    address = f"ray://127.0.0.1:{free_port()}"
    done = _detect_via(address, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: --address {address}: cannot reach a Ray cluster there (Connection refused within 10 s); "
        "check the address and that the head node runs (`ray status` on it)"
    ]


def test_ray_client_to_a_port_that_is_no_client_server_fails_in_one_line(tmp_path):
    with socket.socket() as listener:  # accepts connections, never answers gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        address = f"ray://127.0.0.1:{listener.getsockname()[1]}"
        done = _detect_via(address, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr and "warn" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: --address {address}: no Ray Client server"), lines[0]
    assert "ray client connection timeout" in lines[0] and "10001" in lines[0], lines[0]


def test_an_address_where_no_gcs_answers_fails_in_one_line(tmp_path):
    with socket.socket() as listener:  # accepts connections, never answers gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        done = _detect_via(address, tmp_path)  # hung past 240 s before (ray.init retries ~13 min)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: --address {address}: no Ray cluster (GCS) answered there"), lines[0]
    assert "6379" in lines[0] and "8265" in lines[0], lines[0]
