"""The output store: write-once, atomic, listing, errors (local here; S3 in tests/integration/test_s3_output.py)."""

from __future__ import annotations

import os
import threading

import pytest

from pipeline.errors import OutputError, PipelineError
from pipeline.storage import LocalStore, S3Store, is_detection_name, open_store, retry_settings


def test_open_store_picks_the_kind_and_names_keys():
    assert isinstance(open_store("out"), LocalStore)
    s3 = open_store("S3://bucket/runs/one/")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "runs/one")
    assert s3.uri("a.parquet") == "s3://bucket/runs/one/a.parquet"
    assert open_store("s3://bucket").uri("a.parquet") == "s3://bucket/a.parquet"
    with pytest.raises(OutputError, match="no bucket name"):
        open_store("s3:///prefix")


def test_names_must_be_plain_file_names(tmp_path):
    store = LocalStore(tmp_path)
    for bad in ("", "a/b.parquet", "..", "."):
        with pytest.raises(ValueError, match="plain file name"):
            store.exists(bad)


def test_write_once_keeps_the_first_and_leaves_no_temp(tmp_path):
    store = LocalStore(tmp_path / "out")
    assert store.write_bytes_once("a.parquet", b"first") is True
    assert store.write_bytes_once("a.parquet", b"second") is False  # refused: nothing written
    assert store.read_bytes("a.parquet") == b"first"
    assert store.write_bytes_once("a.parquet", b"third", replace=True) is True
    assert store.read_bytes("a.parquet") == b"third"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.parquet"]  # no `.a.parquet.<hex>.tmp` left


def test_concurrent_writers_of_one_name_exactly_one_wins(tmp_path):
    store = LocalStore(tmp_path)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        results.append(store.write_bytes_once("x.parquet", f"writer {i}".encode() * 1000))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    content = store.read_bytes("x.parquet")
    assert content in {f"writer {i}".encode() * 1000 for i in range(8)}  # one whole file, never mixed


def test_list_parquet_skips_reserved_and_other_names(tmp_path):
    for name in ("b.parquet", "a.parquet", "_run.json", ".a.parquet.123.tmp", "_x.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.parquet").mkdir()
    assert LocalStore(tmp_path).list_parquet() == ["a.parquet", "b.parquet"]
    assert LocalStore(tmp_path / "missing").list_parquet() == []
    assert is_detection_name("a-1aad650f.parquet") and not is_detection_name(".a.parquet.x.tmp")


def test_unwritable_folder_raises_output_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = LocalStore(blocker / "out")
    with pytest.raises(OutputError, match=f"{blocker / 'out'}: cannot write"):
        store.check_writable()
    with pytest.raises(OutputError, match="cannot read"):
        LocalStore(tmp_path).read_bytes("missing.parquet")


def test_check_writable_leaves_nothing(tmp_path):
    LocalStore(tmp_path / "out").check_writable()
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, ("standard", 5)), ({"AWS_RETRY_MODE": "adaptive", "AWS_MAX_ATTEMPTS": "2"}, ("adaptive", 2))],
)
def test_retry_settings_follow_aws_variables(monkeypatch, env, expected):
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert retry_settings() == expected


@pytest.mark.parametrize(("key", "value"), [("AWS_RETRY_MODE", "legacyish"), ("AWS_MAX_ATTEMPTS", "0")])
def test_bad_retry_settings_are_named(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(PipelineError, match=key):
        retry_settings()
    with pytest.raises(OutputError, match=key):  # what a store's callers catch
        S3Store("s3://bucket/out")


def test_s3_store_pickles_without_its_client():
    import pickle

    store = open_store("s3://bucket/p")
    assert isinstance(store, S3Store)
    store._client = object()  # a live client must not travel to Ray workers
    assert pickle.loads(pickle.dumps(store))._client is None
