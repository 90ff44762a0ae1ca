"""A private Ray cluster that no other user of the machine can enter, join or tamper with.

Layout of one private cluster (``make_private_dir``)::

    /tmp/aerialdet-ray-XXXXXXXX/   0700, made by mkdtemp: nobody else can traverse it
        token                      0600, a fresh secrets.token_hex(32) for this cluster only
        r/                         Ray's temp dir (Ray chmods it and its session_* 0777: harmless
                                   inside a 0700 parent); short, as Ray's unix sockets live in it
                                   and their paths must stay <= 107 bytes

``private_cluster_env`` turns token authentication on with that token
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``: never ``~/.ray/auth_token``)
and puts the node on 127.0.0.1, so GCS, raylet, object manager, workers and
the dashboard, runtime-env and metrics agents listen on loopback only.
``keep_logs`` copies the cluster's logs out at the end without following a
symlink: the kept copy is 0700 directories and 0600 files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "aerialdet-ray-"
RAY_TEMP_NAME = "r"  # Ray's temp dir inside the private parent: short, for the unix socket paths
TOKEN_NAME = "token"
LOOPBACK = "127.0.0.1"
# Idle workers a node keeps for the next task.  Ray keeps as many as its *available* CPUs and kills
# the rest after 1 s idle; a CPU model actor holds all but 0.5 CPU of its node, so every read,
# header and finish task used to start a fresh worker (imports included, 1.5-3 CPU s): 40 workers
# started in 10 minutes of a 120-scene run, 3.75 s a tile (bench/RESULTS.md, "Worker churn").
IDLE_WORKERS_ENV = "RAY_num_workers_soft_limit"


def idle_workers_kept() -> str:
    """``RAY_num_workers_soft_limit`` for a node of this machine: its cores plus the task kinds (4)."""
    return str((os.cpu_count() or 1) + 4)


_PRIVATE_DIR_MODE = 0o700
_PRIVATE_FILE_MODE = 0o600


def make_private_dir() -> Path:
    """Make the 0700 parent of a private cluster (under /tmp: Ray's unix socket paths must be short)."""
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp" if os.path.isdir("/tmp") else None))


def ray_temp_dir(parent: Path) -> Path:
    """Ray's own temp dir inside the private parent ``parent`` (Ray creates it)."""
    return parent / RAY_TEMP_NAME


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file ``path``, mode 0600; never through an existing file or link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _set_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _refresh_ray_config() -> None:
    """Make Ray's C++ config and token cache in this process read the environment again."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # Cython, no stubs

    Config.initialize("")  # first the config (auth mode), then the cached token: Ray's own order
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def private_cluster_env(parent: Path) -> Iterator[None]:
    """Set this process's environment (inherited by the cluster's processes) for a private cluster.

    A fresh token goes into ``parent/token`` (0600) and token authentication
    is on; ``RAY_AUTH_TOKEN`` (which would win over the file) is unset.  The
    node's address is 127.0.0.1: Ray resolves a loopback ``node_ip_address``
    to the host's address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is
    off, which it reads when ``ray`` is imported, so the module's flag is set
    too.  Everything is restored on exit (call it around ``ray.init`` ...
    ``ray.shutdown``).

    Args:
        parent: the private 0700 parent from ``make_private_dir``.
    """
    import ray._private.ray_constants as ray_constants

    token_path = parent / TOKEN_NAME
    write_private(token_path, secrets.token_hex(32))
    changes: dict[str, str | None] = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_AUTH_TOKEN": None,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # a single-machine cluster on loopback
        IDLE_WORKERS_ENV: os.environ.get(IDLE_WORKERS_ENV) or idle_workers_kept(),
    }
    saved = {name: os.environ.get(name) for name in changes}
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    _set_environ(changes)
    ray_constants.ENABLE_RAY_CLUSTER = False
    _refresh_ray_config()
    try:
        yield
    finally:
        _set_environ(saved)
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        _refresh_ray_config()


def session_dir(temp_dir: Path) -> Path | None:
    """The newest real ``session_*`` directory of a Ray temp dir; ``session_latest`` is never followed."""
    try:
        with os.scandir(temp_dir) as entries:
            names = [
                e.name
                for e in entries
                if e.name.startswith("session_")
                and e.name != "session_latest"
                and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return None
    return temp_dir / max(names) if names else None  # names start with the session's start time


def _copy_file_private(src: str, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            return
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _PRIVATE_FILE_MODE)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(source, out)


def copy_tree_private(src: Path, dst: Path) -> None:
    """Copy the directories and regular files under ``src`` to a new ``dst`` as 0700 / 0600.

    Symbolic links, sockets and pipes are skipped, never followed.
    """
    dst.mkdir(mode=_PRIVATE_DIR_MODE)
    os.chmod(dst, _PRIVATE_DIR_MODE)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                copy_tree_private(Path(entry.path), dst / entry.name)
            elif entry.is_file(follow_symlinks=False):
                _copy_file_private(entry.path, dst / entry.name)


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def make_private_log_dir(log_dir: Path) -> None:
    """Create ``log_dir`` (parents as needed) and make it 0700: only this user reads a run's logs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # someone else's folder: left as it is
        os.chmod(log_dir, _PRIVATE_DIR_MODE)


def keep_logs(parent: Path, log_dir: Path) -> None:
    """Copy the private cluster's logs to ``log_dir/ray/<parent's name>``; delete ``parent``.

    The session directory is found by listing ``session_*`` directories (a
    ``session_latest`` link is never resolved) and nothing is copied through
    a link.  A failed copy is a warning: it must not hide the run's result.
    """
    session = session_dir(ray_temp_dir(parent))
    try:
        if session is not None and _is_real_dir(session / "logs"):
            make_private_log_dir(log_dir)
            kept = log_dir / "ray"
            kept.mkdir(mode=_PRIVATE_DIR_MODE, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(kept, _PRIVATE_DIR_MODE)
            # one folder per run: runs sharing an output keep each other's logs
            copy_tree_private(session / "logs", kept / parent.name)
    except OSError as exc:  # a full disk must not hide the run's own result
        print(f"warning: Ray's logs could not be kept under {log_dir}: {exc}", file=sys.stderr)
    shutil.rmtree(parent, ignore_errors=True)
