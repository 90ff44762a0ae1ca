"""A Ray cluster of separate simulated hosts: a head and a worker, each in a network namespace of its own.

The head namespace and the worker namespace are joined by one veth pair on a
private link (``10.231.0.1`` head, ``10.231.0.2`` worker); neither has any
other interface but its own loopback, so all traffic of the cluster stays in
the two namespaces made here.  The worker's raylet runs in a mount namespace
of its own in which ``hidden`` (a folder on this machine) is covered by an
empty tmpfs: what the test puts under ``hidden`` is on the head only.  An S3
server (moto) listens on the head's veth address, so both hosts reach it.

The driver runs in the head namespace (``run_on_head``), as a user logged in
on the head would.  Teardown kills every process in the two namespaces
(``ip netns pids``: all of them were started here) and deletes them, also
when the set-up failed half way.  Needs root and ``ip`` (iproute2), as in CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]
HEAD_IP, WORKER_IP = "10.231.0.1", "10.231.0.2"
GCS_PORT, CLIENT_PORT, S3_PORT = 6379, 10001, 5000
RAY = str(Path(sys.executable).with_name("ray"))
S3_ENV = {
    "AWS_ENDPOINT_URL": f"http://{HEAD_IP}:{S3_PORT}",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class NetnsHosts:
    """The two simulated hosts.

    Attributes:
        head_ns, worker_ns: the network namespaces' names.
        hidden: a folder visible on the head (and here), covered by an empty tmpfs on the worker.
        temp: this cluster's scratch folder (Ray's temp dirs, logs).
        procs: the processes started here (ray start --block, the S3 server).
    """

    head_ns: str
    worker_ns: str
    hidden: Path
    temp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The head's GCS address, as the driver and the worker join it."""
        return f"{HEAD_IP}:{GCS_PORT}"

    def env(self) -> dict[str, str]:
        """The environment of every process here: this checkout first on the path, the S3 server, no telemetry."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
        return {
            **keep,
            **S3_ENV,
            "PYTHONPATH": str(ROOT),
            # token auth, as the deploy docs ask; a token of this cluster only (never ~/.ray/auth_token)
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.temp / "token"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_enable_metrics_collection": "0",
        }

    def run_on_head(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in the head namespace (cwd: this checkout); output captured as text."""
        return self.run_in(self.head_ns, args, timeout_s)

    def run_in(self, ns: str, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in namespace ``ns`` with this machine's mounts (``hidden`` visible); output as text."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def start(self, ns: str, args: Sequence[str], log_name: str) -> None:
        """Start ``args`` in namespace ``ns`` in the background, its output in ``temp/log_name``."""
        log = open(self.temp / log_name, "wb")  # noqa: SIM115  (the child holds it; closed with us)
        self.procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *args],
                env=self.env(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def ray_logs(self, pattern: str) -> str:
        """The tail of each of Ray's session log files matching ``pattern`` (for a failed test's message)."""
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.temp.glob(f"ray/session_*/logs/{pattern}"))
        )

    def logs(self) -> str:
        """The tail of each background process's log (for a failed set-up's message)."""
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in sorted(self.temp.glob("*.log"))
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _ray_node(ns: str, temp: Path, ip: str, head: bool) -> list[str]:
    """``ray start --block`` for one host: 1 CPU, a small object store, no dashboard."""
    args = [
        RAY,
        "start",
        "--block",
        f"--node-ip-address={ip}",
        "--num-cpus=1",
        f"--object-store-memory={80 * 1024**2}",
        "--disable-usage-stats",
    ]
    if head:
        args += [
            "--head",
            f"--port={GCS_PORT}",
            f"--ray-client-server-port={CLIENT_PORT}",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ]
    else:
        args += [f"--address={HEAD_IP}:{GCS_PORT}"]
    return args


_WAIT_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.time() + float(sys.argv[2])
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
    time.sleep(1)
alive = sum(n["Alive"] for n in ray.nodes())
ray.shutdown()
sys.exit(0 if alive >= 2 else 1)
"""


def _wait_for_cluster(hosts: NetnsHosts, worker: list[str], timeout_s: float) -> None:
    """Until both nodes are alive (a driver in the head namespace asks the GCS).

    ``ray start`` gives a raylet 30 s (fixed in Ray) to register: on a loaded
    machine the worker's can miss it, and is then started again (up to 3 times).
    """
    deadline, starts = time.time() + timeout_s, 1
    while time.time() < deadline:
        if any(p.poll() is not None for p in hosts.procs[:2]):
            break  # the S3 server or the head died: no point waiting
        if hosts.procs[-1].poll() is not None and starts < 3:
            _kill_processes(hosts.worker_ns)  # what the failed start left, then again
            hosts.start(hosts.worker_ns, worker, f"worker{starts}.log")
            starts += 1
        done = hosts.run_on_head([sys.executable, "-c", _WAIT_NODES, hosts.address, "60"], timeout_s=120)
        if done.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(
        f"the namespaced Ray cluster did not come up within {timeout_s:.0f} s:\n{hosts.logs()}"
    )


def _kill_processes(ns: str) -> None:
    """SIGTERM, then SIGKILL, every process in namespace ``ns`` (all of them started here)."""
    for sig, pause_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        pids = [int(p) for p in listed.stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + pause_s
        while pids and time.time() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
            time.sleep(0.2)


def _kill_namespace(ns: str) -> None:
    """Kill every process in namespace ``ns``, then delete it."""
    _kill_processes(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def can_make_namespaces() -> str | None:
    """Why this machine cannot run the fixture (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs `ip` (iproute2) and `unshare` (util-linux)"
    return None


@contextmanager
def netns_hosts(timeout_s: float = 420.0) -> Iterator[NetnsHosts]:
    """A head and a worker host in namespaces of their own, an S3 server on the head; all gone afterwards."""
    tag = f"{os.getpid() % 100000}"
    temp = Path(tempfile.mkdtemp(prefix="adns"))  # short: Ray's socket paths live under it
    hosts = NetnsHosts(f"adh{tag}", f"adw{tag}", temp / "hidden", temp)
    hosts.hidden.mkdir()
    (temp / "token").write_text(secrets.token_hex(32))
    (temp / "token").chmod(0o600)
    made: list[str] = []
    try:
        for ns in (hosts.head_ns, hosts.worker_ns):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"{hosts.head_ns}v", "type", "veth", "peer", "name", f"{hosts.worker_ns}v")
        for ns, ip in ((hosts.head_ns, HEAD_IP), (hosts.worker_ns, WORKER_IP)):
            _ip("link", "set", f"{ns}v", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", f"{ns}v")
            _ip("-n", ns, "link", "set", f"{ns}v", "up")
        s3 = [sys.executable, "-c", "from moto.server import main; main()", "-H", HEAD_IP, "-p", str(S3_PORT)]
        hosts.start(hosts.head_ns, s3, "s3.log")
        hosts.start(hosts.head_ns, _ray_node(hosts.head_ns, temp / "ray", HEAD_IP, head=True), "head.log")
        # the worker: its own mount namespace, where `hidden` is an empty tmpfs
        cover = f'mount -t tmpfs -o size=1m aerialdet-hidden {hosts.hidden} && exec "$@"'
        worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", cover, "sh"]
        worker += _ray_node(hosts.worker_ns, temp / "ray", WORKER_IP, head=False)
        hosts.start(hosts.worker_ns, worker, "worker.log")
        _wait_for_cluster(hosts, worker, timeout_s)
        yield hosts
    finally:
        for ns in reversed(made):
            _kill_namespace(ns)
        for proc in hosts.procs:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
