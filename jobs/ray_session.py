"""The Ray session of one command: a private local cluster (or a joined one), quiet, reaped if the driver dies.

``ray_session`` connects to Ray quietly: Ray's own logs (driver, workers,
raylet) go to files under the run's output, and the user sees only what
aerialdet prints (``--verbose`` shows Ray's output too).  A private cluster
is closed to the machine's other users (``jobs.private_cluster``), and
SIGTERM or SIGINT stop a session in order (``RunStopped``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from jobs.job_env import forwarded_env
from jobs.private_cluster import (
    LOOPBACK,
    keep_logs,
    make_private_dir,
    make_private_log_dir,
    private_cluster_env,
    ray_temp_dir,
)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived during a Ray session: the run stops in order.

    Raised in the main thread by ``ray_session``'s signal handler, so every
    ``finally`` on the way runs (in-flight work released, the report
    finished); ``ray_session`` then shuts Ray down, keeps the logs and exits
    with ``exit_status``.  A ``KeyboardInterrupt``, so code that cleans up
    after Ctrl-C does the same for SIGTERM.

    Attributes:
        signum: the signal received.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        """The shell's status for death by this signal: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum


class _StopSignals:
    """SIGTERM and SIGINT raise ``RunStopped`` once in the main thread; later ones wait for the clean-up."""

    def __init__(self) -> None:
        self.saved = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
        self.received: int | None = None  # the first signal: the command's exit status says it
        self.quiet = False  # cleaning up: a signal is remembered, not raised

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and not self.quiet:
            raise RunStopped(signum)

    def install(self) -> None:
        """Handle the signals here (again after ``ray.init``: Ray's C++ handler aborts on SIGTERM)."""
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def cleaning_up(self) -> None:
        """From now on a signal is remembered, not raised: it must not cut the clean-up short."""
        self.quiet = True

    def restore(self) -> None:
        """Put back the handlers found at the start."""
        for sig, old in self.saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopSignals | None]:
    """SIGTERM / SIGINT -> ``RunStopped`` for the duration; None off the main thread (no handler possible)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    stops = _StopSignals()
    stops.install()
    try:
        yield stops
    finally:
        stops.restore()


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
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        with contextlib.suppress(OSError):
            os.chmod(log_path, 0o600)  # a driver.log of an earlier run, made before logs were private
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
def _ray_logger_to_file(log_path: Path, ray_data: bool = True) -> Iterator[None]:
    """Ray's Python loggers on the driver write to ``log_path`` only.

    ``ray_data``: import ``ray.data`` first (it configures its logger on import, so it is replaced
    after); a command that never uses it (detect) skips the import: 1.5 s of driver CPU.
    """
    if ray_data:
        import ray.data  # noqa: F401

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


def check_reachable(address: str, *, timeout_s: float = 10.0) -> None:
    """Refuse, within ``timeout_s``, a ``--address`` nothing answers on (Ray itself retries for minutes).

    ``host:port`` and ``ray://host:port`` are checked with one TCP connection;
    ``auto`` and other forms are left to Ray.

    Raises:
        ConnectionError: naming the address, the reason and what to check.
    """
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConnectionError(
            f"--address {address}: cannot reach a Ray cluster there ({reason} within {timeout_s:.0f} s); "
            "check the address and that the head node runs (`ray status` on it)"
        ) from None


def check_gcs_answers(address: str) -> None:
    """Refuse, within about 40 s, a ``host:port`` that takes connections but is no Ray GCS.

    ``check_reachable`` only proves that something listens; ``ray.init``
    against a port that is not a GCS (the dashboard's, another service's)
    retries for about 13 minutes with nothing on the terminal.  One
    ``GcsClient`` (Ray's own, as ``ray status`` uses) fetches the cluster id
    once, within Ray's 5 s connect and 30 s answer timeouts; its warnings go
    to the driver log like the rest of Ray's output.  Other address forms
    (``auto``, URLs) are left to Ray.

    Raises:
        ConnectionError: naming the address, Ray's reason and what to pass.
    """
    import re

    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # no stub for it

    from pipeline.errors import first_line

    if not re.fullmatch(r"[^/:\s]+:\d+", address):
        return
    try:
        GcsClient(address=address)
    except Exception as exc:  # RpcError (no GCS there), AuthenticationError (token refused), ...
        raise ConnectionError(
            f"--address {address}: no Ray cluster (GCS) answered there ({first_line(exc)}); pass the head's "
            "GCS address (port 6379 unless `ray start --head --port` set another; not the dashboard's 8265), "
            "or ray://HOST:10001 for Ray Client"
        ) from None


def _init_client(address: str, init_kwargs: dict[str, Any]) -> None:
    """``ray.init("ray://...")`` (Ray Client); a failed connection is one line naming the address.

    Ray Client retries for about 35 s, then warns and raises (or raises on a
    Ray or Python version mismatch with the cluster): the warning goes to the
    log, and the cause comes back in one ``ConnectionError``.

    Raises:
        ConnectionError: naming the address, Ray's reason and what to check.
    """
    import warnings

    import ray

    from pipeline.errors import first_line

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Ray Client connection timed out ...": the error below says it
            ray.init(address=address, **init_kwargs)
    except Exception as exc:
        raise ConnectionError(
            f"--address {address}: no Ray Client server of this Ray version answered there "
            f"({first_line(exc)}); use the head's client server port (10001 unless "
            "`ray start --head --ray-client-server-port` set another), or pass the head's "
            "GCS address (host:6379) from a node of the cluster"
        ) from None


def _init_ray(address: str | None, temp_dir: Path | None, verbose: bool, num_cpus: int | None) -> None:
    import ray

    common: dict[str, Any] = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    if address:
        check_reachable(address)
        if address.startswith("ray://"):
            _init_client(address, {"runtime_env": {"env_vars": forwarded_env()}, **common})
        else:
            check_gcs_answers(address)
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
        _start_private(
            address="local",
            num_cpus=num_cpus,
            _temp_dir=str(temp_dir),
            _node_ip_address=LOOPBACK,  # with private_cluster_env: every listener on 127.0.0.1
            include_dashboard=False,
            **common,
        )


def _start_private(**init_kwargs: Any) -> None:
    """``ray.init`` of a private cluster, tried twice: Ray gives its raylet a fixed 30 s to register.

    On a loaded machine that is too short now and then ("The current node timed
    out during startup"); a second try usually starts.  A second failure is one
    line, never Ray's traceback.
    """
    import ray

    from jobs.options import UserError
    from pipeline.errors import first_line

    for attempt in (1, 2):
        try:
            ray.init(**init_kwargs)
            return
        except Exception as exc:  # Ray raises a bare Exception here
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise UserError(
                    f"the private Ray cluster did not start ({first_line(exc)}); the machine "
                    "may be overloaded: retry, or pass --verbose to see Ray's logs"
                ) from None


@contextlib.contextmanager
def ray_session(
    address: str | None,
    log_dir: str | os.PathLike[str],
    *,
    verbose: bool = False,
    num_cpus: int | None = None,
    ray_data: bool = True,
) -> Iterator[None]:
    """Connect to Ray for one command; quiet unless ``verbose``; SIGTERM / SIGINT stop it in order.

    Joins ``address`` (else ``$RAY_ADDRESS``, as under ``ray job submit``),
    else starts a private local cluster (``address="local"``: never one that
    already runs on the machine) closed to other users: its temp dir sits in
    a 0700 parent, it authenticates with a fresh token kept in a 0600 file
    there, and it listens on 127.0.0.1 only (``jobs.private_cluster``); it is
    shut down at the end.  Ray's logs go to ``log_dir`` (made 0700):
    ``driver.log`` (the driver's Ray loggers and C++ output, 0600) and
    ``ray/`` (a copy of the private cluster's own log directory).  When Ray
    is already initialised (tests, notebooks) the session is used as it is.

    While the session is open, SIGTERM and SIGINT raise ``RunStopped`` in
    the main thread; once Ray is shut down and the logs are kept, the
    command exits with status 143 (SIGTERM) or 130 (SIGINT) after one line,
    ``stopped by SIGTERM``, on stderr.

    Args:
        address: Ray address, or None.
        log_dir: where Ray's logs go (created).
        verbose: also show Ray's output on the terminal.
        num_cpus: CPUs of a private cluster (default: all).
        ray_data: the command may use Ray Data (train does, through Ray Train), so its logger is
            sent to the log too; False (detect: Ray core tasks and actors only) skips its import.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    log_path = Path(log_dir)
    make_private_log_dir(log_path)
    with _stop_on_signals() as stops:
        try:
            if address or os.environ.get("RAY_ADDRESS"):
                with _connected(address, None, log_path, verbose, num_cpus, stops, ray_data):
                    yield
            else:
                with _private_cluster(log_path, verbose, num_cpus, stops, ray_data):
                    yield
        except BaseException:
            if stops is None or stops.received is None:
                raise
            # stopped: RunStopped, or whatever the code it interrupted made of it
    if stops is not None and stops.received is not None:
        print(f"stopped by {signal.Signals(stops.received).name}", file=sys.stderr, flush=True)
        raise SystemExit(128 + stops.received)


@contextlib.contextmanager
def _private_cluster(
    log_path: Path, verbose: bool, num_cpus: int | None, stops: _StopSignals | None, ray_data: bool = True
) -> Iterator[None]:
    """A private cluster in a fresh 0700 parent, reaped if this process dies; its logs kept at the end."""
    parent = make_private_dir()
    reaper = _start_reaper(str(parent))
    try:
        with private_cluster_env(parent):
            with _connected(None, ray_temp_dir(parent), log_path, verbose, num_cpus, stops, ray_data):
                yield
    finally:
        try:
            keep_logs(parent, log_path)
        finally:
            if reaper is not None:
                os.close(reaper)  # the reaper then ends whatever of the cluster is left


@contextlib.contextmanager
def _connected(
    address: str | None,
    temp_dir: Path | None,
    log_path: Path,
    verbose: bool,
    num_cpus: int | None,
    stops: _StopSignals | None,
    ray_data: bool = True,
) -> Iterator[None]:
    """``ray.init`` ... ``ray.shutdown``, quiet unless ``verbose``; the stop handlers re-installed after init."""
    import ray

    with contextlib.ExitStack() as quiet:
        if not verbose:
            quiet.enter_context(_std_streams_to_file(log_path / "driver.log"))
            quiet.enter_context(_ray_logger_to_file(log_path / "driver.log", ray_data))
        try:
            _init_ray(address, temp_dir, verbose, num_cpus)
            if stops is not None:
                stops.install()  # Ray's core worker put its own (abort on SIGTERM) in place
            yield
        finally:
            if stops is not None:
                stops.cleaning_up()
            ray.shutdown()  # also after a half-started init


def _start_reaper(parent: str) -> int | None:
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
            [sys.executable, "-m", "jobs.reaper", parent],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    return write_end
