"""Two users run ``detect`` on one machine at once: neither can enter the other's cluster, token or logs.

User A is root (with a 0755 home, as the audit found), user B the
unprivileged ``aerialdet-other``; each runs ``python -m jobs.detect`` with the
stand-in model on its own scenes into its own OUT, at the same time.  While
both run, B tries to list A's cluster directory, read A's token (in the
private directory and in ``~/.ray``) and list A's ``OUT/_logs``; ``nobody``
tries the same on both users' (root reads anything, so A's side of B's
files is checked as a third user).  Both runs succeed.

Before: A's temp dir was 0777 and its token ``~/.ray/auth_token`` 0644, so B
listed the one and read the other; ``OUT/_logs`` was 0755.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_until as _wait
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args
from tests.security.test_signal_stop import _working

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _try(argv: list[str], user: int | str) -> tuple[int, str]:
    """Run a quick command (``ls``, ``cat``) as ``user``; its exit status and output."""
    proc = subprocess.run(
        argv,
        user=user,
        group=user if isinstance(user, int) else None,
        extra_groups=[],
        capture_output=True,
        text=True,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _new_parents(before: set[Path]) -> dict[int, Path]:
    """New private cluster directories under /tmp, by owner uid."""
    found = {}
    for path in set(Path("/tmp").glob("aerialdet-ray-*")) - before:
        try:
            found[path.stat().st_uid] = path
        except OSError:  # gone meanwhile
            continue
    return found


def _scenes(folder: Path) -> None:
    for i in range(4):
        write_scene(folder / f"s{i}.tif", [(10, 10, 30, 30, 0)], width=1500, height=1500)


def test_two_users_at_once_cannot_reach_each_others_cluster(other_user):
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    shared = Path(tempfile.mkdtemp(prefix="aerialdet-sec-", dir="/tmp"))
    os.chmod(shared, 0o755)
    a, b = shared / "a", shared / "b"
    home_a = a / "home"
    home_a.mkdir(parents=True, mode=0o755)
    for path in (a, home_a):
        os.chmod(path, 0o755)
    _scenes(a / "in")
    _scenes(b / "in")
    for path in [b, *b.rglob("*")]:
        os.chown(path, other_user.uid, other_user.gid)
    env_a = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env_a.update(HOME=str(home_a), PYTHONPATH=str(ROOT))
    before = set(Path("/tmp").glob("aerialdet-ray-*"))
    args = {who: standin_detect_args(str(d / "in"), str(d / "out")) for who, d in (("a", a), ("b", b))}
    runs = {
        "a": subprocess.Popen(
            [sys.executable, "-m", "jobs.detect", *args["a"]],
            cwd=ROOT,
            env=env_a,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "b": other_user.popen(
            [other_user.python, "-m", "jobs.detect", *args["b"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    try:
        assert _wait(lambda: len(_new_parents(before)) == 2, 240), _new_parents(before)
        assert _wait(lambda: all(_working(run.pid) for run in runs.values()), 240), "a run did not start work"
        parents = _new_parents(before)
        parent_a, parent_b = parents[0], parents[other_user.uid]
        assert all(run.poll() is None for run in runs.values()), (
            "a run ended too soon; make the scenes larger"
        )
        b_on_a = {
            "list A's cluster dir": _try(["ls", str(parent_a)], other_user.uid),
            "read A's token": _try(["cat", str(parent_a / "token")], other_user.uid),
            "read A's ~/.ray/auth_token": _try(["cat", str(home_a / ".ray" / "auth_token")], other_user.uid),
            "list A's OUT/_logs": _try(["ls", str(a / "out" / "_logs")], other_user.uid),
        }
        third_on_b = {
            "list B's cluster dir": _try(["ls", str(parent_b)], nobody),
            "read B's token": _try(["cat", str(parent_b / "token")], nobody),
            "list B's OUT/_logs": _try(["ls", str(b / "out" / "_logs")], nobody),
        }
        running_during_probes = all(run.poll() is None for run in runs.values())
        results = {who: (run.wait(timeout=600), *run.communicate()) for who, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()
    try:
        assert running_during_probes, "a run ended during the probes; make the scenes larger"
        for who, (code, stdout, stderr) in results.items():
            assert code == 0 and "4 scene(s) done" in stdout, (who, stdout[-1500:], stderr[-3000:])
        assert {what: got for what, got in b_on_a.items() if got[0] == 0} == {}
        assert {what: got for what, got in third_on_b.items() if got[0] == 0} == {}
        assert not parent_a.exists() and not parent_b.exists()  # gone after the runs
        for d, owner in ((a, 0), (b, other_user.uid)):
            logs = d / "out" / "_logs"
            st = logs.stat()
            assert (st.st_uid, oct(st.st_mode & 0o777)) == (owner, "0o700")
            open_to_others = [str(p) for p in logs.rglob("*") if os.lstat(p).st_mode & 0o077]
            assert open_to_others == []
        assert not (home_a / ".ray").exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
