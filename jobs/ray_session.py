"""The Ray session of one command: a private local cluster (or a joined one), quiet, reaped if the driver dies.

``ray_session`` connects to Ray quietly: Ray's own logs (driver, workers,
raylet) go to files under the run's output, and the user sees only what
aerialdet prints (``--verbose`` shows Ray's output too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.job_env import forwarded_env


@contextlib.contextmanager
def _std_streams_to_file(log_path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 and ``sys.stdout`` to ``log_path``; keep ``sys.stderr`` for the user.

    Ray's C++ logs and child processes write to the descriptors, and the
    driver's error-listener thread prints worker deaths to ``sys.stdout``: all
    of it lands in the log.  ``sys.stderr`` keeps writing to the terminal, so
    aerialdet's progress bar and one-line messages still reach the user (during
    a session aerialdet writes only to stderr; summaries come after it).  A
    no-op where stderr has no file descriptor (e.g. under click's test runner).
    """
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with open(log_path, "ab") as log:
        for fd in fds:
            os.dup2(log.fileno(), fd)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = open(log_path, "a", buffering=1)  # noqa: SIM115  (closed below)
    sys.stderr = io.TextIOWrapper(
        os.fdopen(os.dup(saved[fds[1]]), "wb", buffering=0),
        encoding=old_err.encoding,
        errors="backslashreplace",  # as Python's own stderr: an odd file name never ends a run
        write_through=True,
    )
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.close()
        sys.stdout, sys.stderr = old_out, old_err
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _ray_logger_to_file(log_path: Path) -> Iterator[None]:
    """Ray's Python loggers on the driver write to ``log_path`` only."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger on import: replace after)

    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data", "ray.train")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        handler.close()


def _init_ray(address: str | None, temp_dir: str | None, verbose: bool, num_cpus: int | None) -> None:
    import ray

    common: dict[str, Any] = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    if address:
        ray.init(address=address, runtime_env={"env_vars": forwarded_env()}, **common)
    elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: the job's runtime env applies
        ray.init(**common)
    else:
        # A private cluster: its processes inherit this environment (credentials
        # included), so nothing secret goes into a runtime env that Ray logs.
        # No metrics export: nothing reads it, and its exporter thread crashed workers here.
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # No dashboard either: nobody browses a cluster that lives for one command,
        # and its processes took CPU from the model on a small machine (bench/RESULTS.md).
        ray.init(address="local", num_cpus=num_cpus, _temp_dir=temp_dir, include_dashboard=False, **common)


def _keep_logs(temp_dir: str, log_dir: Path) -> None:
    """Move the private cluster's logs to ``log_dir/ray/<temp dir name>`` and delete its temp dir."""
    session = Path(temp_dir) / "session_latest"
    logs = session.resolve() / "logs" if session.exists() else None
    try:
        if logs is not None and logs.is_dir():
            # one folder per run: runs sharing an output keep each other's logs
            shutil.move(str(logs), str(log_dir / "ray" / Path(temp_dir).name))
    except OSError as exc:  # a full disk must not hide the run's own result
        print(f"warning: Ray's logs could not be kept under {log_dir}: {exc}", file=sys.stderr)
    shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_session(
    address: str | None,
    log_dir: str | os.PathLike[str],
    *,
    verbose: bool = False,
    num_cpus: int | None = None,
) -> Iterator[None]:
    """Connect to Ray for one command; quiet unless ``verbose``.

    Joins ``address`` (else ``$RAY_ADDRESS``, as under ``ray job submit``),
    else starts a private local cluster (``address="local"``: never one that
    already runs on the machine) in a temporary directory only this user can
    read, and shuts it down at the end.  Ray's logs go to ``log_dir``:
    ``driver.log`` (the driver's Ray loggers and C++ output) and ``ray/``
    (the private cluster's own log directory).  When Ray is already
    initialised (tests, notebooks) the session is used as it is.

    Args:
        address: Ray address, or None.
        log_dir: where Ray's logs go (created).
        verbose: also show Ray's output on the terminal.
        num_cpus: CPUs of a private cluster (default: all).
    """
    import ray

    if ray.is_initialized():
        yield
        return
    log_path = Path(log_dir)
    log_path.mkdir(parents=True, exist_ok=True)
    temp_dir = None
    if not (address or os.environ.get("RAY_ADDRESS")):
        # mode 700; under /tmp because Ray's unix sockets live in it (paths <= 107 bytes)
        temp_dir = tempfile.mkdtemp(prefix="aerialdet-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    reaper = _start_reaper(temp_dir) if temp_dir else None
    try:
        with contextlib.ExitStack() as quiet:
            if not verbose:
                quiet.enter_context(_std_streams_to_file(log_path / "driver.log"))
                quiet.enter_context(_ray_logger_to_file(log_path / "driver.log"))
            try:
                _init_ray(address, temp_dir, verbose, num_cpus)
                yield
            finally:
                ray.shutdown()  # also after a half-started init
    finally:
        try:
            if temp_dir is not None:
                _keep_logs(temp_dir, log_path)
        finally:
            if reaper is not None:
                os.close(reaper)  # the reaper then ends whatever of the cluster is left


def _start_reaper(temp_dir: str) -> int | None:
    """Start ``jobs.reaper`` for a private cluster; returns the pipe end whose closing releases it.

    If this process dies (even by SIGKILL) the pipe closes and the reaper kills
    the cluster's processes, so a killed run leaves none behind.
    """
    import subprocess

    if not os.path.isdir("/proc"):  # the reaper finds processes through /proc (Linux)
        return None
    read_end, write_end = os.pipe()  # not inherited by Ray's processes (O_CLOEXEC)
    try:
        subprocess.Popen(
            [sys.executable, "-m", "jobs.reaper", temp_dir],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    return write_end
