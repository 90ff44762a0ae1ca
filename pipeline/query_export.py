"""Query results -> files that GIS clients read right: GeoJSON, CSV, GeoPackage, FlatGeobuf.

The rows come from ``pipeline.query.read_detections`` (a GeoDataFrame in the
dataset's CRS, with the contract's ``bbox`` covering struct as one column of
dicts).  No client can parse a dict printed into a text field, so each format
writes the box its own way:

===========  ==============================================================
format       what is written
===========  ==============================================================
``csv``      ``bbox`` becomes four number columns ``bbox_xmin .. bbox_ymax``
             (dataset CRS, at ``bbox``'s place); the geometry is WKT; the CRS
             goes in a GeoCSV ``.prj`` sidecar, which GDAL reads.
``gpkg``     ``bbox`` is dropped: every GeoPackage geometry blob carries its
             envelope and the layer's R-tree indexes it, so four more columns
             would only repeat it (and go stale when a client edits a shape).
             GeoPackage 1.3 (what GDAL < 3.7, Debian 12's 3.6.2, reads without
             a warning), geometry type declared Polygon even for 0 rows.
``fgb``      FlatGeobuf with its packed Hilbert R-tree (``SPATIAL_INDEX=YES``),
             which holds each feature's box: ``bbox`` dropped, as for gpkg.
``geojson``  RFC 7946: geometry in OGC:CRS84 lon/lat, outer rings
             counter-clockwise and holes clockwise, no ``crs`` member; the
             metre ``bbox`` property is dropped and each feature (and the
             collection) gets the RFC's own ``bbox`` member, in degrees.
===========  ==============================================================

Example:
    >>> gdf = read_detections("out/", labels=["car"])  # doctest: +SKIP
    >>> write_export(gdf, "fgb", "cars.fgb")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import first_line

if TYPE_CHECKING:
    import geopandas
    import pandas
    import pyarrow

EXPORT_FORMATS = ("geojson", "csv", "gpkg", "fgb")
"""Formats ``write_export`` writes (``query --format parquet`` uses ``pipeline.geoparquet``)."""
VECTOR_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}
"""Binary formats (a file is needed) and their GDAL driver."""
LAYER = "detections"
"""The layer name in a GeoPackage."""
# pyogrio's GDAL writes GeoPackage 1.4 by default; GDAL 3.6.2 warns it "may only be partially supported"
GPKG_VERSION = "1.3"
BBOX_COLUMN = "bbox"
BBOX_NUMBER_COLUMNS = ("bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax")
GEOJSON_CRS = "OGC:CRS84"


def with_bbox_numbers(gdf: geopandas.GeoDataFrame) -> geopandas.GeoDataFrame:
    """``gdf`` with the ``bbox`` struct column replaced by ``bbox_xmin .. bbox_ymax`` floats at its place.

    The numbers are the geometry's bounds (the covering struct's definition),
    computed in one vectorised call; a frame without ``bbox`` is returned as is.
    """
    if BBOX_COLUMN not in gdf.columns:
        return gdf
    at = list(gdf.columns).index(BBOX_COLUMN)
    out = gdf.drop(columns=[BBOX_COLUMN])
    bounds = gdf.geometry.bounds.to_numpy(dtype="float64").reshape(-1, 4)  # (N, 4) xmin ymin xmax ymax
    for i, name in enumerate(BBOX_NUMBER_COLUMNS):
        out.insert(at + i, name, bounds[:, i])
    return out


def without_bbox(gdf: geopandas.GeoDataFrame) -> geopandas.GeoDataFrame:
    """``gdf`` without the ``bbox`` struct column (for formats whose geometry carries its box)."""
    return gdf.drop(columns=[BBOX_COLUMN]) if BBOX_COLUMN in gdf.columns else gdf


def _in_lon_lat(gdf: geopandas.GeoDataFrame) -> geopandas.GeoDataFrame:
    """``gdf`` transformed to OGC:CRS84; a CRS that cannot get there (a local engineering CRS) is a ValueError."""
    import numpy as np
    from pyproj.exceptions import ProjError

    hint = "use --format gpkg, fgb or csv, which keep the dataset's CRS"
    try:
        frame = gdf.to_crs(GEOJSON_CRS)
    except ProjError as exc:
        reason = first_line(exc)
        raise ValueError(
            f"GeoJSON is lon/lat (RFC 7946), and the detections' CRS {gdf.crs.name!r} cannot be transformed "
            f"to it ({reason}); {hint}"
        ) from exc
    if len(frame) and not np.isfinite(frame.geometry.bounds.to_numpy()).all():
        raise ValueError(
            f"GeoJSON is lon/lat (RFC 7946), and some detections in CRS {gdf.crs.name!r} fall outside "
            f"its area of use (their lon/lat is not finite); {hint}"
        )
    return frame


def geojson_text(gdf: geopandas.GeoDataFrame) -> str:
    """``gdf`` as an RFC 7946 GeoJSON FeatureCollection.

    Geometry is transformed to OGC:CRS84 (lon, lat) and its polygons oriented
    (exterior counter-clockwise, interiors clockwise, RFC 7946 section 3.1.6);
    no ``crs`` member (removed by the RFC); ``bbox`` members in degrees on
    each feature and the collection (section 5) replace the metre ``bbox``
    property.

    Raises:
        ValueError: ``gdf`` has no CRS (its coordinates cannot be put in lon/lat).
    """
    import geopandas as gpd
    import shapely

    if gdf.crs is None:
        raise ValueError("the detections have no CRS, so they cannot be written as GeoJSON (lon/lat)")
    frame = _in_lon_lat(without_bbox(gdf))
    oriented = shapely.orient_polygons(frame.geometry.to_numpy(), exterior_cw=False)
    frame = frame.set_geometry(gpd.GeoSeries(oriented, index=frame.index, crs=frame.crs))
    collection = frame.to_geo_dict(na="null", drop_id=True, show_bbox=len(frame) > 0)
    collection.pop("crs", None)  # RFC 7946 section 4: the member is removed
    return json.dumps(collection)


def csv_frame(gdf: geopandas.GeoDataFrame) -> pandas.DataFrame:
    """``gdf`` as a plain table for CSV: the bbox as four number columns, the geometry as WKT."""
    import pandas as pd

    frame = with_bbox_numbers(gdf)
    return pd.DataFrame(frame).assign(**{frame.geometry.name: frame.geometry.to_wkt()})


def sql_csv_frame(table: pyarrow.Table) -> pandas.DataFrame:
    """A ``run_sql`` result as a plain table for CSV: no struct printout, no WKB bytes.

    A struct column ``s`` (``bbox``) becomes one column per field, ``s_<field>``
    (``bbox_xmin .. bbox_ymax``); a GeoArrow WKB column (DuckDB's GEOMETRY)
    becomes WKT.  Other columns are as DuckDB returns them.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import shapely

    columns: dict[str, object] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_struct(field.type):
            for child in field.type:
                columns[f"{field.name}_{child.name}"] = pc.struct_field(column, child.name).to_pandas()
        elif (field.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb":
            columns[field.name] = shapely.to_wkt(shapely.from_wkb(column.to_numpy(zero_copy_only=False)))
        else:
            columns[field.name] = column.to_pandas()
    return pd.DataFrame(columns)


def write_vector_file(gdf: geopandas.GeoDataFrame, path: str | Path, fmt: str) -> Path:
    """Write ``gdf`` as a GeoPackage (``gpkg``) or FlatGeobuf (``fgb``) file, replacing one that exists.

    The geometry type is declared Polygon (an empty layer too; rows of other
    types, from another writer's GeoParquet, get GDAL's own choice) and the file has
    a spatial index (GeoPackage's R-tree, FlatGeobuf's packed Hilbert R-tree).

    Raises:
        ValueError: ``fmt`` is not ``gpkg`` or ``fgb``.
    """
    if fmt not in VECTOR_DRIVERS:
        raise ValueError(f"format {fmt!r} is not one of {sorted(VECTOR_DRIVERS)}")
    target = Path(path)
    options: dict[str, object] = {"layer_options": {"SPATIAL_INDEX": "YES"}}
    if fmt == "gpkg":
        options = {"layer": LAYER, "dataset_options": {"VERSION": GPKG_VERSION}, **options}
    target.unlink(missing_ok=True)  # GPKG would add a layer to an existing file
    polygons = bool((gdf.geometry.geom_type == "Polygon").all())  # True for 0 rows
    frame = without_bbox(gdf)
    frame.to_file(
        target, driver=VECTOR_DRIVERS[fmt], geometry_type="Polygon" if polygons else None, **options
    )
    return target


def write_csv(gdf: geopandas.GeoDataFrame, output: str | Path | None) -> list[Path]:
    """Write ``gdf`` as CSV (``csv_frame``) to ``output`` or stdout; returns the files written.

    A file gets a GeoCSV ``.prj`` sidecar beside it (``x.csv`` -> ``x.prj``,
    WKT1 with the authority code, WKT2 where WKT1 cannot hold the CRS): GDAL's
    CSV driver, and so QGIS, read the CRS of the WKT geometry from it.
    """
    if output is None:
        csv_frame(gdf).to_csv(sys.stdout, index=False)
        return []
    target = Path(output)
    csv_frame(gdf).to_csv(target, index=False)
    if gdf.crs is None:
        return [target]
    prj = target.with_suffix(".prj")
    prj.write_text(gdf.crs.to_wkt("WKT1_GDAL") or gdf.crs.to_wkt())
    return [target, prj]


def write_export(gdf: geopandas.GeoDataFrame, fmt: str, output: str | Path | None) -> list[Path]:
    """Write ``gdf`` in ``fmt`` (one of ``EXPORT_FORMATS``) to ``output``, or stdout for text formats.

    Args:
        gdf: rows from ``pipeline.query.read_detections``.
        fmt: ``geojson``, ``csv``, ``gpkg`` or ``fgb``.
        output: file to write; None writes ``geojson`` or ``csv`` to stdout.

    Returns:
        The files written: ``output``, and a CSV's ``.prj`` (none for stdout).

    Raises:
        ValueError: an unknown format, a binary format without ``output``, or
            GeoJSON of rows without a CRS or whose CRS cannot reach lon/lat.
    """
    if fmt in VECTOR_DRIVERS:
        if output is None:
            raise ValueError(f"--format {fmt} writes a file: pass -o FILE")
        return [write_vector_file(gdf, output, fmt)]
    if fmt == "geojson":
        text = geojson_text(gdf)
        if output is None:
            sys.stdout.write(text + "\n")
            return []
        Path(output).write_text(text)
        return [Path(output)]
    if fmt == "csv":
        return write_csv(gdf, output)
    raise ValueError(f"format {fmt!r} is not one of {EXPORT_FORMATS}")
