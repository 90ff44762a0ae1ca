"""STAC API searches against a real server (stac-fastapi-pgstac on PostgreSQL, tests/stac_server.py).

The items' assets live on the moto S3 server; searches are paged by pystac-client and consumed by the
real lifecycle (pipeline.run with the in-process executor, no Ray); the README's own commands run through
the CLI with a private Ray cluster.
"""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import boto3
import pytest

from pipeline.errors import SourceError
from pipeline.job import DetectJob
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.stac_source import SceneTags, StacOptions, StacSearch, iter_stac_listing
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.stac_items import collection, item
from tests.stac_server import have_postgres, stac_api
from tests.unit.pipeline.inline_executor import InlineExecutor

README = Path(__file__).resolve().parents[2] / "README.md"

OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1), (200, 190, 215, 215, 2)]
TILING = TilingConfig(tile_size_px=128, overlap_px=32)
# three scenes side by side in UTM 33N (10 m pixels, 300 px = 3 km each), one far away in another collection
ORIGINS = {"a0": 500000.0, "a1": 503000.0, "a2": 506000.0}


@pytest.fixture(scope="module")
def catalog(s3_server, tmp_path_factory):
    """A STAC API seeded with collection `aerial` (3 items + 1 whose asset key is missing) and `other`."""
    from rasterio.transform import Affine

    missing = have_postgres()
    if missing:
        pytest.fail(f"the STAC API tests need PostgreSQL: {missing}")
    root = tmp_path_factory.mktemp("stac")
    bucket = f"scenes-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    items = []
    for name, x0 in ORIGINS.items():
        path = write_scene(
            root / f"{name}.tif", OBJECTS, width=300, height=300, transform=Affine(10, 0, x0, 0, -10, 4000000)
        )
        s3.upload_file(str(path), bucket, f"aerial/{name}.tif")
        platform = "drone" if name != "a2" else "plane"
        items.append(
            item(
                name,
                path,
                f"s3://{bucket}/aerial/{name}.tif",
                collection="aerial",
                properties={"platform": platform},
            )
        )
    gone = item(
        "gone",
        root / "a0.tif",
        f"s3://{bucket}/aerial/no-such-key.tif",
        collection="aerial",
        datetime="2019-01-01T00:00:00Z",
        properties={"platform": "drone"},
    )
    far = write_scene(
        root / "far.tif", OBJECTS, width=64, height=64, transform=Affine(10, 0, 600000, 0, -10, 4500000)
    )
    s3.upload_file(str(far), bucket, "other/far.tif")
    other = item("far", far, f"s3://{bucket}/other/far.tif", collection="other")
    with stac_api() as api:
        api.add_collection(collection("aerial", [*items, gone]))
        api.add_collection(collection("other", [other]))
        for doc in [*items, gone, other]:
            api.add_item(doc)
        yield {"url": api.url, "bucket": bucket, "root": root, "items": items, "api": api}


def _listed(search: StacSearch) -> list[tuple[str, str | None]]:
    return list(iter_stac_listing(search.url, StacOptions(search=search), SceneTags()))


def test_a_search_is_paged_and_filtered_by_collection_datetime_bbox_and_cql2(catalog):
    url, bucket = catalog["url"], catalog["bucket"]
    names = lambda rows: sorted(Path(u).name for u, _ in rows)  # noqa: E731
    # page_size 1: four pages, all items
    assert names(_listed(StacSearch(url, collections=("aerial",), page_size=1))) == [
        "a0.tif",
        "a1.tif",
        "a2.tif",
        "no-such-key.tif",
    ]
    assert names(_listed(StacSearch(url, collections=("aerial",), datetime="2024-01-01T00:00:00Z/.."))) == [
        "a0.tif",
        "a1.tif",
        "a2.tif",
    ]
    a1 = catalog["items"][1]["bbox"]
    inner = (a1[0] + 0.001, a1[1] + 0.001, a1[2] - 0.001, a1[3] - 0.001)
    assert names(
        _listed(StacSearch(url, collections=("aerial",), bbox=inner, datetime="2024-01-01T00:00:00Z/.."))
    ) == ["a1.tif"]
    assert names(_listed(StacSearch(url, collections=("aerial",), cql2_filter="platform = 'plane'"))) == [
        "a2.tif"
    ]
    json_filter = '{"op": "=", "args": [{"property": "platform"}, "plane"]}'
    assert names(_listed(StacSearch(url, cql2_filter=json_filter))) == ["a2.tif"]
    assert names(_listed(StacSearch(url, collections=("other",)))) == ["far.tif"]
    assert all(u.startswith(f"s3://{bucket}/") for u, _ in _listed(StacSearch(url)))


def test_a_search_that_matches_nothing_is_one_line_naming_the_server(catalog):
    with pytest.raises(SourceError, match=r"the STAC search http://127\.0\.0\.1:\d+ returned no items"):
        _listed(
            StacSearch(
                catalog["url"], collections=("aerial",), datetime="1990-01-01T00:00:00Z/1990-12-31T00:00:00Z"
            )
        )


def test_a_search_runs_through_the_lifecycle_and_a_missing_asset_fails_alone(catalog, tmp_path):
    search = StacSearch(catalog["url"], collections=("aerial",), page_size=2)
    job = DetectJob(
        source=search.url,
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TILING,
        progress=False,
        stac=StacOptions(search=search),
    )
    record = DetectRun(job, InlineExecutor(job), log=lambda m: None).run()
    assert record.counts() == {"done": 3, "exists": 0, "failed": 1, "skipped": 0}
    lines = {s["item_id"]: s for s in read_report(tmp_path / "out")["scenes"]}
    assert {s["collection"] for s in lines.values()} == {"aerial"}
    assert lines["gone"]["status"] == "failed" and "no-such-key.tif" in lines["gone"]["error"]
    assert all(lines[n]["status"] == "done" and lines[n]["num_detections"] == 3 for n in ORIGINS)


def _readme_commands() -> list[list[str]]:
    """The README's `aerialdet detect --stac-search ...` and `aerialdet query s3://out/` lines, as written."""
    lines = README.read_text().splitlines()
    wanted = [
        ln
        for ln in lines
        if ln.startswith("aerialdet detect --stac-search") or ln == "aerialdet query s3://out/"
    ]
    assert len(wanted) == 2, wanted
    return [shlex.split(ln)[1:] for ln in wanted]


def test_the_readme_commands_run_against_the_test_server(catalog, tmp_path, monkeypatch):
    import boto3
    from click.testing import CliRunner

    from jobs.cli import _register_optional, cli
    from tests import stac_demo

    _register_optional()
    api = catalog["api"]
    folder = tmp_path / "demo_stac"
    folder.mkdir()
    stac_demo.write_demo(folder, boto3.client("s3"), api.add_collection, api.add_item)
    monkeypatch.chdir(tmp_path)  # the README's paths are relative: demo_stac/area.gpkg
    detect, query = _readme_commands()
    detect = [a.replace("http://127.0.0.1:PORT", api.url) for a in detect]
    result = CliRunner().invoke(cli, detect)
    assert result.exit_code == 0, result.output
    # the search asks for items intersecting the AOI: scene_2 (outside) is never listed; scene_0 is read
    # whole, scene_1 only its west column of tiles (2 of its 4 saved)
    assert "2 scene(s) done, 0 already done, 0 failed, 0 skipped" in result.output
    assert "--aoi saved 2 tile(s)" in result.output
    report = read_report(f"s3://{stac_demo.OUT_BUCKET}/")
    lines = {s["item_id"]: s for s in report["scenes"]}
    assert sorted(lines) == ["scene_0", "scene_1"] and report["num_tiles_saved_by_aoi"] == 2
    assert {lines[n]["collection"] for n in lines} == {stac_demo.COLLECTION}
    # STAC out on S3: the collection and one item per scene under s3://out/_stac/
    stac_keys = sorted(
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="out", Prefix="_stac/")["Contents"]
    )
    assert len(stac_keys) == 3 and "_stac/collection.json" in stac_keys
    inside = len(stac_demo._objects(0)) + sum(1 for o in stac_demo._objects(1) if (o[0] + o[2]) / 2 < 400)
    assert lines["scene_0"]["num_detections"] + lines["scene_1"]["num_detections"] == inside
    result = CliRunner().invoke(cli, query)
    assert result.exit_code == 0, result.output
    assert re.search(rf"^{inside} detection\(s\), CRS EPSG:32633$", result.output, re.MULTILINE), (
        result.output
    )
