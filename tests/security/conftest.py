"""Security fixtures: a second, unprivileged local user, and a way to run Python as that user.

The user ``aerialdet-other`` (with a home directory) is created with
``useradd`` for the test session and removed at the end; the tests that need
it are skipped, with the reason, when the tests do not run as root.  The
other user runs the same code and packages as the tests: this worktree and
the virtual environment's site-packages on ``PYTHONPATH``, under an
interpreter of the same Python version that the user may execute (the
venv's own may live in root's private home, e.g. pyenv under ``/root``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OTHER_USER = "aerialdet-other"


@dataclass(frozen=True)
class OtherUser:
    """An unprivileged local user and the interpreter it runs aerialdet with."""

    name: str
    uid: int
    gid: int
    home: Path
    python: str

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment of this user: its home, the worktree and the venv's packages importable."""
        path = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "PYTHONPATH": path,
            "LANG": "C.UTF-8",
            **extra,
        }

    def popen(self, argv: Sequence[str], *, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """Start ``argv`` as this user (its uid and gid, no supplementary group), from the worktree root."""
        return subprocess.Popen(
            list(argv),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=env or self.env(),
            cwd=ROOT,
            **kwargs,
        )

    def python_code(
        self, code: str, *args: str, timeout_s: float = 180, env: dict[str, str] | None = None
    ) -> str:
        """Run ``python -c code args...`` as this user; returns its stdout (fails the test on a crash)."""
        with self.popen(
            [self.python, "-c", code, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            out, err = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, f"{code[:200]}\nexit {proc.returncode}\n{err[-3000:]}"
        return out


def _run_root(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _remove_user(name: str) -> None:
    subprocess.run(
        ["userdel", "--force", "--remove", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _python_for(uid: int, gid: int) -> str | None:
    """An interpreter of this Python version that ``uid`` may run: this one, else the system's."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"],
                user=uid,
                group=gid,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin", "HOME": "/"},
                capture_output=True,
                text=True,
            )
        except OSError:  # not executable by that user (e.g. under root's 0700 home)
            continue
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    """The unprivileged user ``aerialdet-other`` with a home directory, created for the session."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local user (useradd) needs root; these tests run as root in CI")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel not installed: cannot create a second local user")
    _remove_user(OTHER_USER)  # left by an interrupted earlier session
    _run_root(["useradd", "--create-home", "--shell", "/bin/sh", OTHER_USER])
    opened = _let_others_traverse([ROOT, Path(sysconfig.get_paths()["purelib"])])
    try:
        import pwd

        entry = pwd.getpwnam(OTHER_USER)
        python = _python_for(entry.pw_uid, entry.pw_gid)
        if python is None:
            pytest.skip(
                f"no Python {sys.version_info.major}.{sys.version_info.minor} that {OTHER_USER} may run"
            )
        yield OtherUser(OTHER_USER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), python)
    finally:
        for folder, mode in opened:
            folder.chmod(mode)
        _remove_user(OTHER_USER)


def _let_others_traverse(paths: Sequence[Path]) -> list[tuple[Path, int]]:
    """Give others search (x, not read) on each folder above ``paths`` that lacks it; returns what to restore.

    A checkout (and its virtual environment) under a private home, e.g.
    ``/root`` (0700), is out of the other user's reach; traversal alone lets
    it import the code and packages, and lists nothing.  The modes are put
    back when the session ends.
    """
    import stat

    changed: list[tuple[Path, int]] = []
    for path in paths:
        for folder in [path.resolve(), *path.resolve().parents]:
            mode = stat.S_IMODE(folder.stat().st_mode)
            if not mode & stat.S_IXOTH and all(folder != f for f, _ in changed):
                folder.chmod(mode | stat.S_IXOTH)
                changed.append((folder, mode))
    return changed
