"""STAC out (pipeline.stac_out): a Collection and one Item per scene, valid against the STAC schemas offline.

Schemas: STAC 1.1 core (item, collection, GeoJSON) as pystac ships them; the MLM 1.5.2, processing 1.1/1.2,
classification 1.1 and raster 1.1 extension schemas vendored under schemas/stac/ (from the
stac-extensions repositories at those tags, Apache-2.0). Nothing is fetched.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from pipeline.job import DetectJob
from pipeline.run import DetectRun
from pipeline.stac_out import COLLECTION_FILE, STAC_DIR
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.stac_items import item, item_collection, write_json
from tests.unit.pipeline.inline_executor import InlineExecutor

SCHEMAS = Path(__file__).parent / "schemas" / "stac"
EXTENSIONS = {
    "https://stac-extensions.github.io/mlm/v1.5.2/schema.json": "mlm-v1.5.2.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json": "processing-v1.2.0.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json": "processing-v1.1.0.json",
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json": "classification-v1.1.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
}
CORE = "https://schemas.stacspec.org/v1.1.0/{0}-spec/json-schema/{0}.json"
OBJECTS = [(10, 10, 30, 30, 0), (110, 20, 130, 36, 1)]


def _registry() -> Registry:
    from pystac.validation.local_validator import get_local_schema_cache

    resources = [
        (uri, Resource.from_contents(doc, default_specification=DRAFT7))
        for uri, doc in get_local_schema_cache().items()
    ]
    for uri, name in EXTENSIONS.items():
        doc = json.loads((SCHEMAS / name).read_text())
        resources.append((uri, Resource.from_contents(doc, default_specification=DRAFT7)))
        resources.append((uri + "#", Resource.from_contents(doc, default_specification=DRAFT7)))
    return Registry().with_resources(resources)


def validate(doc: dict, kind: str) -> None:
    """Validate ``doc`` against the core schema of ``kind`` and every extension it lists, offline."""
    registry = _registry()
    uris = [CORE.format(kind), *doc.get("stac_extensions", [])]
    for uri in uris:
        schema = registry.contents(uri)
        jsonschema.Draft7Validator(schema, registry=registry).validate(doc)


def _run(src: Path, out: Path):
    job = DetectJob(
        source=str(src),
        out_dir=str(out),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        progress=False,
    )
    return DetectRun(job, InlineExecutor(job), log=lambda m: None).run()


def test_each_scene_written_gets_a_valid_item_and_the_output_a_valid_collection(tmp_path):
    scenes = [write_scene(tmp_path / f"s{i}.tif", OBJECTS, width=200, height=200) for i in range(2)]
    src = write_json(
        tmp_path / "src" / "items.json",
        item_collection([item(f"it{i}", s, str(s)) for i, s in enumerate(scenes)]),
    )
    record = _run(src, tmp_path / "out")
    assert record.counts()["done"] == 2
    out = tmp_path / "out"
    collection = json.loads((out / STAC_DIR / COLLECTION_FILE).read_text())
    validate(collection, "collection")
    item_files = sorted(p for p in (out / STAC_DIR).glob("*.json") if p.name != COLLECTION_FILE)
    assert len(item_files) == 2
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        f"./{p.name}" for p in item_files
    ]
    for path in item_files:
        doc = json.loads(path.read_text())
        validate(doc, "item")
        parquet = out / doc["assets"]["detections"]["href"].removeprefix("../")
        assert (
            parquet.exists()
            and len(gpd.read_parquet(parquet)) == doc["properties"]["aerialdet:num_detections"] == 2
        )
        assert (
            doc["properties"]["mlm:tasks"] == ["object-detection"]
            and doc["properties"]["processing:software"]
        )
        (derived,) = [link["href"] for link in doc["links"] if link["rel"] == "derived_from"]
        assert derived == str(src.resolve()) or derived == str(src)  # the ItemCollection the item came from
        assert doc["properties"]["aerialdet:source_item"] in ("it0", "it1")
        west, south, east, north = doc["bbox"]
        assert 14.9 < west < east < 15.1 and 36.0 < south < north < 36.2


def test_a_second_run_adds_its_items_and_widens_the_extent(tmp_path):
    from rasterio.transform import Affine

    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=200, height=200)
    _run(tmp_path / "in", tmp_path / "out")
    first = json.loads((tmp_path / "out" / STAC_DIR / COLLECTION_FILE).read_text())
    write_scene(
        tmp_path / "in" / "b.tif",
        OBJECTS,
        width=200,
        height=200,
        transform=Affine(10, 0, 520000, 0, -10, 4000000),
    )
    _run(tmp_path / "in", tmp_path / "out")
    second = json.loads((tmp_path / "out" / STAC_DIR / COLLECTION_FILE).read_text())
    validate(second, "collection")
    assert len([link for link in second["links"] if link["rel"] == "item"]) == 2
    assert second["extent"]["spatial"]["bbox"][0][2] > first["extent"]["spatial"]["bbox"][0][2]


def test_the_validator_refuses_an_item_without_its_mlm_fields(tmp_path):
    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=200, height=200)
    _run(tmp_path / "in", tmp_path / "out")
    (path,) = (p for p in (tmp_path / "out" / STAC_DIR).glob("*.json") if p.name != COLLECTION_FILE)
    doc = json.loads(path.read_text())
    del doc["properties"]["mlm:architecture"]
    with pytest.raises(jsonschema.ValidationError, match="mlm:architecture"):
        validate(doc, "item")
