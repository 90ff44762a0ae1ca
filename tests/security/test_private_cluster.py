"""A private cluster is closed to the machine's other users (issue 25).

Before: Ray's temp dir (and its ``session_*``, ``logs``, ``sockets``) was
0777 without the sticky bit, so another user could list it, re-point
``session_latest`` (and have a root-only directory moved into ``OUT/_logs``)
and plant links in the logs; the token was ``~/.ray/auth_token``, 0644 in a
0755 home, so that user could read it and join the running GCS, which
listened on all interfaces, as did the raylet, workers and agents; the kept
logs under ``OUT/_logs`` stayed 0777.

One private cluster of user A (root, with a 0755 home as the audit found)
runs in ``ray_session``; user B (``aerialdet-other``, created for the test)
tries each of those while it runs.  Each test checks one finding.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.ray_session import ray_session

pytestmark = pytest.mark.integration
LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

# B tries to join the GCS at argv[1] with no token, then with each token of argv[2] (JSON)
JOIN_PROBE = """
import json, os, sys
from ray._raylet import AuthenticationTokenLoader, Config, GcsClient

def join(token):
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token" if token else "disabled"
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)
        return "joined"
    except Exception as exc:
        return f"refused: {type(exc).__name__}"

tokens = json.loads(sys.argv[2])
print(json.dumps({"none": join(None), **{name: join(tok) for name, tok in tokens.items()}}))
"""


def _as_other(other_user, argv: list[str]) -> tuple[int, str]:
    with other_user.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.strip()


def _cluster_listeners(temp_dir: Path) -> dict[str, set[str]]:
    """Listening addresses of this driver and of every process of the cluster in ``temp_dir`` (and their children)."""
    import psutil

    procs = {psutil.Process()}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(temp_dir) in " ".join(proc.info["cmdline"] or ()):
                procs.add(proc)
                procs.update(proc.children(recursive=True))
        except psutil.Error:
            continue
    found: dict[str, set[str]] = {}
    for proc in procs:
        try:
            name = f"{proc.pid} {proc.name()}"
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.setdefault(name, set()).add(conn.laddr.ip)
        except psutil.Error:
            continue
    return found


def _wait_for_agents(temp_dir: Path, timeout_s: float = 90) -> dict[str, set[str]]:
    deadline = time.time() + timeout_s
    while True:
        found = _cluster_listeners(temp_dir)
        names = " ".join(found)
        if ("DashboardAgent" in names and "RuntimeEnvAgent" in names) or time.time() > deadline:
            return found
        time.sleep(1)


def _tree_entries(root: Path) -> list[tuple[str, int, bool]]:
    """(path, mode, is_link) of everything under ``root``, links not followed."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            entries.append((str(path), st.st_mode, stat.S_ISLNK(st.st_mode)))
    return entries


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    """A 0755 folder under /tmp that the other user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aerialdet-sec-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def attacked_run(other_user, shared_tmp) -> dict[str, Any]:
    """A's private cluster runs while B lists, reads, plants links and joins; what B got, and what A kept."""
    import ray

    home = shared_tmp / "home-a"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    victim_dir = shared_tmp / "victim"  # root-only: must never move into OUT
    (victim_dir / "logs").mkdir(parents=True)
    (victim_dir / "logs" / "root-only.log").write_text("root's own log\n")
    os.chmod(victim_dir, 0o700)
    victim_file = shared_tmp / "root-only.txt"
    victim_file.write_text("root only\n")
    os.chmod(victim_file, 0o600)
    out = shared_tmp / "out"
    saved = {
        name: os.environ.get(name)
        for name in ("HOME", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
    }
    for name in saved:
        os.environ.pop(name, None)
    os.environ["HOME"] = str(home)
    got: dict[str, Any] = {"victim_dir": victim_dir, "victim_file": victim_file, "out": out}
    try:
        with ray_session(None, out / "_logs", num_cpus=1):
            node = ray._private.worker._global_node
            temp = Path(node.get_temp_dir_path())
            session = Path(node.get_session_dir_path())
            logs = Path(node.get_logs_dir_path())

            @ray.remote
            def pid() -> int:
                return os.getpid()

            ray.get(pid.remote())  # a worker runs too
            got["listeners"] = _wait_for_agents(temp)
            got["listed"] = {str(p): _as_other(other_user, ["ls", str(p)]) for p in (temp, session, logs)}
            candidates = [home / ".ray" / "auth_token", temp.parent / "token", temp / "token"]
            if os.environ.get("RAY_AUTH_TOKEN_PATH"):
                candidates.append(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
            got["read"] = {str(p): _as_other(other_user, ["cat", str(p)]) for p in candidates}
            real = next(p for p in reversed(candidates) if p.is_file()).read_text().strip()
            stolen = {p: text for p, (code, text) in got["read"].items() if code == 0 and text}
            got["joined"] = json.loads(
                other_user.python_code(
                    JOIN_PROBE, node.gcs_address, json.dumps({"control (the real token)": real, **stolen})
                ).strip()
            )
            got["planted"] = {
                "session_latest": _as_other(
                    other_user, ["ln", "-sfn", str(victim_dir), str(temp / "session_latest")]
                ),
                "link in logs": _as_other(
                    other_user, ["ln", "-s", str(victim_file), str(logs / "planted.log")]
                ),
            }
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    got["kept"] = _tree_entries(out / "_logs")
    got["logs listed after"] = _as_other(other_user, ["ls", str(out / "_logs")])
    got["home .ray"] = sorted(p.name for p in (home / ".ray").iterdir()) if (home / ".ray").is_dir() else []
    return got


def test_other_user_cannot_enter_the_temp_dir(attacked_run):
    for path, (code, text) in attacked_run["listed"].items():
        assert code != 0 and "Permission denied" in text, (path, text)


def test_other_user_can_read_no_token(attacked_run):
    for path, (code, text) in attacked_run["read"].items():
        assert code != 0, f"B read {path}"
    assert attacked_run["home .ray"] == []  # nothing written to A's ~/.ray


def test_other_user_cannot_join_the_cluster(attacked_run):
    joined = attacked_run["joined"]
    assert joined.pop("control (the real token)") == "joined"  # the probe does join with the token
    assert joined == {"none": joined["none"]}, joined  # B read no token to try
    assert all(result.startswith("refused") for result in joined.values()), joined


def test_cluster_listens_on_loopback_only(attacked_run):
    listeners = attacked_run["listeners"]
    names = " ".join(listeners)
    assert "gcs_server" in names and "raylet" in names and "DashboardAgent" in names, listeners
    wide = {name: ips - LOOPBACK_IPS for name, ips in listeners.items() if ips - LOOPBACK_IPS}
    assert wide == {}, wide


def test_planted_links_change_nothing(attacked_run):
    for what, (code, text) in attacked_run["planted"].items():
        assert code != 0, f"B planted {what}: {text}"
    victim_dir, victim_file = attacked_run["victim_dir"], attacked_run["victim_file"]
    assert (victim_dir / "logs" / "root-only.log").read_text() == "root's own log\n"
    assert victim_file.read_text() == "root only\n"
    links = [path for path, _, is_link in attacked_run["kept"] if is_link]
    assert links == []


def test_kept_logs_are_private(attacked_run):
    kept = attacked_run["kept"]
    assert any("raylet" in path for path, _, _ in kept)  # Ray's logs were kept
    open_to_others = [(path, oct(mode)) for path, mode, _ in kept if stat.S_IMODE(mode) & 0o077]
    assert open_to_others == []
    code, text = attacked_run["logs listed after"]
    assert code != 0 and "Permission denied" in text, text
