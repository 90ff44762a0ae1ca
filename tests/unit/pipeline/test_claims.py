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
