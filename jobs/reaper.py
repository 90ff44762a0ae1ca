"""Ends a private Ray cluster whose driver died: ``python -m jobs.reaper TEMP_DIR`` (started by ``ray_session``).

The reaper runs in its own session with the read end of a pipe as stdin; the
driver holds the write end.  When the driver exits (cleanly, or killed with
SIGKILL) the pipe closes, and the reaper kills every process whose command
line names the cluster's private temp directory (raylet, GCS, dashboard and
runtime-env agents, workers), then deletes the directory.  A killed run so
leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path


def processes_naming(text: str) -> list[int]:
    """PIDs of processes whose command line contains ``text`` (Linux ``/proc``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def reap(temp_dir: str, *, grace_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process naming ``temp_dir``; delete it. Returns how many were signalled."""
    signalled = 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_naming(temp_dir)  # afresh for SIGKILL: a PID freed meanwhile may be reused
        signalled = signalled or len(pids)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return signalled


def main() -> None:
    """Wait for the driver's pipe to close, then reap the cluster."""
    temp_dir = sys.argv[1]
    try:
        sys.stdin.buffer.read()  # returns at EOF: the driver has exited
    except OSError:
        pass
    # a clean exit already shut the cluster down and moved its logs; give it a moment
    time.sleep(1.0)
    if Path("/proc").is_dir():  # the temp dir may be gone while processes naming it live on
        reap(temp_dir)


if __name__ == "__main__":
    main()
