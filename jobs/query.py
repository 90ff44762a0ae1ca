"""``aerialdet query`` and ``aerialdet quicklook``: find and look at detections."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from jobs.options import FINITE_FLOAT, UserError, min_score_option

QUERY_EPILOG = """\b
Examples:
  $ aerialdet query out/ --summary
  $ aerialdet query out/ --label vehicle --min-score 0.5 --bbox 500000 4999000 500300 5000000
  $ aerialdet query out/ --bbox 15.0 45.1 15.01 45.11 --bbox-crs EPSG:4326 --format geojson -o cars.geojson
  $ aerialdet query out/ --label vehicle --format fgb -o vehicles.fgb
  $ aerialdet query out/ --sql "SELECT label, count(*) FROM detections GROUP BY label"
  $ AWS_ENDPOINT_URL=http://127.0.0.1:9000 aerialdet query s3://bucket/out/ --bbox 500000 4999000 500300 5000000
"""

TABLE_COLUMNS = ("label", "score", "scene", "xmin_px", "ymin_px", "xmax_px", "ymax_px")
FILE_FORMATS = ("gpkg", "fgb", "parquet")  # binary formats: -o is required


@contextmanager
def _user_errors() -> Iterator[None]:
    """A QueryError (bad filter, path or SQL) becomes one line and exit 2."""
    from pipeline.query_sql import QueryError

    try:
        yield
    except QueryError as exc:
        raise UserError(str(exc)) from None


def _check_output(output: str | None) -> None:
    """Refuse an output file whose folder does not exist or cannot be written (nothing is created)."""
    if output is None:
        return
    folder = Path(output).parent
    if not folder.is_dir():
        raise UserError(f"-o {output}: folder {folder} does not exist; create it first or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"-o {output}: folder {folder} is not writable; write elsewhere")
    if Path(output).is_dir():
        raise UserError(f"-o {output}: is a folder; give a file name")


def _print_sql(path: str, sql: str, filters: Any, fmt: str, output: str | None, limit: int) -> None:
    from pipeline.query import run_sql

    if fmt not in ("table", "csv"):
        raise click.UsageError("--sql results are tables: use --format table or csv")
    table = run_sql(path, sql, filters)
    if fmt == "csv":
        from pipeline.query_export import sql_csv_frame

        sql_csv_frame(table).to_csv(output or sys.stdout, index=False)
    else:
        click.echo(table.to_pandas().to_string(max_rows=limit))


def _write_parquet(path: str, filters: Any, output: str) -> int:
    """The matching rows as one GeoParquet file, by the writer `detect` uses (same schema and metadata)."""
    from dataclasses import asdict

    from pipeline.geoparquet import COLUMNS, SCHEMA, write_geoparquet
    from pipeline.query import read_table

    table, crs = read_table(path, filters)
    if table.schema.names != list(COLUMNS):
        raise UserError(
            f"{path}: columns {table.schema.names} differ from aerialdet's detections; "
            "use --format gpkg or geojson"
        )
    write_geoparquet(
        output, table.cast(SCHEMA), crs, extra_metadata={"query": {"path": path, **asdict(filters)}}
    )
    return int(table.num_rows)


def _write_detections(gdf: Any, fmt: str, output: str | None, limit: int) -> None:
    """``gdf`` as a table on stdout, or GeoJSON / CSV / GeoPackage / FlatGeobuf (``pipeline.query_export``)."""
    from pipeline.query_export import write_export

    if fmt == "table":
        cols = [c for c in TABLE_COLUMNS if c in gdf.columns]
        click.echo(gdf[cols].sort_values("score", ascending=False).to_string(max_rows=limit))
        click.echo(f"{len(gdf)} detection(s), CRS {gdf.crs.to_string() if gdf.crs else None}")
    else:
        try:
            written = write_export(gdf, fmt, output)
        except ValueError as exc:  # rows the format cannot hold (GeoJSON of a local CRS)
            raise UserError(f"--format {fmt}: {exc}") from None
        for sidecar in written[1:]:
            click.echo(f"wrote the CRS to {sidecar}", err=True)


@click.command("query", epilog=QUERY_EPILOG)
@click.argument("path")
@click.option("--bbox", nargs=4, type=FINITE_FLOAT, default=None, help="xmin ymin xmax ymax.")
@click.option("--bbox-crs", default=None, help="CRS of --bbox [default: the dataset's].")
@click.option("--label", "labels", multiple=True, help="Class name (repeatable).")
@min_score_option(None)
@click.option("--scene", "scenes", multiple=True, help="Scene URI or file name (repeatable).")
@click.option("--item-id", "item_ids", multiple=True, help="STAC item id the scene came from (repeatable).")
@click.option("--collection", "collections", multiple=True, help="STAC collection of that item (repeatable).")
@click.option(
    "--sql",
    default=None,
    help="SQL over the filtered view `detections`, run as written by full DuckDB: this is shell access: "
    "it can read and write any file this user can (COPY, read_text, ATTACH). Never pass SQL you did "
    "not write; the other options never become SQL.",
)
@click.option("--summary", is_flag=True, help="Counts per scene and class, score histogram, area.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "geojson", "gpkg", "fgb", "csv", "parquet"]),
    default="table",
    show_default=True,
    help="table prints; csv and geojson (RFC 7946, lon/lat) print or go to -o; gpkg, fgb (FlatGeobuf) "
    "and parquet need -o.",
)
@click.option("-o", "--output", default=None, help="Output file (required for gpkg, fgb and parquet).")
@click.option("--limit", default=20, show_default=True, type=int, help="Rows shown by --format table.")
def query_command(
    path: str,
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str | None,
    labels: tuple[str, ...],
    min_score: float | None,
    scenes: tuple[str, ...],
    item_ids: tuple[str, ...],
    collections: tuple[str, ...],
    sql: str | None,
    summary: bool,
    fmt: str,
    output: str | None,
    limit: int,
) -> None:
    """Query the detections under PATH (an output directory, file, glob or s3://bucket/prefix)."""
    from pipeline.query import Filters, read_detections
    from pipeline.query import summary as summarise

    if fmt in FILE_FORMATS and not output and not (summary or sql):
        raise click.UsageError(f"--format {fmt} writes a file: pass -o FILE")
    _check_output(output)
    with _user_errors():
        if item_ids or collections:  # the run report says which scenes came from those STAC items
            from pipeline.stac_lookup import scenes_of_items

            scenes = (*scenes, *scenes_of_items(path, item_ids, collections))
        filters = Filters(bbox, bbox_crs, labels, min_score, scenes)
        if summary:
            click.echo(json.dumps(summarise(path, filters), indent=2))
            return
        if sql:
            _print_sql(path, sql, filters, fmt, output, limit)
            return
        if fmt == "parquet":
            num_rows = _write_parquet(path, filters, output or "")
        else:
            gdf = read_detections(
                path, bbox=bbox, bbox_crs=bbox_crs, labels=labels, min_score=min_score, scenes=scenes
            )
            _write_detections(gdf, fmt, output, limit)
            num_rows = len(gdf)
    if output:
        click.echo(f"wrote {num_rows} detection(s) to {output}", err=True)


def _one_scene(gdf: Any, scene: str) -> str:
    """The URI of the one scene that ``--scene`` names (its detections, else the path as given)."""
    uris = sorted(set(gdf["scene"])) if len(gdf) else [scene]
    if len(uris) > 1:
        raise UserError(f"--scene {scene!r} matches several scenes: {uris}; give the full URI")
    uri = uris[0]
    if not uri.startswith("s3://") and not Path(uri).is_file():
        raise UserError(f"scene {uri!r} not found (and no detections name it)")
    return uri


QUICKLOOK_EPILOG = """\b
Example:
  $ aerialdet quicklook out/ --scene scene_000.tif -o scene_000.png
"""


@click.command("quicklook", epilog=QUICKLOOK_EPILOG)
@click.argument("path")
@click.option("--scene", required=True, help="Scene URI (as in the `scene` column) or its file name.")
@click.option("-o", "--output", required=True, help="PNG to write (its folder must exist).")
@min_score_option(0.3)
@click.option(
    "--max-size-px",
    default=1024,
    show_default=True,
    type=click.IntRange(min=64),
    help="Longest side of the PNG; the scene is read at a coarser overview to fit.",
)
def quicklook_command(path: str, scene: str, output: str, min_score: float, max_size_px: int) -> None:
    """Draw the detections of one scene of PATH (a folder or s3://bucket/prefix) over a view of it."""
    from rasterio.errors import RasterioIOError

    from pipeline.query import read_detections
    from pipeline.quicklook import render_quicklook

    _check_output(output)
    with _user_errors():
        gdf = read_detections(path, scenes=(scene,), min_score=min_score)
    uri = _one_scene(gdf, scene)
    empty = len(gdf) == 0
    try:
        out = render_quicklook(
            uri,
            [] if empty else gdf[["xmin_px", "ymin_px", "xmax_px", "ymax_px"]].to_numpy(),
            [] if empty else list(gdf["label"]),
            [] if empty else gdf["score"].to_numpy(),
            output,
            max_size_px=max_size_px,
        )
    except RasterioIOError as exc:
        raise UserError(f"scene {uri}: cannot be read as a raster ({exc})") from None
    click.echo(f"wrote {out} ({len(gdf)} detections)")
