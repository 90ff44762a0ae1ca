"""Output to S3 (the moto server on 127.0.0.1): written once, read back, queried like a local folder."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.errors import OutputError
from pipeline.output import OutputExistsError, scene_output_name, write_scene_detections
from pipeline.query import QueryError, dataset_files, read_detections, summary
from pipeline.report import REPORT_FILE, RunRecord, SceneReport, read_report
from pipeline.storage import S3Store, open_store
from tests.unit.pipeline.test_query import write_detections

_register_optional()


@pytest.fixture
def bucket(s3_server):
    name = f"out-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


def _keys(bucket: str) -> list[str]:
    s3 = boto3.client("s3")
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_write_once_refuses_the_second_write(bucket):
    store = open_store(f"s3://{bucket}/run")
    assert isinstance(store, S3Store) and not store.exists("a.parquet")
    assert store.write_bytes_once("a.parquet", b"first") is True
    assert store.exists("a.parquet")
    assert store.write_bytes_once("a.parquet", b"second") is False  # If-None-Match: * -> 412
    assert store.read_bytes("a.parquet") == b"first"
    assert store.write_bytes_once("a.parquet", b"third", replace=True) is True
    assert store.read_bytes("a.parquet") == b"third"
    assert _keys(bucket) == ["run/a.parquet"]  # no temporary key


def test_s3_listing_is_one_level_and_skips_reserved_names(bucket):
    store = open_store(f"s3://{bucket}/run")
    for name in ("b.parquet", "a.parquet", "_run.json", "_x.parquet", ".tmp.parquet"):
        store.write_bytes_once(name, b"")
    open_store(f"s3://{bucket}/run/deeper").write_bytes_once("c.parquet", b"")
    open_store(f"s3://{bucket}/running").write_bytes_once("d.parquet", b"")  # same prefix, other folder
    assert store.list_parquet() == ["a.parquet", "b.parquet"]


def test_scene_detections_written_once_to_s3_and_queried(bucket):
    out = f"s3://{bucket}/det"
    written = write_detections(out, "/data/a.tif")
    assert written == f"{out}/{scene_output_name('/data/a.tif')}"
    with pytest.raises(OutputExistsError, match="exists already"):
        _write_again(out, replace=False)
    assert read_detections(out)["run_id"].tolist() == ["r", "r", "r"]  # the first file, untouched
    assert dataset_files(out) == [written] and dataset_files(written) == [written]
    # the same filters as tests/unit/pipeline/test_query.py::test_filters, through pyarrow's S3 filesystem
    assert sorted(read_detections(out, labels=["car"])["score"]) == pytest.approx([0.7, 0.9])
    got = read_detections(out, bbox=(500049, 4999941, 500051, 4999949))
    assert list(got["xmin_px"]) == [50.0] and got.crs == CRS.from_epsg(32633)
    assert len(read_detections(out, scenes=["a.tif"], min_score=0.8)) == 1
    s = summary(out)
    assert s["num_detections"] == 3 and s["box_area_sum"] == pytest.approx(225)


def _write_again(out: str, *, replace: bool) -> object:
    import numpy as np

    from pipeline.merging import MergedBoxes
    from pipeline.types import SceneInfo

    scene = SceneInfo(
        "/data/a.tif",
        100,
        100,
        3,
        "uint8",
        CRS.from_epsg(32633).to_wkt(),
        (1.0, 0, 500000.0, 0, -1.0, 5000000.0),
    )
    merged = MergedBoxes(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return write_scene_detections(
        out, scene, merged, class_names=("car", "tree"), out_crs=CRS.from_epsg(32633), model_id="m",
        run_id="second", replace=replace,
    )  # fmt: skip


def test_s3_equals_local(bucket, tmp_path):
    for out in (f"s3://{bucket}/det", str(tmp_path)):
        write_detections(out, "/data/a.tif")
        write_detections(out, "s3://imagery/b.tif")
    key = ["scene", "xmin_px", "ymin_px"]
    remote = read_detections(f"s3://{bucket}/det").sort_values(key).reset_index(drop=True)
    local = read_detections(tmp_path).sort_values(key).reset_index(drop=True)
    assert remote.drop(columns="geometry").equals(local.drop(columns="geometry"))
    assert remote.geometry.geom_equals(local.geometry).all()


def test_query_cli_reads_s3(bucket):
    out = f"s3://{bucket}/det"
    write_detections(out, "/data/a.tif")
    result = CliRunner().invoke(
        cli,
        [
            "query",
            out,
            "--label",
            "car",
            "--bbox",
            "500000",
            "4999980",
            "500020",
            "5000000",
            "--format",
            "geojson",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [f["properties"]["xmin_px"] for f in json.loads(result.output)["features"]] == [0.0]
    result = CliRunner().invoke(cli, ["query", out, "--sql", "SELECT count(*) AS n FROM detections"])
    assert result.exit_code == 0 and "3" in result.output


def test_empty_or_missing_s3_output_is_one_line(bucket, monkeypatch):
    with pytest.raises(QueryError, match="holds no detections"):
        read_detections(f"s3://{bucket}/nothing-here")
    result = CliRunner().invoke(cli, ["query", "s3://no-such-bucket-x/det"])
    assert result.exit_code == 2 and "cannot list" in result.output and "Traceback" not in result.output


def test_run_report_to_s3(bucket):
    from pipeline.storage import open_store

    store = open_store(f"s3://{bucket}/det")
    record = RunRecord(run_id="r", source="in", output=f"s3://{bucket}/det", model="m", store=store)
    record.num_listed = 1
    record.add(SceneReport("a.tif", "done", num_tiles=1, tiles_by_node={"n": 1}))
    record.finish()
    assert record.close() == f"s3://{bucket}/det/{REPORT_FILE}"
    rep = read_report(f"s3://{bucket}/det")
    assert rep["counts"]["done"] == 1 and [s["uri"] for s in rep["scenes"]] == ["a.tif"]
    record.write_summary()  # the summary is rewritten in place (not write-once)
    assert read_report(f"s3://{bucket}/det")["counts"]["done"] == 1
    with pytest.raises(OutputError, match=f"s3://{bucket}/other/{REPORT_FILE}"):
        read_report(f"s3://{bucket}/other")


def test_quicklook_draws_detections_read_from_s3(bucket, tmp_path, make_scene):
    scene = make_scene("q.tif", [(0, 0, 10, 10, 0)], width=100, height=100)
    write_detections(f"s3://{bucket}/det", str(scene))
    png = tmp_path / "q.png"
    result = CliRunner().invoke(
        cli, ["quicklook", f"s3://{bucket}/det", "--scene", "q.tif", "-o", str(png), "--min-score", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert png.exists() and "(2 detections)" in result.output  # car 0.9 and car 0.7, not tree 0.4


# -- detect into a bucket (needs the store wired into ray_stages / jobs.detect) --------------------


def _two_scenes(folder):
    from tests.conftest import write_scene

    for name in ("a.tif", "b.tif"):
        write_scene(folder / name, [(10, 10, 30, 30, 0), (100, 100, 120, 130, 1)], width=200, height=200)
    return folder


@pytest.mark.integration
def test_detect_rerun_to_s3_skips_scenes_already_written(ray_cluster, bucket, tmp_path):
    from pipeline.ray_stages import DetectJob, run_detect
    from pipeline.standin import StandinLoader
    from pipeline.tiling import TilingConfig

    job = DetectJob(
        source=str(_two_scenes(tmp_path / "in")),
        out_dir=f"s3://{bucket}/out",
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    assert run_detect(job, log=lambda m: None).counts()["done"] == 2
    again = run_detect(job, log=lambda m: None)
    assert again.counts() == {"done": 0, "exists": 2, "failed": 0, "skipped": 0}
    assert len(read_detections(f"s3://{bucket}/out")) == 4


@pytest.mark.integration
def test_cli_detect_bucket_to_bucket_then_query(ray_cluster, bucket, tmp_path, monkeypatch):
    from tests.integration.conftest import standin_detect_args

    monkeypatch.chdir(tmp_path)  # today --out s3://... makes a local folder `s3:`; keep it in tmp_path
    s3 = boto3.client("s3")
    for p in _two_scenes(tmp_path / "in").iterdir():
        s3.upload_file(str(p), bucket, f"in/{p.name}")
    result = CliRunner().invoke(
        cli, ["detect", *standin_detect_args(f"s3://{bucket}/in/", f"s3://{bucket}/out/")]
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s3:").exists()
    # Ray's logs cannot go under an s3:// OUT: the summary says where they went instead
    logs = result.output.rsplit("Ray's logs: ", 1)[-1].strip()
    assert logs != result.output.strip() and Path(logs).is_dir(), result.output
    result = CliRunner().invoke(
        cli,
        [
            "query",
            f"s3://{bucket}/out/",
            "--bbox",
            "500000",
            "3999700",
            "500300",
            "4000000",
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    # 10 m pixels: px (10, 10, 30, 30) is x 500100..500300, y 3999700..3999900; (100, 100, ...) is outside
    assert result.output.count("\n") == 1 + 2  # header + 1 object x 2 scenes
    assert read_report(f"s3://{bucket}/out")["counts"]["done"] == 2
