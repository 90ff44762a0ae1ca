"""``detect``'s STAC options and the ``StacOptions`` they build (``pipeline.stac_source``).

``--stac-search``, ``--collections``, ``--datetime``, ``--bbox``, ``--filter``, ``--asset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from jobs.options import FINITE_FLOAT

if TYPE_CHECKING:
    from pipeline.aoi import Aoi
    from pipeline.stac_source import StacOptions

F = Callable[..., Any]

STAC_EPILOG = """\b
STAC:
  $ aerialdet detect catalog.json --model ckpt --out out/            # Item/ItemCollection/Collection/Catalog
  $ aerialdet detect items.parquet --model ckpt --out out/           # stac-geoparquet
  $ aerialdet detect --stac-search http://127.0.0.1:8081 --collections C --datetime 2024-01-01/2024-12-31 \\
      --bbox 15.0 45.0 15.2 45.2 --filter "eo:cloud_cover < 10" --model ckpt --out s3://out/
"""


def stac_options(f: F) -> F:
    """The STAC options of ``detect``, applied in the order ``--help`` shows them."""
    options = [
        click.option(
            "--stac-search", default=None, help="STAC API to search (its landing page URL); no SOURCE then."
        ),
        click.option(
            "--collections", default=None, help="Comma-separated collections to search (with --stac-search)."
        ),
        click.option(
            "--datetime", "stac_datetime", default=None, help="Search instant or start/end (RFC 3339)."
        ),
        click.option(
            "--bbox",
            "stac_bbox",
            nargs=4,
            type=FINITE_FLOAT,
            default=None,
            help="Search box: west south east north, lon/lat (OGC:CRS84).",
        ),
        click.option(
            "--filter", "stac_filter", default=None, help="CQL2 filter, text or JSON (with --stac-search)."
        ),
        click.option(
            "--aoi",
            default=None,
            help="Area of interest: a vector file (any CRS) or WKT (OGC:CRS84 unless SRID=<epsg>;); only "
            "tiles meeting it are read, detections outside it dropped, scenes outside it skipped.",
        ),
        click.option(
            "--asset",
            default=None,
            help="Asset key of the raster in each STAC item [default: the first GeoTIFF/COG with role data or visual].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def listed_source(source: str | None, stac: StacOptions | None) -> str:
    """What the run lists: SOURCE, else the searched API's URL (``build_stac`` made sure one is given)."""
    if source is not None:
        return source
    assert stac is not None and stac.search is not None
    return stac.search.url


def build_aoi(opts: dict[str, Any]) -> Aoi | None:
    """``--aoi`` -> ``pipeline.aoi.Aoi`` (None without it); a bad AOI is a usage error (one line, exit 2)."""
    if not opts.get("aoi"):
        return None
    from pipeline.aoi import AoiError, load_aoi

    try:
        return load_aoi(opts["aoi"])
    except AoiError as exc:
        raise click.BadParameter(str(exc).removeprefix("--aoi "), param_hint="--aoi") from None


def build_stac(source: str | None, opts: dict[str, Any], aoi: Aoi | None = None) -> StacOptions | None:
    """``StacOptions`` from the options (None for a plain raster source), checked for what goes together.

    Raises:
        click.UsageError: search options without ``--stac-search``, or both SOURCE and ``--stac-search``.
    """
    from pipeline.stac_source import StacOptions, StacSearch, is_stac_file

    url = opts.get("stac_search")
    search_only = [name for name in ("collections", "stac_datetime", "stac_filter") if opts.get(name)]
    if opts.get("stac_bbox"):
        search_only.append("stac_bbox")
    if url is None:
        if search_only:
            flags = ", ".join("--" + n.replace("stac_", "").replace("_", "-") for n in search_only)
            raise click.UsageError(f"{flags} filter a STAC API search: add --stac-search URL")
        if source is None:
            raise click.UsageError("pass SOURCE (rasters, a STAC file) or --stac-search URL")
        if opts.get("asset") or is_stac_file(source):
            return StacOptions(asset=opts.get("asset"))
        return None
    if source is not None:
        raise click.UsageError(f"pass SOURCE ({source!r}) or --stac-search, not both")
    if aoi is not None and opts.get("stac_bbox"):
        raise click.UsageError("--aoi already bounds the search (as its intersects geometry): drop --bbox")
    if not url.lower().startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL of a STAC API", param_hint="--stac-search")
    collections = tuple(c.strip() for c in (opts.get("collections") or "").split(",") if c.strip())
    search = StacSearch(
        url=url.rstrip("/"),
        collections=collections,
        datetime=opts.get("stac_datetime"),
        bbox=tuple(opts["stac_bbox"]) if opts.get("stac_bbox") else None,
        cql2_filter=opts.get("stac_filter"),
        intersects=aoi.geojson() if aoi is not None else None,
    )
    return StacOptions(asset=opts.get("asset"), search=search)
