"""Detections -> GeoParquet 1.1 files (the column contract lives here).

Columns, in order (see ``docs/geoparquet.md``):

=================  ==========================  =====================================
column             type                        meaning
=================  ==========================  =====================================
geometry           binary (WKB Polygon)        box polygon in the dataset CRS
bbox               struct<xmin,ymin,xmax,      covering bbox of ``geometry``,
                   ymax: double>               declared in ``geo`` metadata
score              float32 (null: ground truth) detection confidence
label              string                      class name
label_id           int32                       0-based class id
scene              string                      source scene URI
xmin_px .. ymax_px float64                     box in scene pixels (corner edges)
model              string                      checkpoint id (null: ground truth)
run_id             string                      the run that wrote the row
scene_crs          string                      the scene's own CRS (authority:code or WKT)
=================  ==========================  =====================================

``geo`` metadata: version 1.1.0, primary column ``geometry``, encoding WKB,
``geometry_types`` ["Polygon"], CRS as PROJJSON, bbox, the ``bbox``
covering and geopandas as ``creator``.  geopandas makes the WKB, the covering
column, the Hilbert order (``GeoSeries.hilbert_distance`` of box centres) and
the ``geo`` metadata; rows are written in row groups of ``row_group_size``
rows, so a bbox filter on the covering column skips most row groups of a
large file.  ``encode_geoparquet`` makes a file's bytes;
``write_geoparquet`` writes them to a temporary name in the same directory and
renames it into place (``pipeline.storage``): a reader never sees a partial
file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from pipeline.storage import LocalStore

if TYPE_CHECKING:  # geopandas loads pandas: imported where a file is encoded
    import geopandas

GEO_VERSION = "1.1.0"
DEFAULT_ROW_GROUP_SIZE = 8192
BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
PX_COLUMNS = ("xmin_px", "ymin_px", "xmax_px", "ymax_px")

BBOX_TYPE = pa.struct([(name, pa.float64()) for name in BBOX_FIELDS])
SCHEMA = pa.schema(
    [
        ("geometry", pa.binary()),
        ("bbox", BBOX_TYPE),
        ("score", pa.float32()),
        ("label", pa.string()),
        ("label_id", pa.int32()),
        ("scene", pa.string()),
        *[(name, pa.float64()) for name in PX_COLUMNS],
        ("model", pa.string()),
        ("run_id", pa.string()),
        ("scene_crs", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


@dataclass(frozen=True)
class DetectionColumns:
    """One scene's (or several scenes') rows before they become a table.

    Attributes:
        polygons: N shapely Polygons in the dataset CRS.
        bounds_crs: float64 ``[N, 4]`` (xmin, ymin, xmax, ymax) of each polygon.
        scores: float32 ``[N]``, or None for ground truth.
        label_ids: int ``[N]``.
        class_names: names indexed by label id.
        scene: scene URI per row (a str applies to all rows).
        boxes_xyxy_px: float64 ``[N, 4]`` scene px.
        model: checkpoint id, or None.
        run_id: run id, or None.
        scene_crs: the scene's own CRS string.
    """

    polygons: np.ndarray
    bounds_crs: np.ndarray
    scores: np.ndarray | None
    label_ids: np.ndarray
    class_names: tuple[str, ...]
    scene: str | np.ndarray
    boxes_xyxy_px: np.ndarray
    model: str | None
    run_id: str | None
    scene_crs: str | np.ndarray


def crs_label(crs: CRS) -> str:
    """Short stable label for a CRS: ``EPSG:32633`` when it has one, else WKT."""
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


def build_table(cols: DetectionColumns) -> pa.Table:
    """Build a table with the contract's schema from ``cols``."""
    n = len(cols.label_ids)
    bounds = np.asarray(cols.bounds_crs, dtype=np.float64).reshape(-1, 4)
    px = np.asarray(cols.boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    label_ids = np.asarray(cols.label_ids, dtype=np.int32)
    names = np.asarray(cols.class_names, dtype=object)
    if n and (label_ids.min() < 0 or label_ids.max() >= len(names)):
        raise ValueError(
            f"label ids {label_ids.min()}..{label_ids.max()} outside class_names {cols.class_names}"
        )

    def per_row(value: str | np.ndarray | None) -> pa.Array:
        if value is None or isinstance(value, str):
            return pa.array([value] * n, pa.string())
        return pa.array(np.asarray(value, dtype=object), pa.string())

    bbox = pa.StructArray.from_arrays([pa.array(bounds[:, i]) for i in range(4)], fields=list(BBOX_TYPE))
    arrays = [
        pa.array(shapely.to_wkb(cols.polygons) if n else [], pa.binary()),
        bbox,
        pa.array(cols.scores, pa.float32()) if cols.scores is not None else pa.nulls(n, pa.float32()),
        pa.array(names[label_ids] if n else [], pa.string()),
        pa.array(label_ids, pa.int32()),
        per_row(cols.scene),
        *[pa.array(px[:, i]) for i in range(4)],
        per_row(cols.model),
        per_row(cols.run_id),
        per_row(cols.scene_crs),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def to_geodataframe(table: pa.Table, crs: CRS) -> geopandas.GeoDataFrame:
    """``table`` (the contract's schema) as a GeoDataFrame that keeps each column's Arrow type.

    The columns other than ``geometry`` and ``bbox`` become ``pd.ArrowDtype``
    columns, so a column of nulls stays a string (or float32) column on the
    way back to Arrow; ``geometry`` is decoded from WKB in one vectorised call.
    ``bbox`` is dropped: the writer derives it from ``geometry``.

    Args:
        table: rows with the contract's schema (``build_table``).
        crs: the CRS of ``geometry``.
    """
    import geopandas as gpd
    import pandas as pd

    frame = table.drop_columns(["geometry", "bbox"]).to_pandas(types_mapper=pd.ArrowDtype)
    wkb = table.column("geometry").to_numpy(zero_copy_only=False)
    frame.insert(0, "geometry", gpd.array.from_wkb(wkb, crs=crs))
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=crs)


def sort_spatially(frame: geopandas.GeoDataFrame) -> geopandas.GeoDataFrame:
    """Order rows along a Hilbert curve of their bbox centres (``GeoSeries.hilbert_distance``)."""
    if len(frame) < 2:
        return frame
    order = np.argsort(frame.geometry.hilbert_distance().to_numpy(), kind="stable")
    return frame.iloc[order]


def _declared_geometry_types(geo: dict[str, Any]) -> list[str]:
    """The contract's ``["Polygon"]``; geopandas declares ``[]`` (any type) for an empty file."""
    found = geo["columns"]["geometry"]["geometry_types"]
    if not set(found) <= {"Polygon"}:
        raise ValueError(f"geometry holds {found}; the detections contract is one Polygon per row")
    return ["Polygon"]


def encode_geoparquet(
    table: pa.Table,
    crs: CRS,
    *,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    extra_metadata: dict[str, Any] | None = None,
) -> bytes:
    """``table`` as the bytes of one GeoParquet 1.1 file (what ``write_geoparquet`` writes).

    geopandas makes the file's content: the WKB, the ``bbox`` covering column
    (``write_covering_bbox``), the Hilbert order (``hilbert_distance``) and
    the ``geo`` metadata (``schema_version="1.1.0"``), by the function its
    ``to_parquet`` calls.  ``to_parquet`` itself is not called: it puts
    ``bbox`` last, where the contract (and ``query --format parquet``) has it
    second, and it declares no geometry type for an empty file.  So the table
    is put in the contract's column order and schema (``SCHEMA``, without
    geopandas' ``pandas`` and GeoArrow field metadata) and written by
    pyarrow, as ``to_parquet`` does.  An empty table is written with no row
    group (no row group without bbox statistics).

    Args:
        table: rows with the contract's schema (``build_table``).
        crs: the CRS of ``geometry`` and ``bbox``.
        row_group_size: rows per row group (smaller = finer bbox pruning).
        extra_metadata: more key/value pairs for the file metadata
            (stored as JSON under ``aerialdet``).

    Raises:
        ValueError: the table's columns differ from the contract, or its
            geometries are not all polygons.
    """
    from geopandas.io.arrow import _geopandas_to_arrow

    if table.schema.names != list(COLUMNS):
        raise ValueError(f"table columns {table.schema.names} differ from the contract {list(COLUMNS)}")
    frame = sort_spatially(to_geodataframe(table, crs))
    written = _geopandas_to_arrow(frame, index=False, schema_version=GEO_VERSION, write_covering_bbox=True)
    geo = json.loads(written.schema.metadata[b"geo"])
    geo["columns"]["geometry"]["geometry_types"] = _declared_geometry_types(geo)
    metadata = {b"geo": json.dumps(geo).encode()}
    if extra_metadata:
        metadata[b"aerialdet"] = json.dumps(extra_metadata).encode()
    written = written.select(list(COLUMNS)).cast(SCHEMA).replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, written.schema, compression="zstd", write_statistics=True) as writer:
        if written.num_rows:
            writer.write_table(written, row_group_size=row_group_size)
    return bytes(sink.getvalue().to_pybytes())


def write_geoparquet(
    path: str | os.PathLike[str],
    table: pa.Table,
    crs: CRS,
    *,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``table`` as one local GeoParquet 1.1 file, atomically (replacing one that exists).

    Scene outputs, which may go to S3 and are written once, go through
    ``pipeline.output.write_scene_detections`` instead.

    Args:
        path: destination ``.parquet`` file; its directory is created.
        table: rows with the contract's schema (``build_table``).
        crs: the CRS of ``geometry`` and ``bbox``.
        row_group_size: as for ``encode_geoparquet``.
        extra_metadata: as for ``encode_geoparquet``.

    Returns:
        The path written.
    """
    target = Path(path)
    data = encode_geoparquet(table, crs, row_group_size=row_group_size, extra_metadata=extra_metadata)
    LocalStore(target.parent).write_bytes_once(target.name, data, replace=True)
    return target


def read_geo_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the parsed ``geo`` metadata of a GeoParquet file."""
    meta = pq.read_schema(path).metadata or {}
    if b"geo" not in meta:
        raise ValueError(f"{path}: no 'geo' metadata; not a GeoParquet file")
    return dict(json.loads(meta[b"geo"]))


def read_aerialdet_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``extra_metadata`` a file was written with (``{}`` when it has none).

    ``pipeline.output`` records the scene URI, run id, model and class names
    there, so a file names its scene even when it holds no detections.
    """
    meta = pq.read_schema(path).metadata or {}
    if b"aerialdet" not in meta:
        return {}
    value = json.loads(meta[b"aerialdet"])
    return dict(value) if isinstance(value, dict) else {}
