"""Integration fixtures: one private local Ray cluster per module (the S3 server is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port  # noqa: F401  (re-exported: test_job_submit imports it from here)


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


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    """A private local cluster (never attaches to one already on the machine).

    Its workers inherit this process's environment (the S3 server's settings
    included): no runtime env, so no credential is written to Ray's logs.
    """
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
