"""STAC sources -> scene URIs: Items, ItemCollections, Collections, Catalogs, stac-geoparquet, API searches.

A STAC source is listed like any other (``(uri, reason)`` pairs, lazily, in
the catalog's order), so the run's window, claims and accounting are the
same.  Each item is one scene, whose URI is the href of one of its assets:

* ``StacOptions.asset`` names the asset; by default the first asset with
  role ``data`` or ``visual`` and a GeoTIFF/COG media type (``image/tiff``);
* hrefs are made absolute against the item's own location; ``s3://`` hrefs
  and local paths are read; ``http(s)://`` hrefs are ``skipped`` with the
  reason (the workers read only S3 and files; mirror the assets to a bucket,
  or point the asset at its ``s3://`` alternate);
* when the asset declares its bands (``eo:bands`` or ``raster:bands``) and
  ``--bands`` asks for a band past them, the item is ``skipped`` with the
  reason (band names are not matched: ``--bands`` stays 1-based numbers).

The item id, its collection and its location travel beside the URI in
``SceneTags`` (consumed by ``pipeline.report.RunRecord.add``, so only the
window's entries are held) and end up in the scene's line of the run report.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
import shapely.geometry

from pipeline.aoi import Aoi, lonlat_outside
from pipeline.errors import SourceError
from pipeline.sources import is_s3_uri, iter_listing, normalize_scene_uri, unsafe_s3_key_reason
from pipeline.stac_search import StacSearch as StacSearch  # re-exported: StacOptions.search
from pipeline.stac_search import search_items, self_href

STAC_JSON_SUFFIXES = (".json", ".geojson")
STAC_PARQUET_SUFFIXES = (".parquet", ".geoparquet")
RASTER_ROLES = ("data", "visual")
RASTER_MEDIA_PREFIXES = ("image/tiff", "image/vnd.stac.geotiff")
_TYPES = {
    "Feature": "Item",
    "FeatureCollection": "ItemCollection",
    "Collection": "Collection",
    "Catalog": "Catalog",
}


@dataclass(frozen=True, slots=True)
class StacOptions:
    """How items become scenes.

    Attributes:
        asset: ``--asset`` key (None: the first GeoTIFF/COG asset with role data or visual).
        search: the API search, when the source is one.
    """

    asset: str | None = None
    search: StacSearch | None = None


@dataclass(frozen=True, slots=True)
class ItemRef:
    """What the run keeps of the item a scene came from."""

    item_id: str
    collection: str | None
    href: str | None
    bbox: tuple[float, ...] | None = None


ListingEntry = tuple[str, str | None, ItemRef | None]  # (uri, why it is skipped, the item it came from)


@dataclass
class SceneTags:
    """Item references of listed scenes, by URI, until the scene's line is recorded (then dropped)."""

    refs: dict[str, list[ItemRef]] = field(default_factory=dict)

    def put(self, uri: str, ref: ItemRef) -> None:
        """Remember where ``uri`` came from (a second item with the same URI is stacked on the first)."""
        self.refs.setdefault(uri, []).append(ref)

    def peek(self, uri: str) -> ItemRef | None:
        """The item of ``uri`` listed last, kept."""
        stack = self.refs.get(uri)
        return stack[-1] if stack else None

    def pop(self, uri: str) -> ItemRef | None:
        """The item of ``uri`` listed last (once), or None when it came from no item.

        Skipped items are recorded as they are listed, so the last one put is
        the one whose line is being recorded.
        """
        stack = self.refs.get(uri)
        if not stack:
            return None
        ref = stack.pop()
        if not stack:
            del self.refs[uri]
        return ref


def is_stac_file(source: str) -> bool:
    """Whether ``source`` names a STAC JSON document or a stac-geoparquet file (by its suffix)."""
    return source.lower().endswith(STAC_JSON_SUFFIXES + STAC_PARQUET_SUFFIXES)


def read_source_bytes(uri: str) -> bytes:
    """The bytes of a local file or an S3 object (with the configured endpoint and retries).

    Raises:
        SourceError: it does not exist or cannot be read.
    """
    if not is_s3_uri(uri):
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read STAC source {uri!r}: {exc.strerror or exc}") from None
    from botocore.exceptions import BotoCoreError, ClientError

    from pipeline.sources import retry_settings, s3_client

    bucket, _, key = uri[5:].partition("/")
    try:
        return bytes(s3_client(*retry_settings()).get_object(Bucket=bucket, Key=key)["Body"].read())
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot read STAC source {uri!r}: {exc}") from None


def _json_items(uri: str) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``(item dict, item href)`` of a STAC JSON document, walking a catalog's children lazily."""
    raw = read_source_bytes(uri)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"{uri}: not STAC JSON ({exc}); pass a STAC Item, ItemCollection, Collection or Catalog"
        ) from None
    kind = _TYPES.get(str(doc.get("type"))) if isinstance(doc, dict) else None
    if kind is None:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise SourceError(
            f"{uri}: not a STAC document (type {got!r}); expected an Item, ItemCollection, Collection or Catalog"
        )
    if kind == "Item":
        yield doc, uri
        return
    if kind == "ItemCollection":
        for feature in doc.get("features") or []:
            yield feature, self_href(feature) or uri
        return
    yield from _walk_catalog(doc, uri, set())


def _read_child(href: str, parent: str) -> dict[str, Any]:
    """A child catalog's or an item's JSON, or a SourceError naming it and its parent."""
    try:
        doc = json.loads(read_source_bytes(href))
    except SourceError as exc:
        raise SourceError(f"{parent}: invalid STAC Catalog: its link {href} cannot be read ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{parent}: invalid STAC Catalog: {href} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{parent}: invalid STAC Catalog: {href} is not a STAC object")
    return doc


def _walk_catalog(
    doc: dict[str, Any], href: str, seen: set[str]
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """A catalog's items, then each child's, depth first, one JSON document read at a time.

    Not pystac's ``get_items(recursive=True)``: it resolves every child of a
    catalog before the first item, and a wide catalog would be read whole
    before the first tile.  A link seen before (a loop) is followed once.
    """
    seen.add(href)
    links = [
        link
        for link in doc.get("links") or []
        if isinstance(link, dict) and isinstance(link.get("href"), str)
    ]
    for rel in ("item", "child"):
        for link in links:
            if link.get("rel") != rel:
                continue
            target = _absolute_href(str(link["href"]), href)
            if target in seen:
                continue
            child = _read_child(target, href)
            if rel == "item":
                seen.add(target)
                yield child, target
            else:
                yield from _walk_catalog(child, target, seen)


def _parquet_items(uri: str) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Item dicts of a stac-geoparquet file, a record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items

    try:
        parquet = pq.ParquetFile(io.BytesIO(read_source_bytes(uri)))
        for batch in parquet.iter_batches(batch_size=1000):
            for item in stac_table_to_items(pa.Table.from_batches([batch])):
                yield dict(item), self_href(item)
    except SourceError:
        raise
    except Exception as exc:  # pyarrow's and stac-geoparquet's errors on a file that is not one
        raise SourceError(f"{uri}: not a stac-geoparquet file ({type(exc).__name__}: {exc})") from None


def pick_asset(item: dict[str, Any], key: str | None) -> tuple[str, dict[str, Any]] | str:
    """The raster asset of an item, ``(key, asset)``; or why it has none.

    Example:
        >>> pick_asset({"assets": {"a": {"href": "x.tif", "type": "image/tiff", "roles": ["data"]}}}, None)[0]
        'a'
    """
    assets = item.get("assets")
    if not isinstance(assets, dict) or not assets:
        return "the item has no assets"
    if key is not None:
        if not isinstance(assets.get(key), dict):
            return f"the item has no asset {key!r} (its assets: {', '.join(sorted(assets))})"
        return key, assets[key]
    for name, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        roles = asset.get("roles") or []
        media = str(asset.get("type") or "").lower()
        if any(r in RASTER_ROLES for r in roles) and media.startswith(RASTER_MEDIA_PREFIXES):
            return name, asset
    return (
        "the item has no raster asset (no asset with role data or visual and a GeoTIFF/COG media type; "
        f"its assets: {', '.join(sorted(assets))}); name one with --asset"
    )


def _absolute_href(href: str, item_href: str | None) -> str:
    """``href`` made absolute against the item's location (a relative local path or S3 key)."""
    if "://" in href or href.startswith("/") or item_href is None:
        return href
    if is_s3_uri(item_href):
        import posixpath

        base = item_href[5:].rsplit("/", 1)[0]
        return "s3://" + posixpath.normpath(f"{base}/{href}")
    if "://" in item_href:
        from urllib.parse import urljoin

        return urljoin(item_href, href)
    import os.path

    return os.path.normpath(os.path.join(os.path.dirname(item_href), href))


def _band_reason(asset: dict[str, Any], bands: tuple[int, ...]) -> str | None:
    """Why ``bands`` cannot be read from an asset that declares fewer bands, or None."""
    declared = asset.get("eo:bands") or asset.get("raster:bands") or asset.get("bands")
    if isinstance(declared, list) and declared and bands and max(bands) > len(declared):
        return (
            f"its asset declares {len(declared)} band(s) but --bands {','.join(map(str, bands))} asks for band "
            f"{max(bands)}; pass --bands within 1..{len(declared)}"
        )
    return None


def item_scene(
    item: dict[str, Any],
    item_href: str | None,
    options: StacOptions,
    bands: tuple[int, ...],
    aoi: Aoi | None = None,
) -> tuple[str, str | None, ItemRef]:
    """One item -> ``(scene uri, reason it is skipped or None, its reference)``.

    An item whose footprint misses ``aoi`` is skipped here, from its own
    geometry (else bbox), before any header is opened.
    """
    item_id = str(item.get("id") or "?")
    collection = item.get("collection")
    ref = ItemRef(item_id, str(collection) if collection else None, item_href, _bbox(item))
    label = f"stac item {item_id}" + (f" (collection {collection})" if collection else "")
    picked = pick_asset(item, options.asset)
    if isinstance(picked, str):
        return _item_uri(ref), f"{label}: {picked}", ref
    key, asset = picked
    href = asset.get("href")
    if not isinstance(href, str) or not href:
        return _item_uri(ref), f"{label}: asset {key!r} has no href", ref
    uri = normalize_scene_uri(_absolute_href(href, item_href))
    if uri.lower().startswith(("http://", "https://")):
        reason = (
            f"{label}: asset {key!r} is served over HTTP ({uri}); only s3:// and local assets are read: "
            "mirror it to a bucket or pick an s3:// asset with --asset"
        )
        return uri, reason, ref
    if is_s3_uri(uri):
        unsafe = unsafe_s3_key_reason(uri)
        if unsafe:
            return uri, f"{label}: {unsafe}", ref
    if aoi is not None and lonlat_outside(aoi, item_footprint(item)):
        reason = (
            f"{label}: its footprint lies outside the area of interest (--aoi {aoi.source}); "
            "no header or tile of it was read"
        )
        return uri, reason, ref
    return uri, _band_reason(asset, bands), ref


def item_footprint(item: dict[str, Any]) -> shapely.Geometry | None:
    """An item's footprint in OGC:CRS84: its ``geometry``, else its ``bbox``; None when it has neither.

    A bbox across the antimeridian (west > east) or a geometry shapely cannot
    read is None too: the scene's header decides instead.
    """
    geometry = item.get("geometry")
    if isinstance(geometry, dict):
        try:
            shape = shapely.geometry.shape(geometry)
            if not shape.is_empty:
                return shape
        except Exception:  # shapely's errors on a malformed GeoJSON geometry: fall back to the bbox
            pass
    bbox = _bbox(item)
    if bbox is None:
        return None
    west, south, east, north = (
        (bbox[0], bbox[1], bbox[2], bbox[3]) if len(bbox) == 4 else bbox[:2] + bbox[3:5]
    )
    return shapely.box(west, south, east, north) if west <= east and south <= north else None


def _item_uri(ref: ItemRef) -> str:
    """The URI a skipped item without a usable asset is listed under: ``stac-item:<collection>/<id>``."""
    return f"stac-item:{ref.collection or ''}/{ref.item_id}"


def _bbox(item: dict[str, Any]) -> tuple[float, ...] | None:
    bbox = item.get("bbox")
    if isinstance(bbox, list) and len(bbox) in (4, 6) and all(isinstance(v, (int, float)) for v in bbox):
        return tuple(float(v) for v in bbox)
    return None


def iter_items(source: str, options: StacOptions) -> Iterator[tuple[dict[str, Any], str | None]]:
    """The items of a STAC source, lazily: an API search, a stac-geoparquet file, or a STAC JSON document."""
    if options.search is not None:
        return search_items(options.search)
    if source.lower().endswith(STAC_PARQUET_SUFFIXES):
        return _parquet_items(source)
    return _json_items(source)


def _stac_entries(
    source: str, options: StacOptions, bands: tuple[int, ...], aoi: Aoi | None
) -> Iterator[ListingEntry]:
    """A STAC source's ``(uri, reason, item ref)``, lazily, in the catalog's order (``iter_stac_listing``)."""
    first_item: dict[str, str] = {}
    seen_any = False
    for item, item_href in iter_items(source, options):
        seen_any = True
        uri, reason, ref = item_scene(item, item_href, options, bands, aoi)
        if reason is None and uri in first_item:
            reason = (
                f"stac item {ref.item_id}: its asset {uri} is the scene of item {first_item[uri]} already"
            )
        elif reason is None:
            first_item[uri] = ref.item_id
        yield uri, reason, ref
    if not seen_any:
        what = f"the STAC search {options.search.url}" if options.search else f"STAC source {source!r}"
        raise SourceError(f"{what} returned no items; widen --collections/--datetime/--bbox/--aoi/--filter")


def tag_listing(entries: Iterable[ListingEntry], tags: SceneTags) -> Iterator[tuple[str, str | None]]:
    """``(uri, reason)`` of each entry, its item reference put in ``tags`` as it is yielded (not before)."""
    for uri, reason, ref in entries:
        if ref is not None:
            tags.put(uri, ref)
        yield uri, reason


def iter_stac_listing(
    source: str,
    options: StacOptions,
    tags: SceneTags,
    bands: tuple[int, ...] = (),
    aoi: Aoi | None = None,
) -> Iterator[tuple[str, str | None]]:
    """List a STAC source as ``(uri, reason)``, as ``sources.iter_listing`` lists a folder.

    Each item's reference goes to ``tags`` under the URI it yields.  Two items
    with one asset href are one scene: the second is skipped, naming the first.
    With ``aoi``, an item whose footprint misses it is skipped (``item_scene``).

    Raises:
        SourceError: the source cannot be read, is not STAC, or holds no item (when the listing ends).
    """
    return tag_listing(_stac_entries(source, options, bands, aoi), tags)


def listing_entries(
    source: str,
    options: StacOptions | None,
    extensions: tuple[str, ...],
    bands: tuple[int, ...] = (),
    aoi: Aoi | None = None,
) -> Iterator[ListingEntry]:
    """The run's one listing as ``(uri, reason, item ref or None)``: a STAC source's items, else a folder's files.

    A source is STAC when ``options`` are given or it is a ``.json``/``.parquet``
    file; other sources are ``sources.iter_listing``'s, with no item ref.
    ``tag_listing`` turns entries into what the lifecycle consumes.
    """
    if options is not None or is_stac_file(source):
        return _stac_entries(source, options or StacOptions(), bands, aoi)
    return ((uri, reason, None) for uri, reason in iter_listing(source, extensions=extensions))


def scene_listing(
    source: str,
    options: StacOptions | None,
    extensions: tuple[str, ...],
    tags: SceneTags,
    bands: tuple[int, ...] = (),
    aoi: Aoi | None = None,
) -> Iterator[tuple[str, str | None]]:
    """The listing a run consumes: ``listing_entries`` with the item refs put in ``tags``."""
    return tag_listing(listing_entries(source, options, extensions, bands, aoi), tags)
