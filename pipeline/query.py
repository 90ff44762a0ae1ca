"""Find detections: DuckDB (with its spatial extension) over the GeoParquet files.

``read_detections(path, bbox=..., labels=..., min_score=..., scenes=...)``
returns a GeoDataFrame; ``run_sql`` runs any SQL against a ``detections``
view.  A bbox filter is written as predicates on the ``bbox`` covering
struct's fields (what DuckDB prunes row groups on) *and* an exact
``ST_Intersects`` on the geometry.  The spatial extension is loaded from the
``duckdb-extension-spatial`` wheel: nothing is downloaded.
"""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from pipeline.errors import OutputError
from pipeline.geoparquet import read_geo_metadata


class QueryError(OutputError, ValueError):
    """A query cannot run: bad column, bbox, CRS or SQL."""


def connect() -> Any:
    """A DuckDB connection with the spatial extension loaded from its wheel."""
    import duckdb

    con = duckdb.connect()
    try:
        import duckdb_extension_spatial

        ext = (
            Path(duckdb_extension_spatial.__file__).parent
            / "extensions"
            / f"v{duckdb.__version__}"
            / "spatial.duckdb_extension"
        )
        con.load_extension(str(ext))
    except (ImportError, duckdb.Error) as exc:
        raise QueryError(
            f"cannot load DuckDB's spatial extension ({exc}); install duckdb-extension-spatial "
            f"matching duckdb {duckdb.__version__}"
        ) from exc
    return con


def dataset_files(path: str | Path) -> list[str]:
    """The GeoParquet files of an output: a directory, a file or a glob.

    Raises:
        QueryError: when the path holds no detection files.
    """
    p = str(path)
    if any(ch in p for ch in "*?["):
        files = sorted(globmod.glob(p, recursive=True))
    elif Path(p).is_dir():
        files = sorted(str(f) for f in Path(p).glob("*.parquet") if not f.name.startswith((".", "_")))
    elif Path(p).is_file():
        files = [p]
    else:
        raise QueryError(f"{p}: no such file or directory")
    if not files:
        raise QueryError(
            f"{p}: holds no detections (no .parquet files); run `aerialdet detect ... --out {p}` first"
        )
    return files


def dataset_crs(files: list[str]) -> CRS:
    """The one CRS of a dataset (every file must share it)."""
    crss = set()
    for f in files:
        try:
            meta = read_geo_metadata(f)
        except Exception as exc:
            raise QueryError(f"{f}: not a GeoParquet file ({exc})") from exc
        col = meta["columns"][meta["primary_column"]]
        crss.add(CRS.from_json_dict(col["crs"]) if col.get("crs") else CRS.from_user_input("OGC:CRS84"))
    if len(crss) != 1:
        raise QueryError(
            f"the files mix {len(crss)} CRSs ({', '.join(c.to_string() for c in crss)}); query them separately"
        )
    return crss.pop()


@dataclass(frozen=True)
class Filters:
    """Common filters.

    Attributes:
        bbox: (xmin, ymin, xmax, ymax) in ``bbox_crs`` (default: the dataset's CRS).
        bbox_crs: CRS of ``bbox``.
        labels: class names to keep.
        min_score: minimum score.
        scenes: scene URIs (or file names) to keep.
    """

    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    labels: tuple[str, ...] = ()
    min_score: float | None = None
    scenes: tuple[str, ...] = ()


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


def build_where(crs: CRS, f: Filters) -> tuple[str, list[Any]]:
    """SQL WHERE clause (with ``?`` parameters) for ``f`` in dataset CRS ``crs``."""
    clauses: list[str] = []
    params: list[Any] = []
    box = _bbox_in(crs, f)
    if box is not None:
        xmin, ymin, xmax, ymax = box
        # covering-struct predicates: DuckDB prunes row groups on these statistics
        clauses.append("bbox.xmax >= ? AND bbox.xmin <= ? AND bbox.ymax >= ? AND bbox.ymin <= ?")
        params += [xmin, xmax, ymin, ymax]
        clauses.append("ST_Intersects(geometry, ST_MakeEnvelope(?, ?, ?, ?))")
        params += [xmin, ymin, xmax, ymax]
    if f.labels:
        clauses.append(f"label IN ({', '.join('?' for _ in f.labels)})")
        params += list(f.labels)
    if f.min_score is not None:
        clauses.append("score >= ?")
        params.append(f.min_score)
    if f.scenes:
        clauses.append("(" + " OR ".join("(scene = ? OR scene LIKE ?)" for _ in f.scenes) + ")")
        for s in f.scenes:
            params += [s, f"%/{s}"]
    return (" AND ".join(clauses) or "TRUE"), params


def open_view(path: str | Path, f: Filters = Filters()) -> tuple[Any, CRS]:
    """A DuckDB connection with a ``detections`` view of ``path`` filtered by ``f``."""
    import duckdb

    files = dataset_files(path)
    crs = dataset_crs(files)
    con = connect()
    where, params = build_where(crs, f)
    file_list = ", ".join("'" + x.replace("'", "''") + "'" for x in files)
    try:
        # parameters cannot be bound in a view definition: inline them as SQL literals
        rendered = where
        for p in params:
            lit = "'" + str(p).replace("'", "''") + "'" if isinstance(p, str) else repr(float(p))
            rendered = rendered.replace("?", lit, 1)
        con.execute(f"CREATE VIEW detections AS SELECT * FROM read_parquet([{file_list}]) WHERE {rendered}")
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc
    return con, crs


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[0:2]).strip()


def run_sql(path: str | Path, sql: str, f: Filters = Filters()) -> Any:
    """Run ``sql`` against the ``detections`` view; returns a pyarrow Table."""
    import duckdb

    con, _ = open_view(path, f)
    try:
        return con.execute(sql).fetch_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc


def read_detections(
    path: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    bbox_crs: str | None = None,
    labels: tuple[str, ...] | list[str] = (),
    min_score: float | None = None,
    scenes: tuple[str, ...] | list[str] = (),
    where: str | None = None,
) -> Any:
    """Read detections matching the filters as a GeoDataFrame in the dataset's CRS.

    Args:
        path: output directory, GeoParquet file or glob.
        bbox: (xmin, ymin, xmax, ymax); rows whose geometry intersects it.
        bbox_crs: CRS of ``bbox`` (default: the dataset's).
        labels: class names to keep.
        min_score: minimum score.
        scenes: scene URIs or file names to keep.
        where: an extra SQL boolean expression over the columns.

    Raises:
        QueryError: bad filter, column or path (one-line message).

    Example:
        >>> gdf = read_detections("out/", bbox=(500000, 4999000, 500300, 5000000), labels=["vehicle"])  # doctest: +SKIP
    """
    import duckdb
    import geopandas as gpd
    import shapely

    con, crs = open_view(path, Filters(bbox, bbox_crs, tuple(labels), min_score, tuple(scenes)))
    sql = "SELECT * EXCLUDE (geometry), ST_AsWKB(geometry) AS geometry FROM detections"
    if where:
        sql += f" WHERE {where}"
    try:
        table = con.execute(sql).fetch_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc
    df = table.drop(["geometry"]).to_pandas()
    geoms = shapely.from_wkb(np.asarray(table.column("geometry").to_pylist(), dtype=object))
    return gpd.GeoDataFrame(df, geometry=geoms, crs=crs)


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
