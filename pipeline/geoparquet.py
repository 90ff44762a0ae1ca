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
``geometry_types`` ["Polygon"], CRS as PROJJSON, bbox and the ``bbox``
covering.  Rows are Hilbert-ordered on box centres and written in row groups
of ``row_group_size`` rows, so a bbox filter on the covering column skips most
row groups of a large file.  ``encode_geoparquet`` makes a file's bytes;
``write_geoparquet`` writes them to a temporary name in the same directory and
renames it into place (``pipeline.storage``): a reader never sees a partial
file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from pipeline.storage import LocalStore

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


def hilbert_index(
    x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], order: int = 16
) -> np.ndarray:
    """Hilbert curve index of points within ``bounds``, vectorised.

    Args:
        x: float ``[N]`` coordinates.
        y: float ``[N]`` coordinates.
        bounds: (xmin, ymin, xmax, ymax) mapped onto the ``2**order`` grid.
        order: curve order (bits per axis).

    Returns:
        uint64 ``[N]``; nearby points get nearby indexes.
    """
    side = (1 << order) - 1
    xmin, ymin, xmax, ymax = bounds
    sx = (xmax - xmin) or 1.0
    sy = (ymax - ymin) or 1.0
    xi = np.clip(((np.asarray(x) - xmin) / sx * side).astype(np.int64), 0, side)
    yi = np.clip(((np.asarray(y) - ymin) / sy * side).astype(np.int64), 0, side)
    d = np.zeros(len(xi), dtype=np.int64)
    s = 1 << (order - 1)
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant (xy2d of the classic Hilbert algorithm)
        flip = ~ry
        swap_x = np.where(flip & rx, side - xi, xi)
        swap_y = np.where(flip & rx, side - yi, yi)
        xi, yi = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s >>= 1
    return d.astype(np.uint64)


def geo_metadata(table: pa.Table, crs: CRS) -> dict[str, Any]:
    """The ``geo`` file metadata for ``table`` in ``crs`` (GeoParquet 1.1)."""
    if table.num_rows:
        bbox = table.column("bbox").combine_chunks()
        extent = [
            float(np.min(bbox.field("xmin"))),
            float(np.min(bbox.field("ymin"))),
            float(np.max(bbox.field("xmax"))),
            float(np.max(bbox.field("ymax"))),
        ]
    else:
        extent = None
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": crs.to_json_dict(),
        "covering": {"bbox": {name: ["bbox", name] for name in BBOX_FIELDS}},
    }
    if extent is not None:
        column["bbox"] = extent
    return {"version": GEO_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def sort_spatially(table: pa.Table) -> pa.Table:
    """Order rows along a Hilbert curve of their bbox centres."""
    if table.num_rows < 2:
        return table
    bbox = table.column("bbox").combine_chunks()
    xmin = bbox.field("xmin").to_numpy()
    ymin = bbox.field("ymin").to_numpy()
    xmax = bbox.field("xmax").to_numpy()
    ymax = bbox.field("ymax").to_numpy()
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    order = np.argsort(hilbert_index(cx, cy, (cx.min(), cy.min(), cx.max(), cy.max())), kind="stable")
    return table.take(pa.array(order))


def encode_geoparquet(
    table: pa.Table,
    crs: CRS,
    *,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    extra_metadata: dict[str, Any] | None = None,
) -> bytes:
    """``table`` as the bytes of one GeoParquet 1.1 file (what ``write_geoparquet`` writes).

    Args:
        table: rows with the contract's schema (``build_table``).
        crs: the CRS of ``geometry`` and ``bbox``.
        row_group_size: rows per row group (smaller = finer bbox pruning).
        extra_metadata: more key/value pairs for the file metadata
            (stored as JSON under ``aerialdet``).

    Raises:
        ValueError: the table's columns differ from the contract.
    """
    if table.schema.names != list(COLUMNS):
        raise ValueError(f"table columns {table.schema.names} differ from the contract {list(COLUMNS)}")
    table = sort_spatially(table)
    metadata = dict(table.schema.metadata or {})
    metadata[b"geo"] = json.dumps(geo_metadata(table, crs)).encode()
    if extra_metadata:
        metadata[b"aerialdet"] = json.dumps(extra_metadata).encode()
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, compression="zstd", write_statistics=True)
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
