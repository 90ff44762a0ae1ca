"""Find detections: DuckDB (with its spatial extension) over the GeoParquet files.

``read_detections(path, bbox=..., labels=..., min_score=..., scenes=...)``
returns a GeoDataFrame; ``run_sql`` runs any SQL against a ``detections``
view.  A bbox filter is written as predicates on the ``bbox`` covering
struct's fields (what DuckDB prunes row groups on) *and* an exact
``ST_Intersects`` on the geometry.  The spatial extension is loaded from the
``duckdb-extension-spatial`` wheel: nothing is downloaded.

Filter values never become SQL text.  The ``detections`` view is a relation
of DuckDB's relational API: each value is a ``ConstantExpression`` and the
file list is a Python list given to ``read_parquet`` (each path glob-escaped,
since DuckDB expands every path as a glob).  Only SQL that the caller writes
(``run_sql``'s ``sql``, ``read_detections``' ``where``) is parsed as SQL.

Connections (``pipeline.query_sql``): extension auto-install and auto-load
are off everywhere; ``run_sql`` is full DuckDB, i.e. shell access for the
owner; every other query runs locked to the output's files, and ``where=``
must be a plain expression (no subquery, no file-reading function).

An ``s3://bucket/prefix`` output (or one ``s3://.../x.parquet`` file) is read
through pyarrow's S3 filesystem (``storage.s3_arrow_filesystem``: the
endpoint of ``AWS_ENDPOINT_URL``, retries with backoff), since DuckDB's
httpfs extension would have to be downloaded.  The files become a
``pyarrow.dataset`` registered with DuckDB and the geometry is decoded from
WKB, so the ``detections`` view, the filters (still DuckDB expressions) and
the results are the same as for a local folder; DuckDB pushes the column
and ``bbox`` filters into the Arrow scan.  Local files keep DuckDB's own
Parquet reader and its row-group pruning.
"""

from __future__ import annotations

import glob as globmod
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyproj import CRS, Transformer

from pipeline.geoparquet import read_geo_metadata
from pipeline.manifest import read_manifest
from pipeline.query_sql import QueryError, check_where, connect, lock_to_files
from pipeline.sources import expand_glob, is_glob, is_s3_uri, normalize_scene_uri
from pipeline.storage import RESERVED_PREFIXES, open_store, s3_arrow_filesystem

if TYPE_CHECKING:
    import duckdb
    import geopandas
    import pyarrow

ARROW_SOURCE = "aerialdet_files"
"""Name under which an S3 dataset's Arrow scan is registered with DuckDB (the view reads it)."""


def _s3_files(uri: str) -> list[str]:
    """``s3://bucket/prefix``'s detection files (or the one ``.parquet`` object named)."""
    from pipeline.errors import OutputError

    uri = "s3://" + uri[5:]
    try:
        store = open_store(uri)
        if uri.endswith(".parquet"):
            parent, _, name = uri.rpartition("/")
            if open_store(parent).exists(name):
                return [uri]
        return [store.uri(name) for name in store.list_parquet()]
    except OutputError as exc:
        raise QueryError(str(exc)) from exc


def dataset_files(path: str | Path) -> list[str]:
    """The GeoParquet files of an output: a directory, a file, a glob or ``s3://bucket/prefix``.

    A directory's (or prefix's) files are its ``*.parquet`` whose names do not
    start with ``.`` or ``_`` (temp files and run records,
    ``output.RESERVED_PREFIXES``); an S3 prefix is listed one level deep, like
    a directory.  An existing file or directory is taken as named even when
    its name holds glob characters (``what?.parquet``).

    Returns:
        Local paths, or ``s3://`` URIs for an S3 output.

    Raises:
        QueryError: when the path holds no detection files, or an S3 prefix cannot be listed.
    """
    p = str(path)
    if is_s3_uri(p):
        files = _s3_files(p)
    elif Path(p).is_dir():
        files = sorted(str(f) for f in Path(p).glob("*.parquet") if not f.name.startswith(RESERVED_PREFIXES))
    elif Path(p).is_file():
        files = [p]
    elif is_glob(p):
        files = expand_glob(p)
    else:
        raise QueryError(f"{p}: no such file or directory")
    if not files:
        raise QueryError(
            f"{p}: holds no detections (no .parquet files); run `aerialdet detect ... --out {p}` first"
        )
    return files


def file_metadata(uri: str) -> dict[bytes, bytes]:
    """The key/value metadata of a Parquet file, local or ``s3://`` (``geo``, ``aerialdet``).

    Raises:
        OSError: the file cannot be read (after retries for S3).
    """
    import pyarrow.parquet as pq

    if is_s3_uri(uri):
        return dict(pq.read_schema(uri[5:], filesystem=s3_arrow_filesystem()).metadata or {})
    return dict(pq.read_schema(uri).metadata or {})


def _geo_metadata(uri: str) -> dict[str, Any]:
    import json

    if not is_s3_uri(uri):
        return read_geo_metadata(uri)
    meta = file_metadata(uri)
    if b"geo" not in meta:
        raise ValueError(f"{uri}: no 'geo' metadata; not a GeoParquet file")
    return dict(json.loads(meta[b"geo"]))


def dataset_crs(files: list[str]) -> CRS:
    """The one CRS of a dataset (every file must share it)."""
    crss = set()
    for f in files:
        try:
            meta = _geo_metadata(f)
        except Exception as exc:
            raise QueryError(f"{f}: not a GeoParquet file ({exc})") from exc
        col = meta["columns"][meta["primary_column"]]
        crss.add(CRS.from_json_dict(col["crs"]) if col.get("crs") else CRS.from_user_input("OGC:CRS84"))
    if len(crss) != 1:
        raise QueryError(
            f"the files mix {len(crss)} CRSs ({', '.join(c.to_string() for c in crss)}); query them separately"
        )
    return crss.pop()


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise QueryError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise QueryError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _names(name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise QueryError(f"{name} must be a list of strings, got {values!r}")
    for value in values:
        if not isinstance(value, str):
            raise QueryError(f"{name} must be a list of strings, got {value!r} in it")
    return tuple(values)


@dataclass(frozen=True)
class Filters:
    """Common filters, checked on construction.

    Attributes:
        bbox: (xmin, ymin, xmax, ymax) finite numbers in ``bbox_crs`` (default: the dataset's CRS).
        bbox_crs: CRS of ``bbox``, anything ``pyproj.CRS.from_user_input`` takes.
        labels: class names to keep.
        min_score: minimum score, a finite number.
        scenes: scene URIs (or file names) to keep.

    Raises:
        QueryError: a value of the wrong type, or a NaN or infinite number.
    """

    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    labels: tuple[str, ...] = ()
    min_score: float | None = None
    scenes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bbox is not None:
            try:
                values = () if isinstance(self.bbox, (str, bytes)) else tuple(self.bbox)
            except TypeError:  # not iterable
                values = ()
            if len(values) != 4:
                raise QueryError(f"bbox must be 4 numbers (xmin, ymin, xmax, ymax), got {self.bbox!r}")
            object.__setattr__(self, "bbox", tuple(_finite("bbox", v) for v in values))
        if self.min_score is not None:
            object.__setattr__(self, "min_score", _finite("min_score", self.min_score))
        object.__setattr__(self, "labels", _names("labels", self.labels))
        object.__setattr__(self, "scenes", _names("scenes", self.scenes))


def _bbox_in(crs: CRS, f: Filters) -> tuple[float, float, float, float] | None:
    if f.bbox is None:
        return None
    xmin, ymin, xmax, ymax = f.bbox
    if not (xmin < xmax and ymin < ymax):
        raise QueryError(f"malformed bbox {f.bbox}: expected xmin < xmax and ymin < ymax")
    if not f.bbox_crs:
        return f.bbox
    try:
        src = CRS.from_user_input(f.bbox_crs)
    except Exception as exc:
        raise QueryError(f"--bbox-crs {f.bbox_crs!r} is not a CRS ({exc})") from exc
    try:
        out = Transformer.from_crs(src, crs, always_xy=True).transform_bounds(
            xmin, ymin, xmax, ymax, densify_pts=21
        )
    except Exception as exc:
        raise QueryError(
            f"bbox {f.bbox} cannot be transformed from {src.to_string()} to {crs.to_string()}: {exc}"
        ) from exc
    if not np.all(np.isfinite(out)):
        raise QueryError(
            f"bbox {f.bbox} cannot be transformed from {src.to_string()} to {crs.to_string()} (outside its area of use)"
        )
    return tuple(float(v) for v in out)  # type: ignore[return-value]


def _scene_match(scene: str) -> Any:
    """``scene`` column equals the value (as typed or normalised) or ends with ``/<value>``."""
    from duckdb import ColumnExpression, ConstantExpression, FunctionExpression

    column = ColumnExpression("scene")
    try:
        uris = sorted({scene, normalize_scene_uri(scene)}) if scene else [scene]
    except (ValueError, OSError):  # not a possible path (a NUL byte, ...): match it as typed
        uris = [scene]
    # ends_with, not LIKE: `_` and `%` in a file name are plain characters
    suffix = FunctionExpression("ends_with", column, ConstantExpression("/" + scene))
    return column.isin(*(ConstantExpression(u) for u in uris)) | suffix


def filter_expression(crs: CRS, f: Filters) -> duckdb.Expression | None:
    """The row filter of ``f`` in dataset CRS ``crs``, as a DuckDB expression (None: keep all).

    Every value is a ``duckdb.ConstantExpression``: none is written into SQL text.
    """
    from duckdb import ColumnExpression, ConstantExpression, FunctionExpression

    def const(value: Any) -> duckdb.Expression:
        return ConstantExpression(value)

    terms: list[Any] = []
    box = _bbox_in(crs, f)
    if box is not None:
        xmin, ymin, xmax, ymax = box
        # covering-struct predicates: DuckDB prunes row groups on these statistics
        terms += [
            ColumnExpression("bbox.xmax") >= const(xmin),
            ColumnExpression("bbox.xmin") <= const(xmax),
            ColumnExpression("bbox.ymax") >= const(ymin),
            ColumnExpression("bbox.ymin") <= const(ymax),
        ]
        envelope = FunctionExpression("ST_MakeEnvelope", *map(const, (xmin, ymin, xmax, ymax)))
        terms.append(FunctionExpression("ST_Intersects", ColumnExpression("geometry"), envelope))
    if f.labels:
        terms.append(ColumnExpression("label").isin(*map(const, f.labels)))
    if f.min_score is not None:
        terms.append(ColumnExpression("score") >= const(f.min_score))
    if f.scenes:
        terms.append(reduce(lambda a, b: a | b, map(_scene_match, f.scenes)))
    return reduce(lambda a, b: a & b, terms) if terms else None


def open_view(path: str | Path, f: Filters = Filters(), *, locked: bool = True) -> tuple[Any, CRS]:
    """A DuckDB connection with a ``detections`` view of ``path`` filtered by ``f``.

    Args:
        path: output directory, GeoParquet file, glob or ``s3://`` prefix.
        f: the filters.
        locked: the connection reads only the view's files and its settings
            are locked (``run_sql`` alone passes False: the owner's own SQL).
    """
    import duckdb

    files = dataset_files(path)
    crs = dataset_crs(files)
    condition = filter_expression(crs, f)
    con = connect()
    try:
        if is_s3_uri(files[0]):
            relation = _s3_relation(con, files)
        else:
            # a list argument, never SQL text; escaped because DuckDB globs each path (`a[1].parquet`)
            relation = con.read_parquet([globmod.escape(x) for x in files])
        if condition is not None:
            relation = relation.filter(condition)
        relation.create_view("detections")
        if locked:
            lock_to_files(con, files)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc
    return con, crs


def _s3_relation(con: Any, files: list[str]) -> Any:
    """The S3 files as a DuckDB relation over a registered Arrow dataset, geometry decoded from WKB."""
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset([f[5:] for f in files], format="parquet", filesystem=s3_arrow_filesystem())
    except OSError as exc:
        raise QueryError(f"cannot read {files[0].rpartition('/')[0]}/: {_one_line(exc)}") from exc
    con.register(ARROW_SOURCE, dataset)  # the connection keeps the dataset alive
    return con.table(ARROW_SOURCE).project("* REPLACE (ST_GeomFromWKB(geometry) AS geometry)")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[0:2]).strip()


def run_sql(path: str | Path, sql: str, f: Filters = Filters()) -> pyarrow.Table:
    """Run ``sql`` (the caller's own SQL) against the ``detections`` view; returns a pyarrow Table.

    This is full DuckDB, i.e. shell access: the SQL can read and write any
    file this user can (``COPY``, ``read_text``, ``ATTACH``, ``INSTALL ...
    FROM``).  Give it only SQL you wrote; ``read_detections``' ``where=``
    is the restricted form.
    """
    import duckdb

    con, _ = open_view(path, f, locked=False)
    try:
        return con.execute(sql).to_arrow_table()
    except (duckdb.Error, OSError) as exc:
        raise QueryError(_one_line(exc)) from exc


def read_table(path: str | Path, f: Filters = Filters(), *, where: str | None = None) -> tuple[Any, CRS]:
    """Read the rows matching ``f`` as a pyarrow Table with ``geometry`` as WKB.

    Args:
        path: output directory, GeoParquet file or glob.
        f: the filters.
        where: an extra SQL boolean expression written by the caller (one
            expression, checked by ``check_where``; never build it from
            untrusted values: use ``f``).

    Returns:
        The table, with the files' columns in their order (``geoparquet.SCHEMA``
        for aerialdet's files), and the dataset's CRS.

    Raises:
        QueryError: bad filter, column or path (one-line message).
    """
    import duckdb

    con, crs = open_view(path, f)
    try:
        relation = con.table("detections")
        if where:
            check_where(con, where)
            relation = relation.filter(where)  # parsed as one expression: no second statement
        table = relation.project("* REPLACE (ST_AsWKB(geometry) AS geometry)").to_arrow_table()
    except (duckdb.Error, OSError) as exc:
        raise QueryError(_one_line(exc)) from exc
    return table, crs


def read_detections(
    path: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: str | None = None,
    labels: Sequence[str] = (),
    min_score: float | None = None,
    scenes: Sequence[str] = (),
    where: str | None = None,
) -> geopandas.GeoDataFrame:
    """Read detections matching the filters as a GeoDataFrame in the dataset's CRS.

    Args:
        path: output directory, GeoParquet file or glob.
        bbox: (xmin, ymin, xmax, ymax); rows whose geometry intersects it.
        bbox_crs: CRS of ``bbox`` (default: the dataset's).
        labels: class names to keep.
        min_score: minimum score.
        scenes: scene URIs or file names to keep.
        where: an extra SQL boolean expression over the columns, written by
            the caller (never from untrusted values: use the filters above);
            no subqueries or file-reading functions (``check_where``).

    Raises:
        QueryError: bad filter, column or path (one-line message).

    Example:
        >>> gdf = read_detections("out/", bbox=(500000, 4999000, 500300, 5000000), labels=["vehicle"])  # doctest: +SKIP
    """
    import geopandas as gpd
    import shapely

    filters = Filters(bbox, bbox_crs, labels, min_score, scenes)  # type: ignore[arg-type]
    table, crs = read_table(path, filters, where=where)
    df = table.drop(["geometry"]).to_pandas()
    # one vectorised decode over the column's numpy view (no Python list of bytes in between)
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    return gpd.GeoDataFrame(df, geometry=geoms, crs=crs)


def _dataset_record(path: str | Path) -> dict[str, Any]:
    """The runs that made an output folder or prefix, from its manifest (``pipeline.manifest``)."""
    text = str(path)
    if not (is_s3_uri(text) or Path(text).is_dir()):
        return {}
    manifest = read_manifest(text)
    return {
        "runs": manifest["runs"],
        "files_without_manifest_entry": manifest["files_without_entry"],
    }


def summary(path: str | Path, f: Filters = Filters()) -> dict[str, Any]:
    """Counts per scene and class, a score histogram, and the area covered."""
    con, crs = open_view(path, f)
    per = con.execute(
        "SELECT scene, label, count(*) AS n FROM detections GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    hist = con.execute(
        "SELECT floor(score * 10) / 10 AS bin, count(*) FROM detections GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    ext = con.execute(
        "SELECT min(bbox.xmin), min(bbox.ymin), max(bbox.xmax), max(bbox.ymax), count(*) FROM detections"
    ).fetchone()
    union_area = con.execute("SELECT sum(ST_Area(geometry)) FROM detections").fetchone()[0]
    return {
        **_dataset_record(path),
        "crs": crs.to_string(),
        "num_detections": int(ext[4]),
        "extent": list(ext[:4]) if ext[4] else None,
        "box_area_sum": float(union_area or 0.0),
        "area_units": (crs.axis_info[0].unit_name if crs.axis_info else "") + "^2",
        "per_scene_label": [{"scene": s, "label": lab, "count": int(n)} for s, lab, n in per],
        "score_histogram": [
            {"bin_from": float(b) if b is not None else None, "count": int(n)} for b, n in hist
        ],
    }
