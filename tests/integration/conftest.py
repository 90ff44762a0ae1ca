"""Integration fixtures: one private local Ray cluster per module (the S3 server is in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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

    from jobs.private_cluster import IDLE_WORKERS_ENV, idle_workers_kept

    os.environ.setdefault(IDLE_WORKERS_ENV, idle_workers_kept())  # as every private cluster of the CLI
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def node_cluster(num_workers: int, worker_cpus: float) -> Iterator[object]:
    """A ``ray.cluster_utils.Cluster``: a head with no CPU and ``num_workers`` nodes of ``worker_cpus``.

    Every task and model actor runs on a worker node; this process is the driver.
    """
    import ray
    from ray.cluster_utils import Cluster

    node_args = {"object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **node_args})
    for _ in range(num_workers):
        cluster.add_node(num_cpus=worker_cpus, **node_args)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def netns_cluster():
    """A head and a worker host in network namespaces of their own (``tests.integration.netns_hosts``).

    A folder under ``hidden`` is on the head only; an S3 server runs on the
    head's link address.  Skipped where namespaces cannot be made (not root).
    """
    from tests.integration.netns_hosts import can_make_namespaces, netns_hosts

    why = can_make_namespaces()
    if why:
        pytest.skip(f"separate-hosts cluster: {why}")
    with netns_hosts() as hosts:
        yield hosts
