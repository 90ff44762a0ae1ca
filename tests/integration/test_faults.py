"""A storage endpoint that fails: retried with backoff, or a clear error naming the key.

The endpoint is ``tests.flaky_s3.FlakyProxy`` on 127.0.0.1 in front of the moto
server: it answers 503 or drops the connection for a seeded, bounded share of
requests (never more than ``max_in_a_row`` in a row), or for all of them.
Each run is compared with an undisturbed one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from pipeline.errors import OutputError, SourceError
from pipeline.query import QueryError, read_detections
from pipeline.ray_stages import DetectConfig, DetectJob, run_detect
from pipeline.report import read_report
from pipeline.sources import list_scenes
from pipeline.standin import StandinLoader
from pipeline.storage import open_store
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.flaky_s3 import FlakyProxy
from tests.unit.pipeline.test_query import write_detections

TILING = TilingConfig(tile_size_px=128, overlap_px=32)
OBJECTS = [(10, 10, 30, 30, 0), (100, 100, 140, 120, 1), (200, 40, 230, 60, 2)]
KEY = ["scene", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "label"]


@pytest.fixture
def bucket(s3_server):
    name = f"faults-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture
def flaky(s3_server, monkeypatch):
    """``flaky(**kwargs)``: a FlakyProxy in front of the moto server; AWS_ENDPOINT_URL points at it."""
    proxies: list[FlakyProxy] = []

    def start(*, attempts: int = 4, **kwargs: object) -> FlakyProxy:
        proxy = FlakyProxy(s3_server["AWS_ENDPOINT_URL"], **kwargs).__enter__()  # type: ignore[arg-type]
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(attempts))
        return proxy

    yield start
    for proxy in proxies:
        proxy.__exit__()


def _sorted(gdf):
    return gdf.sort_values(KEY).reset_index(drop=True)


def test_writes_lists_and_reads_retry_through_a_flaky_endpoint(bucket, flaky):
    direct = read_detections(write_detections(f"s3://{bucket}/direct", "/data/a.tif"))
    proxy = flaky(share=0.35, seed=3, max_in_a_row=2, attempts=4)  # 2 failures in a row < 4 attempts
    store = open_store(f"s3://{bucket}/flaky")
    for i in range(5):
        assert store.write_bytes_once(f"blob{i}.parquet", f"{i}".encode()) is True
    assert [store.read_bytes(f"blob{i}.parquet") for i in range(5)] == [f"{i}".encode() for i in range(5)]
    assert store.list_parquet() == [f"blob{i}.parquet" for i in range(5)]
    assert store.retries > 0  # counted for the run report
    # GeoParquet written and read (pyarrow's S3 filesystem) through the same flaky endpoint
    write_detections(f"s3://{bucket}/det", "/data/a.tif")
    got = read_detections(f"s3://{bucket}/det", labels=["car", "tree"])
    assert _sorted(got).drop(columns="geometry").equals(_sorted(direct).drop(columns="geometry"))
    assert proxy.failed >= 3 and proxy.dropped > 0 and proxy.failed < proxy.requests


def test_a_write_whose_answer_was_lost_is_still_ours(bucket, flaky):
    # the first PUT of each key is stored by the server but its answer is lost; botocore
    # retries, and the retry's If-None-Match: * meets our own object (412)
    open_store(f"s3://{bucket}/lost").write_bytes_once("other.parquet", b"someone else's")  # direct
    proxy = flaky(share=1.0, max_in_a_row=1, kinds=("lost",), only="^PUT ", attempts=3)
    store = open_store(f"s3://{bucket}/lost")  # its client is made on first use: through the proxy
    assert store.write_bytes_once("mine.parquet", b"ours") is True  # written by us: not "exists already"
    assert store.read_bytes("mine.parquet") == b"ours"
    assert store.write_bytes_once("other.parquet", b"someone else's") is False  # equal bytes, not ours
    assert store.read_bytes("other.parquet") == b"someone else's"
    assert proxy.dropped == 2  # one lost answer per key


def test_an_endpoint_that_keeps_failing_names_the_key(bucket, flaky):
    write_detections(f"s3://{bucket}/det", "/data/a.tif")
    proxy = flaky(always_fail=True, attempts=2)
    store = open_store(f"s3://{bucket}/det")
    with pytest.raises(OutputError) as info:
        store.write_bytes_once("x-12345678.parquet", b"data")
    assert proxy.requests == 2  # AWS_MAX_ATTEMPTS counts the first try, as in the AWS CLI
    message = str(info.value)
    assert f"s3://{bucket}/det/x-12345678.parquet" in message and "after 2 attempt(s)" in message
    assert "503" in message or "Connection" in message, message
    with pytest.raises(QueryError, match=f"{bucket}/det"):
        read_detections(f"s3://{bucket}/det")


def test_a_source_bucket_is_listed_through_a_flaky_endpoint(bucket, flaky):
    s3 = boto3.client("s3")
    names = [f"in/s{i}.tif" for i in range(3)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=b"not read by the listing")
    proxy = flaky(share=0.5, seed=1, max_in_a_row=2, attempts=3)
    listings = [list_scenes(f"s3://{bucket}/in/") for _ in range(6)]
    assert all(listing.scenes == tuple(f"s3://{bucket}/{n}" for n in names) for listing in listings)
    assert proxy.failed > 0  # some listings met a failure and were retried
    proxy.always_fail = True
    requests = proxy.requests
    with pytest.raises(SourceError, match=f"cannot list 's3://{bucket}/in/'"):
        list_scenes(f"s3://{bucket}/in/")
    assert proxy.requests - requests == 3  # AWS_MAX_ATTEMPTS, the first try included


# -- detect through a flaky endpoint ------------------------------------------------------------


def _scenes(folder: Path, n: int) -> Path:
    for i in range(n):
        write_scene(folder / f"s{i}.tif", OBJECTS[: 1 + i % 3], width=256, height=256)
    return folder


def _detect(source: Path, out: str) -> object:
    job = DetectJob(
        source=str(source),
        out_dir=out,
        model=StandinLoader(),
        detect=DetectConfig(batch_size=4),
        tiling=TILING,
        progress=False,
    )
    return run_detect(job, log=lambda m: None)


@pytest.mark.integration
def test_detect_through_flaky_storage_equals_the_undisturbed_run(
    ray_cluster, bucket, flaky, tmp_path, s3_server, monkeypatch
):
    source = _scenes(tmp_path / "in", 3)
    _detect(source, str(tmp_path / "undisturbed"))
    proxy = flaky(share=0.3, seed=11, max_in_a_row=2, attempts=4)
    report = _detect(source, f"s3://{bucket}/out")
    assert report.counts() == {"done": 3, "exists": 0, "failed": 0, "skipped": 0}
    assert proxy.failed > 0
    # read back past the proxy: its "2 failures in a row" is global, so concurrent reads (DuckDB's
    # threads) can each fail more often than their attempts; reads through it have their own test
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["AWS_ENDPOINT_URL"])
    got = read_detections(f"s3://{bucket}/out")
    want = read_detections(tmp_path / "undisturbed")
    cols = [c for c in want.columns if c not in ("geometry", "run_id")]
    assert len(got) == len(want) == 6 and _sorted(got)[cols].equals(_sorted(want)[cols])
    assert read_report(f"s3://{bucket}/out")["counts"]["done"] == 3


@pytest.mark.integration
def test_scene_whose_write_keeps_failing_fails_alone_with_the_reason(ray_cluster, bucket, flaky, tmp_path):
    from pipeline.output import scene_output_name

    source = _scenes(tmp_path / "in", 3)
    doomed = scene_output_name(str(source / "s1.tif"))
    flaky(always_fail=True, only=rf"^PUT .*/{doomed}$", attempts=2)  # only that scene's GeoParquet
    report = _detect(source, f"s3://{bucket}/out")
    assert report.counts() == {"done": 2, "exists": 0, "failed": 1, "skipped": 0}
    rep = read_report(f"s3://{bucket}/out")
    (line,) = [s for s in rep["scenes"] if s["status"] == "failed"]
    assert line["uri"].endswith("s1.tif")
    assert f"s3://{bucket}/out/{doomed}" in line["error"] and "after 2 attempt(s)" in line["error"]
    assert sorted(set(read_detections(f"s3://{bucket}/out")["scene"])) == [
        str(source / "s0.tif"),
        str(source / "s2.tif"),
    ]
    assert open_store(f"s3://{bucket}/out").list_parquet() == sorted(
        scene_output_name(str(source / f"s{i}.tif")) for i in (0, 2)
    )


@pytest.mark.integration
def test_detect_report_counts_storage_retries(ray_cluster, bucket, flaky, tmp_path):
    source = _scenes(tmp_path / "in", 2)
    # every scene's first PUT fails and its second gets through: exactly one retry per scene
    # (scene files only: not the footprints, _mosaic.<gen>.parquet)
    proxy = flaky(share=1.0, max_in_a_row=1, only=r"^PUT .*/[^_/][^/]*\.parquet$", attempts=3)
    _detect(source, f"s3://{bucket}/out")
    rep = read_report(f"s3://{bucket}/out")
    assert proxy.failed == 2 and rep["counts"]["done"] == 2
    assert rep["retries"]["storage"] == 2
    assert json.dumps(rep)  # still one JSON document
