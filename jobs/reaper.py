"""Ends a private Ray cluster whose driver died: ``python -m jobs.reaper PARENT`` (started by ``ray_session``).

The reaper runs in its own session with the read end of a pipe as stdin; the
driver holds the write end.  When the driver exits (cleanly, or killed with
SIGKILL) the pipe closes, and the reaper kills every process whose command
line names the cluster's private directory (raylet, GCS, monitor, log
monitor) and every process those started (workers and the dashboard and
runtime-env agents, which retitle themselves ``ray::...``), then deletes the
directory.  A killed run so leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import psutil


def processes_naming(text: str) -> list[int]:
    """PIDs of this user's processes (this one aside) whose command line contains ``text``."""
    pids = []
    uid = os.getuid()
    for proc in psutil.process_iter(["cmdline", "uids"]):
        if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != uid:
            continue
        cmdline = " ".join(proc.info["cmdline"] or ())  # None or empty: no access, or a zombie
        if text in cmdline:
            pids.append(proc.pid)
    return pids


def cluster_processes(text: str) -> list[psutil.Process]:
    """The processes naming ``text`` in their command line, and all their descendants."""
    found: dict[int, psutil.Process] = {}
    for pid in processes_naming(text):
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                found.setdefault(p.pid, p)
        except psutil.Error:  # gone meanwhile
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _signal_all(procs: list[psutil.Process], kill: bool) -> None:
    for proc in procs:
        try:
            proc.kill() if kill else proc.terminate()  # psutil refuses a PID reused by another process
        except psutil.Error:
            pass


def reap(temp_dir: str, *, grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process of the cluster in ``temp_dir``; delete it. Returns how many.

    The processes are found once, before any is signalled: a worker whose
    raylet dies is re-parented and no longer found as its child.
    """
    named = temp_dir.rstrip("/") + "/"  # inside it: not the reaper's own command line
    procs = cluster_processes(named)
    _signal_all(procs, kill=False)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    _signal_all(alive, kill=True)
    psutil.wait_procs(alive, timeout=grace_s)
    late = cluster_processes(named)  # started while the others stopped
    _signal_all(late, kill=True)
    psutil.wait_procs(late, timeout=grace_s)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(procs)


def main() -> None:
    """Wait for the driver's pipe to close, then reap the cluster."""
    temp_dir = sys.argv[1]
    try:
        sys.stdin.buffer.read()  # returns at EOF: the driver has exited
    except OSError:
        pass
    # a clean exit already shut the cluster down and kept its logs; give it a moment
    time.sleep(1.0)
    reap(temp_dir)


if __name__ == "__main__":
    main()
