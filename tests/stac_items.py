"""STAC items for scenes the tests write: footprints from the GeoTIFF, assets wherever the test puts them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio
from pyproj import Transformer

GEOTIFF = "image/tiff; application=geotiff; profile=cloud-optimized"


def footprint(path: Path) -> tuple[list[float], dict[str, Any]]:
    """``(bbox, geometry)`` of a GeoTIFF in OGC:CRS84."""
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        to_lonlat = Transformer.from_crs(src.crs, "OGC:CRS84", always_xy=True)
    corners = [
        to_lonlat.transform(x, y) for x, y in ((left, bottom), (right, bottom), (right, top), (left, top))
    ]
    ring = [list(c) for c in corners] + [list(corners[0])]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return [min(xs), min(ys), max(xs), max(ys)], {"type": "Polygon", "coordinates": [ring]}


def item(
    item_id: str,
    scene: Path,
    href: str,
    *,
    collection: str | None = "scenes",
    assets: dict[str, Any] | None = None,
    datetime: str = "2024-06-01T10:00:00Z",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A STAC 1.0 Item whose ``image`` asset (role data, COG) is ``href``, footprint of ``scene``."""
    bbox, geometry = footprint(scene)
    out: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "bbox": bbox,
        "geometry": geometry,
        "properties": {"datetime": datetime, **(properties or {})},
        "links": [],
        "assets": assets
        if assets is not None
        else {"image": {"href": href, "type": GEOTIFF, "roles": ["data"]}},
    }
    if collection:
        out["collection"] = collection
    return out


def collection(collection_id: str, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A STAC 1.0 Collection whose extent covers ``items``."""
    boxes = [i["bbox"] for i in items] or [[-180, -90, 180, 90]]
    bbox = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": f"test scenes {collection_id}",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}},
        "links": [],
    }


def item_collection(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A STAC ItemCollection (GeoJSON FeatureCollection)."""
    return {"type": "FeatureCollection", "features": list(items)}


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path
