"""Options shared by the jobs, each defined once with one meaning, and the Ray session.

Every option that more than one command takes is a decorator here
(``address_option``, ``verbose_option``, ``overwrite_option``, ``progress_option``,
``out_option``, ``seed_option``,
``bands_option``, ``tile_size_option``, ``min_score_option``), so
``--bands`` or ``--overwrite`` mean the same thing in every command.

``ray_session`` connects to Ray quietly: Ray's own logs (driver, workers,
raylet) go to files under the run's output, and the user sees only what
aerialdet prints (``--verbose`` shows Ray's output too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

F = Callable[..., Any]

LOG_DIR = "_logs"


class UserError(click.ClickException):
    """A mistake of the user's (a bad file, a missing path): one line, exit 2, no traceback."""

    exit_code = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that describe the user's input, not a bug: shown as one line, exit 2."""
    from pipeline.errors import PipelineError
    from retinanet.errors import CheckpointError, LabelError

    return (
        PipelineError,
        CheckpointError,
        LabelError,
        FileNotFoundError,
        PermissionError,
        NotADirectoryError,
        IsADirectoryError,
        FileExistsError,
    )


def one_line(exc: BaseException) -> str:
    """``exc`` as one line, with the file name when the OS error carries one."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return " ".join(text.split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's user-facing errors into ``UserError`` (one line, exit 2)."""
    try:
        yield
    except user_error_types() as exc:
        raise UserError(one_line(exc)) from None


def run_standalone(command: click.Command, argv: list[str] | None = None) -> None:
    """Run one command as a program (``python -m jobs.detect``) with ``user_errors`` handling."""

    def invoke(ctx: click.Context) -> Any:
        with user_errors():
            return click.Command.invoke(command, ctx)

    command.invoke = invoke  # type: ignore[method-assign]
    command.main(args=argv)


class FiniteFloat(click.ParamType):
    """A float that is not NaN or +-inf, optionally inside [lo, hi]."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse ``value``; fail on non-numbers, NaN, infinities and values out of range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            self.fail(f"{number} is not in the range {self.lo}..{self.hi}", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def finite_float_range(lo: float | None = None, hi: float | None = None) -> FiniteFloat:
    """A finite float in ``[lo, hi]`` (click type)."""
    return FiniteFloat(lo, hi)


def parse_int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """Parse ``1,2,3`` into a tuple of 1-based band numbers (click callback)."""
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


def address_option(f: F) -> F:
    """``--address``: a Ray cluster to join; default a private local one."""
    return click.option(
        "--address",
        default=None,
        help="Ray cluster address (e.g. ray://head:10001 or auto). Default: $RAY_ADDRESS when set "
        "(as under `ray job submit`), else a private local cluster started for this run.",
    )(f)


def verbose_option(f: F) -> F:
    """``--verbose``: show Ray's own output as well as writing it to the log files."""
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        help=f"Show Ray's logs too (always written to OUT/{LOG_DIR}/, or for an s3:// OUT a local folder the summary names).",
    )(f)


def out_option(help_text: str) -> Callable[[F], F]:
    """``--out``: where a command writes (a directory; ``detect`` also takes ``s3://bucket/prefix``)."""
    return click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help=help_text)


def seed_option(f: F) -> F:
    """``--seed``: the random seed (same seed, same result)."""
    return click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")(f)


def progress_option(f: F) -> F:
    """``--no-progress``: no progress bar (logs and CI)."""
    return click.option("--no-progress", is_flag=True, help="No progress bar.")(f)


def overwrite_option(f: F) -> F:
    """``--overwrite``: redo work whose output already exists."""
    return click.option("--overwrite", is_flag=True, help="Redo (replace) outputs that already exist.")(f)


def bands_option(help_default: str) -> Callable[[F], F]:
    """``--bands``: 1-based scene bands in model channel order."""
    return click.option(
        "--bands",
        default=None,
        callback=parse_int_list,
        help=f"1-based bands in model channel order, e.g. 1,2,3 [default: {help_default}].",
    )


def tile_size_option(default: int, help_text: str) -> Callable[[F], F]:
    """``--tile-size-px``: edge of the square tiles fed to the model, pixels."""
    return click.option(
        "--tile-size-px", default=default, show_default=True, type=click.IntRange(32, 8192), help=help_text
    )


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # pipeline.detection.Precision's values


def precision_option(default: str, help_text: str) -> Callable[[F], F]:
    """``--precision``: the network's arithmetic (``pipeline.detection.Precision``)."""
    return click.option(
        "--precision", default=default, show_default=True, type=click.Choice(PRECISIONS), help=help_text
    )


def min_score_option(default: float | None, help_text: str = "Minimum score.") -> Callable[[F], F]:
    """``--min-score``: keep detections scoring at least this (0..1)."""
    return click.option(
        "--min-score",
        default=default,
        show_default=default is not None,
        type=finite_float_range(0.0, 1.0),
        help=help_text,
    )


# Variables that configure object-store access without being secrets: forwarded
# to a remote cluster's workers.  Credentials are never forwarded (Ray writes a
# job's runtime env into its logs): the cluster's nodes must hold their own.
FORWARDED_ENV_PREFIXES = ("GDAL_", "CPL_", "VSI_", "AERIALDET_")
FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_S3_ADDRESSING_STYLE")


# Names that carry a secret even under a forwarded prefix (GDAL_HTTP_USERPWD, GDAL_HTTP_HEADERS, ...).
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|USERPWD|BEARER|HEADER|CREDENTIAL|KEY", re.IGNORECASE)


def forwarded_env() -> dict[str, str]:
    """Non-secret settings a remote cluster's workers need: endpoint, region, GDAL options.

    Nothing whose name looks like a secret is forwarded: Ray writes a job's
    runtime env into its logs.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_AWS) and not SECRET_NAME.search(k)
    }


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
