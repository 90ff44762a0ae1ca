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


def init_ray(address: str | None, *, num_cpus: int | None = None) -> None:
    """Connect to Ray: ``address``, else ``$RAY_ADDRESS``, else a private local cluster.

    A bare ``ray.init()`` would attach to any cluster already running on the
    machine; ``address="local"`` always starts a private one.
    """
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def parse_int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """Parse ``1,2,3`` into a tuple of ints (click callback)."""
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated band numbers like 1,2,3, got {value!r}", param=param) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"band numbers are 1-based, got {value!r}", param=param)
    return out
