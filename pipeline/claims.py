"""Scene claims: concurrent or restarted drivers on one output share the work instead of repeating it.

Before a run works on a scene it writes ``_claim.<output name>.json`` in the
output store, once (``OutputStore.write_bytes_once``: a hard link locally,
``If-None-Match: *`` on S3), holding its run id, host, pid and a lease
expiry.  A second driver that finds a live claim of another run leaves the
scene to it.  A claim is taken over when its lease has expired, or at once
when its driver ran on this host and is gone (a killed driver re-run on the
same machine resumes without waiting).  The driver renews its claims while
the run goes on and releases each one (an expired claim) when the scene is
written.

Claims make double work rare, not impossible (two drivers taking over the
same expired claim at once both do the scene); the output stays exactly
once because each scene's file is written once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

from pipeline.storage import OutputStore

CLAIM_PREFIX = "_claim."
DEFAULT_LEASE_S = 300.0


@dataclass(frozen=True, slots=True)
class Claim:
    """Who works on a scene, until when.

    Attributes:
        run_id: the claiming run.
        host: its driver's host name.
        pid: its driver's process id.
        expires_at: UNIX time after which anyone may take the scene over.
    """

    run_id: str
    host: str
    pid: int
    expires_at: float

    def is_live(self, now: float) -> bool:
        """Unexpired, and (when it was made on this host) its driver still runs."""
        if now >= self.expires_at:
            return False
        if self.host == socket.gethostname():
            return _pid_alive(self.pid)
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def claim_name(output_name: str) -> str:
    """The claim file of a scene whose detections are ``output_name``."""
    return f"{CLAIM_PREFIX}{output_name}.json"


def _encode(claim: Claim) -> bytes:
    return json.dumps(asdict(claim)).encode()


def read_claim(store: OutputStore, output_name: str) -> Claim | None:
    """The claim on a scene, or None when there is none or it cannot be parsed (treated as expired)."""
    name = claim_name(output_name)
    if not store.exists(name):
        return None
    try:
        data = json.loads(store.read_bytes(name))
        return Claim(str(data["run_id"]), str(data["host"]), int(data["pid"]), float(data["expires_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def try_claim(
    store: OutputStore, output_name: str, run_id: str, *, lease_s: float = DEFAULT_LEASE_S
) -> Claim | None:
    """Claim a scene for ``run_id``.

    Returns:
        None when the claim is this run's now; else the live claim of the
        run that holds the scene.
    """
    now = time.time()
    mine = _mine(run_id, now + lease_s)
    if store.write_bytes_once(claim_name(output_name), _encode(mine)):
        return None
    held = read_claim(store, output_name)
    if held is not None and held.run_id != run_id and held.is_live(now):
        return held
    store.write_bytes_once(claim_name(output_name), _encode(mine), replace=True)  # expired, dead or ours
    return None


_HOST = socket.gethostname()


def _mine(run_id: str, expires_at: float) -> Claim:
    """This process's claim for ``run_id``."""
    return Claim(run_id, _HOST, os.getpid(), expires_at)


def _rewrite_if_ours(store: OutputStore, output_name: str, run_id: str, expires_at: float) -> bool:
    held = read_claim(store, output_name)
    if held is not None and held.run_id != run_id:
        return False  # another run took the scene over after our lease lapsed: leave its claim alone
    store.write_bytes_once(claim_name(output_name), _encode(_mine(run_id, expires_at)), replace=True)
    return True


def renew(store: OutputStore, output_name: str, run_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Extend this run's claim on a scene by ``lease_s`` from now; False (nothing written) when another run holds it."""
    return _rewrite_if_ours(store, output_name, run_id, time.time() + lease_s)


def release(store: OutputStore, output_name: str, run_id: str, *, ours: bool = False) -> None:
    """Give a scene up (written, or failed): this run's claim expires now.

    Args:
        store: the output store.
        output_name: the scene's detections file name.
        run_id: the run giving it up.
        ours: the caller knows its lease has not lapsed, so no other run can
            hold the claim: it is rewritten without being read first.
    """
    if ours:
        store.write_bytes_once(claim_name(output_name), _encode(_mine(run_id, 0.0)), replace=True)
        return
    _rewrite_if_ours(store, output_name, run_id, 0.0)


class ClaimKeeper:
    """Renews a run's claims every third of a lease from a daemon thread, until ``stop()``.

    Renewal runs beside the run from the moment the claims are taken (not
    when the first results come back), and a failed renewal is retried at the
    next tick instead of ending the run.

    Args:
        store: the output store.
        run_id: the run holding the claims.
        lease_s: lease length.
    """

    def __init__(self, store: OutputStore, run_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.store, self.run_id, self.lease_s = store, run_id, lease_s
        # each held claim -> when its lease was last written (taken before the write: a lower bound)
        self._names: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aerialdet-claims", daemon=True)
        self._thread.start()

    def hold(self, output_name: str, *, since: float | None = None) -> None:
        """Keep renewing this scene's claim.

        Args:
            output_name: the scene's detections file name.
            since: a time (``time.time()``) taken before the claim was written;
                None: not known, so its release reads the claim first.
        """
        with self._lock:
            self._names[output_name] = since if since is not None else float("-inf")

    def drop(self, output_name: str) -> None:
        """Stop renewing this scene's claim and release it.

        Under the lock the renewals take, so a renewal already under way cannot
        write a fresh lease over the release.  While the lease last written is
        live by a margin of a third of a lease (clock skew), no other run can
        have taken the scene over, so the claim is rewritten without reading it.
        """
        with self._lock:
            since = self._names.pop(output_name, float("-inf"))
            ours = time.time() < since + self.lease_s * 2 / 3
            release(self.store, output_name, self.run_id, ours=ours)

    def stop(self) -> None:
        """End the renewals (the claims still held run out with their lease)."""
        self._stopped.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopped.wait(self.lease_s / 3):
            with self._lock:
                names = sorted(self._names)
            for name in names:
                with self._lock:  # one name at a time: ``drop`` waits for at most one renewal
                    if name not in self._names:
                        continue  # dropped (and released) since the list was taken
                    try:
                        started = time.time()
                        if renew(self.store, name, self.run_id, lease_s=self.lease_s):
                            self._names[name] = started
                        else:  # taken over: its release must read first (and leave the other's claim)
                            self._names[name] = float("-inf")
                    except Exception:  # storage hiccup: the next tick tries again, well inside the lease
                        continue
