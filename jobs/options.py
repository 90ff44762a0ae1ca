"""Shared click options and the Ray connection used by every job."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def ray_address_option(f: F) -> F:
    """``--address``: a Ray cluster to join; default a private local one."""
    return click.option(
        "--address",
        default=None,
        help="Ray cluster address (e.g. ray://head:10001 or auto). Default: $RAY_ADDRESS when set "
        "(as under `ray job submit`), else a private local cluster started for this run.",
    )(f)


FORWARDED_ENV_PREFIXES = ("AWS_", "GDAL_", "CPL_", "VSI_", "AERIALDET_")


def forwarded_env() -> dict[str, str]:
    """Environment the workers need too: object-store endpoint and credentials, GDAL options."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def init_ray(address: str | None, *, num_cpus: int | None = None) -> None:
    """Connect to Ray: ``address``, else ``$RAY_ADDRESS``, else a private local cluster.

    A bare ``ray.init()`` would attach to any cluster already running on the
    machine; ``address="local"`` always starts a private one.  ``AWS_*`` and
    GDAL variables of this shell are forwarded to the workers (a submitted
    job gets them from its ``--runtime-env-json`` instead).
    """
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": forwarded_env()}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: the job's runtime env applies
        ray.init(log_to_driver=True)
    else:
        # the dashboard serves the State API that Ray Train polls; without it Train logs warnings
        ray.init(address="local", num_cpus=num_cpus, runtime_env=runtime_env, log_to_driver=True)


def parse_int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """Parse ``1,2,3`` into a tuple of ints (click callback)."""
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated band numbers like 1,2,3, got {value!r}", param=param
        ) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"band numbers are 1-based, got {value!r}", param=param)
    return out
