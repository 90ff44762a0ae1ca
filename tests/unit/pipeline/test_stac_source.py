"""STAC sources (pipeline.stac_source): catalogs, item collections, stac-geoparquet -> scenes, through the run."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest

from pipeline.errors import SourceError
from pipeline.job import DetectJob
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.stac_lookup import scenes_of_items
from pipeline.stac_source import SceneTags, StacOptions, iter_stac_listing, pick_asset
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.stac_items import GEOTIFF, collection, footprint, item, item_collection, write_json
from tests.unit.pipeline.inline_executor import InlineExecutor

OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1)]
TILING = TilingConfig(tile_size_px=128, overlap_px=32)


def _run(source: Path | str, out: Path, **kw: object):
    job = DetectJob(
        source=str(source), out_dir=str(out), model=StandinLoader(), tiling=TILING, progress=False, **kw
    )
    messages: list[str] = []
    return DetectRun(job, InlineExecutor(job), log=messages.append).run(), messages


def _catalog(root: Path, scenes: list[Path]) -> Path:
    """catalog.json -> collection c1/collection.json -> items c1/<id>/<id>.json, asset hrefs relative."""
    coll_dir = root / "c1"
    items = []
    for i, scene in enumerate(scenes):
        doc = item(f"it{i}", scene, f"../../../scenes/{scene.name}", collection="c1")
        doc["links"] = [
            {"rel": "collection", "href": "../collection.json"},
            {"rel": "parent", "href": "../collection.json"},
        ]
        write_json(coll_dir / f"it{i}" / f"it{i}.json", doc)
        items.append(doc)
    coll = collection("c1", items)
    coll["links"] = [
        {"rel": "item", "href": f"./it{i}/it{i}.json", "type": "application/json"} for i in range(len(scenes))
    ]
    coll["links"].append({"rel": "parent", "href": "../catalog.json"})
    write_json(coll_dir / "collection.json", coll)
    cat = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "root",
        "description": "test catalog",
        "links": [{"rel": "child", "href": "./c1/collection.json", "type": "application/json"}],
    }
    return write_json(root / "catalog.json", cat)


def test_a_catalog_is_walked_each_item_is_a_scene_and_the_report_keeps_its_id_and_collection(tmp_path):
    scenes = [
        write_scene(tmp_path / "scenes" / f"s{i}.tif", OBJECTS, width=200, height=200) for i in range(2)
    ]
    source = _catalog(tmp_path / "stac", scenes)
    record, _ = _run(source, tmp_path / "out")
    assert record.counts() == {"done": 2, "exists": 0, "failed": 0, "skipped": 0}
    lines = {Path(s["uri"]).name: s for s in read_report(tmp_path / "out")["scenes"]}
    assert {n: (s["item_id"], s["collection"]) for n, s in lines.items()} == {
        "s0.tif": ("it0", "c1"),
        "s1.tif": ("it1", "c1"),
    }
    assert lines["s0.tif"]["item_href"].endswith("c1/it0/it0.json")
    assert len(gpd.read_parquet(tmp_path / "out")) == 2 * len(OBJECTS)
    # query by item: the scenes that came from it
    assert scenes_of_items(tmp_path / "out", item_ids=("it1",)) == (str(scenes[1].resolve()),)
    assert len(scenes_of_items(tmp_path / "out", collections=("c1",))) == 2


def test_items_without_a_usable_raster_asset_are_skipped_with_the_reason_and_the_others_done(tmp_path):
    good = write_scene(tmp_path / "a.tif", OBJECTS, width=200, height=200)
    docs = [
        item("good", good, str(good)),
        item(
            "noraster",
            good,
            "",
            assets={"thumb": {"href": "t.png", "type": "image/png", "roles": ["thumbnail"]}},
        ),
        item("web", good, "https://example.invalid/a.tif"),
        item("nohref", good, "", assets={"image": {"type": GEOTIFF, "roles": ["data"]}}),
        item("missing", good, str(tmp_path / "gone.tif")),
    ]
    source = write_json(tmp_path / "items.json", item_collection(docs))
    record, messages = _run(source, tmp_path / "out")
    assert record.counts() == {"done": 1, "exists": 0, "failed": 1, "skipped": 3}
    by_item = {s["item_id"]: s for s in read_report(tmp_path / "out")["scenes"]}
    assert "no raster asset" in by_item["noraster"]["error"] and "--asset" in by_item["noraster"]["error"]
    assert "served over HTTP" in by_item["web"]["error"]
    assert "has no href" in by_item["nohref"]["error"]
    assert by_item["missing"]["status"] == "failed" and "gone.tif" in by_item["missing"]["error"]
    assert by_item["good"]["status"] == "done"


def test_asset_picks_the_named_asset_else_the_first_data_or_visual_geotiff():
    doc = {
        "assets": {
            "thumb": {"href": "t.png", "type": "image/png", "roles": ["thumbnail"]},
            "meta": {"href": "m.xml", "type": "application/xml", "roles": ["metadata"]},
            "visual": {"href": "v.tif", "type": GEOTIFF, "roles": ["visual"]},
            "B04": {"href": "b4.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]},
        }
    }
    assert pick_asset(doc, None)[0] == "visual"
    assert pick_asset(doc, "B04")[0] == "B04"
    assert "no asset 'nir'" in pick_asset(doc, "nir")


def test_declared_bands_too_few_for_bands_skip_the_item(tmp_path):
    scene = write_scene(tmp_path / "a.tif", OBJECTS, width=200, height=200)
    doc = item("one-band", scene, str(scene))
    doc["assets"]["image"]["eo:bands"] = [{"name": "pan"}]
    write_json(tmp_path / "x.json", doc)
    listed = list(iter_stac_listing(str(tmp_path / "x.json"), StacOptions(), SceneTags(), (1, 2, 3)))
    ((uri, reason),) = listed
    assert uri == str(scene.resolve()) and "declares 1 band(s)" in reason and "--bands 1,2,3" in reason


def test_invalid_stac_json_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"type": "Feature", "id": ')
    with pytest.raises(SourceError, match=r"broken.json: not STAC JSON"):
        _run(bad, tmp_path / "out")
    (tmp_path / "geo.json").write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(SourceError, match=r"geo.json: not a STAC document \(type 'Point'\)"):
        _run(tmp_path / "geo.json", tmp_path / "out")


def test_an_empty_item_collection_says_it_returned_no_items(tmp_path):
    source = write_json(tmp_path / "none.json", item_collection([]))
    with pytest.raises(SourceError, match="returned no items"):
        _run(source, tmp_path / "out")


def test_a_catalog_streams_the_first_item_comes_before_a_broken_second_child_is_read(tmp_path):
    scenes = [write_scene(tmp_path / "scenes" / f"s{i}.tif", OBJECTS, width=64, height=64) for i in range(2)]
    source = _catalog(tmp_path / "stac", scenes)
    cat = json.loads(source.read_text())
    cat["links"].append({"rel": "child", "href": "./c2/collection.json", "type": "application/json"})
    source.write_text(json.dumps(cat))
    (tmp_path / "stac" / "c2").mkdir()
    (tmp_path / "stac" / "c2" / "collection.json").write_text("{ not json")
    listing = iter_stac_listing(str(source), StacOptions(), SceneTags())
    first = next(listing)
    assert first == (str(scenes[0].resolve()), None)  # before the broken child is read
    assert next(listing)[0] == str(scenes[1].resolve())
    with pytest.raises(SourceError, match=r"invalid STAC Catalog: .*c2/collection.json is not JSON"):
        next(listing)


def test_a_stac_geoparquet_file_lists_its_items(tmp_path):
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import parse_stac_items_to_arrow

    scenes = [write_scene(tmp_path / f"s{i}.tif", OBJECTS, width=64, height=64) for i in range(3)]
    docs = [item(f"g{i}", s, str(s), collection="gp") for i, s in enumerate(scenes)]
    table = parse_stac_items_to_arrow(docs).read_all()
    pq.write_table(table, tmp_path / "items.parquet")
    tags = SceneTags()
    listed = list(iter_stac_listing(str(tmp_path / "items.parquet"), StacOptions(), tags))
    assert listed == [(str(s.resolve()), None) for s in scenes]
    assert tags.pop(str(scenes[2].resolve())).item_id == "g2"


def _lonlat_wkt(scene: Path) -> str:
    """The footprint of ``scene`` as OGC:CRS84 WKT (an AOI over exactly that scene)."""
    import shapely
    from shapely.geometry import shape

    return shapely.to_wkt(shape(footprint(scene)[1]))


@pytest.mark.parametrize("cross_scene_merge", [True, False])
def test_an_item_outside_the_aoi_is_skipped_at_listing_before_its_header_is_opened(
    tmp_path, cross_scene_merge
):
    from rasterio.transform import Affine

    from pipeline.aoi import load_aoi

    inside = write_scene(tmp_path / "in.tif", OBJECTS, width=200, height=200)
    far = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4000000.0)  # 100 km east of the AOI
    elsewhere = write_scene(tmp_path / "far.tif", OBJECTS, width=200, height=200, transform=far)
    gone = tmp_path / "gone.tif"  # the outside item's asset: opening its header would fail the scene
    docs = [item("inside", inside, str(inside)), item("outside", elsewhere, str(gone))]
    source = write_json(tmp_path / "items.json", item_collection(docs))
    aoi = load_aoi(_lonlat_wkt(inside))
    record, messages = _run(source, tmp_path / "out", aoi=aoi, cross_scene_merge=cross_scene_merge)
    assert record.counts() == {"done": 1, "exists": 0, "failed": 0, "skipped": 1}
    assert not any("gone.tif" in m for m in messages)  # no FAILED line: its header was never opened
    report = read_report(tmp_path / "out")
    by_item = {s["item_id"]: s for s in report["scenes"]}
    assert by_item["outside"]["status"] == "skipped" and by_item["outside"]["uri"] == str(gone)
    assert "outside the area of interest" in by_item["outside"]["error"]
    assert by_item["inside"]["status"] == "done" and by_item["inside"]["num_detections"] == len(OBJECTS)
    assert report["num_listed"] == 2


def test_an_item_footprint_is_its_geometry_else_its_bbox(tmp_path):
    import shapely

    from pipeline.stac_source import item_footprint

    scene = write_scene(tmp_path / "a.tif", OBJECTS, width=64, height=64)
    doc = item("a", scene, str(scene))
    assert item_footprint(doc).equals(shapely.geometry.shape(doc["geometry"]))
    doc["geometry"] = None
    assert item_footprint(doc).bounds == tuple(doc["bbox"])
    doc["bbox"] = [170.0, -10.0, -170.0, 10.0]  # across the antimeridian: unknown, the header decides
    assert item_footprint(doc) is None
