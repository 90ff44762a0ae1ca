import json
import os
import subprocess
import sys

from pipeline.claims import claim_name, read_claim, release, renew, try_claim
from pipeline.storage import LocalStore

NAME = "a-12345678.parquet"


def test_first_claim_wins_and_a_live_claim_is_respected(tmp_path):
    store = LocalStore(tmp_path)
    assert try_claim(store, NAME, "run-A") is None
    held = try_claim(store, NAME, "run-B")
    assert held is not None and held.run_id == "run-A" and held.pid == os.getpid()
    assert try_claim(store, NAME, "run-A") is None  # a run may re-claim its own scene
    assert claim_name(NAME).startswith("_")  # readers of the dataset skip it


def test_expired_or_released_claims_are_taken_over(tmp_path):
    store = LocalStore(tmp_path)
    assert try_claim(store, NAME, "run-A", lease_s=-1) is None  # already expired
    assert try_claim(store, NAME, "run-B") is None
    assert read_claim(store, NAME).run_id == "run-B"
    release(store, NAME, "run-B")
    assert try_claim(store, NAME, "run-C") is None


def test_claim_of_a_dead_driver_on_this_host_is_taken_at_once(tmp_path):
    store = LocalStore(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claim = json.loads(
        json.dumps(
            {"run_id": "run-A", "host": os.uname().nodename, "pid": int(dead.stdout), "expires_at": 4e9}
        )
    )
    store.write_bytes_once(claim_name(NAME), json.dumps(claim).encode())
    assert try_claim(store, NAME, "run-B") is None  # its lease runs to 2096, but its driver is gone


def test_renew_extends_and_a_garbled_claim_counts_as_expired(tmp_path):
    store = LocalStore(tmp_path)
    assert try_claim(store, NAME, "run-A", lease_s=10) is None
    before = read_claim(store, NAME).expires_at
    renew(store, NAME, "run-A", lease_s=1000)
    assert read_claim(store, NAME).expires_at > before + 900
    store.write_text(claim_name(NAME), "{not json")
    assert read_claim(store, NAME) is None and try_claim(store, NAME, "run-B") is None


def test_a_run_whose_lease_lapsed_never_clobbers_the_new_holder(tmp_path):
    store = LocalStore(tmp_path)
    assert try_claim(store, NAME, "run-A", lease_s=-1) is None  # A's lease lapses
    assert try_claim(store, NAME, "run-B") is None  # B takes the scene over
    renew(store, NAME, "run-A")
    release(store, NAME, "run-A")  # A finishes late
    held = read_claim(store, NAME)
    assert held.run_id == "run-B" and held.expires_at > 0  # B's claim is still live


def test_claim_keeper_renews_from_its_thread_and_releases_on_drop(tmp_path):
    import time

    from pipeline.claims import ClaimKeeper

    store = LocalStore(tmp_path)
    assert try_claim(store, NAME, "run-A", lease_s=0.6) is None
    first = read_claim(store, NAME).expires_at
    keeper = ClaimKeeper(store, "run-A", lease_s=0.6)
    try:
        keeper.hold(NAME)
        time.sleep(0.9)  # past the first lease: only the thread's renewals keep it
        assert read_claim(store, NAME).expires_at > first
        assert try_claim(store, NAME, "run-B") is not None  # still held by A
        keeper.drop(NAME)
        assert read_claim(store, NAME).expires_at == 0.0
    finally:
        keeper.stop()


class _CountingStore(LocalStore):
    """A local store that counts reads of claim files."""

    claim_reads = 0

    def read_bytes(self, name: str) -> bytes:
        self.claim_reads += name.startswith("_claim.")
        return super().read_bytes(name)


def test_a_release_inside_a_live_lease_does_not_read_the_claim_and_a_lapsed_one_leaves_the_new_holder(
    tmp_path,
):
    import time

    from pipeline.claims import ClaimKeeper

    store = _CountingStore(tmp_path)
    keeper = ClaimKeeper(store, "run-A", lease_s=300)
    try:
        taken_at = time.time()
        assert try_claim(store, NAME, "run-A") is None
        keeper.hold(NAME, since=taken_at)
        keeper.drop(NAME)  # the lease is live: no other run can hold the scene, so no read
        assert store.claim_reads == 0
        assert read_claim(store, NAME).expires_at == 0.0  # released all the same
        # a lease known to have lapsed (taken long ago) is read first, and another run's claim kept
        assert try_claim(store, NAME, "run-A", lease_s=-1) is None
        keeper.hold(NAME, since=time.time() - 1000)
        assert try_claim(store, NAME, "run-B") is None  # B takes the lapsed claim over
        reads = store.claim_reads
        keeper.drop(NAME)
        assert store.claim_reads > reads
        held = read_claim(store, NAME)
        assert held.run_id == "run-B" and held.expires_at > 0
    finally:
        keeper.stop()
