"""Integration fixtures: one private local Ray cluster per module, a real S3 server."""

from __future__ import annotations

import os
import socket

import pytest


def standin_detect_args(source: str, out: str) -> list[str]:
    """Arguments of `detect` with the blob stand-in and 128/32 px tiles."""
    from pipeline.standin import STANDIN_SOURCE

    return [
        source,
        "--model",
        STANDIN_SOURCE,
        "--out",
        out,
        "--tile-size-px",
        "128",
        "--overlap-px",
        "32",
        "--no-progress",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode: a real S3-speaking HTTP server on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    """A private local cluster (never attaches to one already on the machine)."""
    import ray

    from jobs.options import forwarded_env

    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": forwarded_env()})
    yield ray
    ray.shutdown()
