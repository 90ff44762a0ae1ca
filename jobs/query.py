"""``aerialdet query`` and ``aerialdet quicklook``: find and look at detections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

QUERY_EPILOG = """\b
Examples:
  $ aerialdet query out/ --summary
  $ aerialdet query out/ --label vehicle --min-score 0.5 --bbox 500000 4999000 500300 5000000
  $ aerialdet query out/ --bbox 15.0 45.1 15.01 45.11 --bbox-crs EPSG:4326 --format geojson -o cars.geojson
  $ aerialdet query out/ --sql "SELECT label, count(*) FROM detections GROUP BY label"
"""


@click.command("query", epilog=QUERY_EPILOG)
@click.argument("path")
@click.option("--bbox", nargs=4, type=float, default=None, help="xmin ymin xmax ymax.")
@click.option("--bbox-crs", default=None, help="CRS of --bbox [default: the dataset's].")
@click.option("--label", "labels", multiple=True, help="Class name (repeatable).")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None)
@click.option("--scene", "scenes", multiple=True, help="Scene URI or file name (repeatable).")
@click.option("--sql", default=None, help="SQL over the filtered view `detections`.")
@click.option("--summary", is_flag=True, help="Counts per scene and class, score histogram, area.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "geojson", "gpkg", "csv", "parquet"]),
    default="table",
    show_default=True,
)
@click.option("-o", "--output", default=None, help="Output file (required for gpkg and parquet).")
@click.option("--limit", default=20, show_default=True, type=int, help="Rows shown by --format table.")
def query_command(
    path: str,
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str | None,
    labels: tuple[str, ...],
    min_score: float | None,
    scenes: tuple[str, ...],
    sql: str | None,
    summary: bool,
    fmt: str,
    output: str | None,
    limit: int,
) -> None:
    """Query the detections under PATH (an output directory, file or glob)."""
    from pipeline.query import Filters, QueryError, read_detections, run_sql
    from pipeline.query import summary as summarise

    filters = Filters(bbox, bbox_crs, labels, min_score, scenes)
    try:
        if summary:
            click.echo(json.dumps(summarise(path, filters), indent=2))
            return
        if sql:
            table = run_sql(path, sql, filters)
            df = table.to_pandas()
            if fmt == "csv":
                df.to_csv(output or sys.stdout, index=False)
            elif fmt == "table":
                click.echo(df.to_string(max_rows=limit))
            else:
                raise click.UsageError("--sql results are tables: use --format table or csv")
            return
        gdf = read_detections(
            path, bbox=bbox, bbox_crs=bbox_crs, labels=labels, min_score=min_score, scenes=scenes
        )
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "table":
        cols = [
            c
            for c in ("label", "score", "scene", "xmin_px", "ymin_px", "xmax_px", "ymax_px")
            if c in gdf.columns
        ]
        click.echo(gdf[cols].sort_values("score", ascending=False).to_string(max_rows=limit))
        click.echo(f"{len(gdf)} detection(s), CRS {gdf.crs.to_string() if gdf.crs else None}")
    elif fmt == "geojson":
        text = gdf.to_crs("OGC:CRS84").to_json(drop_id=True) if gdf.crs else gdf.to_json()
        if output:
            Path(output).write_text(text)
        else:
            click.echo(text)
    elif fmt == "csv":
        df = gdf.assign(geometry=gdf.geometry.to_wkt())
        df.to_csv(output or sys.stdout, index=False)
    else:
        if not output:
            raise click.UsageError(f"--format {fmt} writes a file: pass -o FILE")
        if fmt == "gpkg":
            gdf.to_file(output, driver="GPKG", layer="detections")
        else:
            gdf.to_parquet(output, schema_version="1.1.0", write_covering_bbox=True)
    if output:
        click.echo(f"wrote {len(gdf)} detection(s) to {output}", err=True)


@click.command("quicklook")
@click.argument("path")
@click.option("--scene", required=True, help="Scene URI (as in the `scene` column) or its file name.")
@click.option("-o", "--output", required=True, help="PNG to write.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--max-size-px", default=1024, show_default=True, type=click.IntRange(min=64))
def quicklook_command(path: str, scene: str, output: str, min_score: float, max_size_px: int) -> None:
    r"""Draw the detections of one scene of PATH over a downsampled view of it.

    \b
    Example:
      $ aerialdet quicklook out/ --scene scene_000.tif -o scene_000.png
    """
    from pipeline.query import QueryError, read_detections
    from pipeline.quicklook import render_quicklook

    try:
        gdf = read_detections(path, scenes=(scene,), min_score=min_score)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    uris = sorted(set(gdf["scene"])) if len(gdf) else [scene]
    if len(uris) > 1:
        raise click.ClickException(f"--scene {scene!r} matches several scenes: {uris}; give the full URI")
    uri = uris[0]
    if not uri.startswith("s3://") and not Path(uri).exists():
        raise click.ClickException(f"scene {uri!r} not found (and no detections name it)")
    boxes = gdf[["xmin_px", "ymin_px", "xmax_px", "ymax_px"]].to_numpy() if len(gdf) else []
    out = render_quicklook(
        uri,
        boxes,
        list(gdf["label"]) if len(gdf) else [],
        gdf["score"].to_numpy() if len(gdf) else [],
        output,
        max_size_px=max_size_px,
    )
    click.echo(f"wrote {out} ({len(gdf)} detections)")
