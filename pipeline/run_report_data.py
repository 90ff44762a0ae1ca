"""What the HTML run report (``pipeline.run_report_html``) shows, aggregated without loading the rows.

Every figure over the detections is a DuckDB aggregate over the output's
GeoParquet files (the view locked to its files, as ``aerialdet query``'s),
two scans of the files in all, so the cost grows with the number of files,
not of rows held in memory (2,000 files: 5 CPU-s; ``aerialdet query
--summary`` takes 10): counts per class, counts per scene and class (the first
``MAX_SCENES`` scenes by name, with how many more), a score histogram per
class (``NUM_BINS`` bins over 0..1), the extent and a density grid of box
centres (``GRID_CELLS`` cells on the long side).  The scene footprints come
from the files' own metadata (``footprint``, in the dataset CRS; the first
``MAX_FOOTPRINTS`` files).  The run itself (``_run.json`` and its scene lines,
``pipeline.report``) gives the statuses and the failed scenes with their
reasons: the lines are read one segment at a time, and only the first
``MAX_FAILED`` failures are kept, with the count of all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import OutputError
from pipeline.report import STATUSES, SceneStatus, lines_prefix, read_report
from pipeline.storage import OutputStore, open_store

MAX_FAILED = 50
MAX_SCENES = 500
MAX_FOOTPRINTS = 500
NUM_BINS = 20
GRID_CELLS = 64

Bounds = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in the dataset CRS


@dataclass(frozen=True)
class ReportData:
    """The figures of one output's report (every text as found: the renderer escapes it).

    Attributes:
        out: the output folder or ``s3://`` prefix.
        summary: its ``_run.json`` (None when there is none).
        crs: the dataset CRS (None without detection files).
        class_counts: label -> detections in the whole output.
        scene_counts: scene -> label -> detections, the first ``MAX_SCENES`` scenes by name.
        num_scenes: scenes with at least one detection.
        histograms: label -> ``NUM_BINS`` counts of scores in [i/NUM_BINS, (i+1)/NUM_BINS).
        bounds: what the map shows (footprints and detections), or None.
        grid_shape: (columns, rows) of the density grid over ``bounds``.
        density: (column, row, detections) of each non-empty cell; row 0 is the south edge.
        footprints: (scene, exterior rings as [(x, y), ...]) of the first ``MAX_FOOTPRINTS`` files.
        num_footprints_left_out: files whose footprint is not drawn.
        statuses: the run's scenes per status (from its lines).
        failed: (scene, reason) of the first ``MAX_FAILED`` failed scenes.
        num_failed: failed scenes in all.
    """

    out: str
    summary: dict[str, Any] | None = None
    crs: str | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    scene_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    num_scenes: int = 0
    histograms: dict[str, list[int]] = field(default_factory=dict)
    bounds: Bounds | None = None
    grid_shape: tuple[int, int] = (0, 0)
    density: list[tuple[int, int, int]] = field(default_factory=list)
    footprints: list[tuple[str, list[list[tuple[float, float]]]]] = field(default_factory=list)
    num_footprints_left_out: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    num_failed: int = 0

    @property
    def num_detections(self) -> int:
        """Detections in the whole output."""
        return sum(self.class_counts.values())


def _run_lines(store: OutputStore, run_id: str) -> tuple[dict[str, int], list[tuple[str, str]], int]:
    """The run's statuses, its first ``MAX_FAILED`` failures and their count, a segment at a time."""
    statuses = dict.fromkeys(STATUSES, 0)
    failed: list[tuple[str, str]] = []
    num_failed = 0
    for name in store.list_names(lines_prefix(run_id)):
        try:
            text = store.read_bytes(name).decode()
        except (OSError, UnicodeDecodeError):
            continue  # a torn segment: read_report skips it too
        for row in text.splitlines():
            line = json.loads(row) if row.strip() else {}
            status = str(line.get("status", ""))
            if status in statuses:
                statuses[status] += 1
            if status == SceneStatus.FAILED.value:
                num_failed += 1
                if len(failed) < MAX_FAILED:
                    failed.append((str(line.get("uri")), str(line.get("error") or "no reason recorded")))
    return statuses, sorted(failed), num_failed


def _footprints(files: list[str]) -> list[tuple[str, list[list[tuple[float, float]]]]]:
    """(scene, exterior rings) from each file's ``aerialdet`` metadata (files without one are left out)."""
    import shapely

    from pipeline.query import file_metadata

    out = []
    for uri in files:
        try:
            meta = json.loads(file_metadata(uri).get(b"aerialdet", b"{}"))
            geom = shapely.from_wkt(meta["footprint"])
        except (OSError, ValueError, KeyError, TypeError, shapely.errors.GEOSException):
            continue
        polygons = getattr(geom, "geoms", [geom])
        rings = [
            [(float(x), float(y)) for x, y in p.exterior.coords] for p in polygons if hasattr(p, "exterior")
        ]
        out.append((str(meta.get("scene", uri)), rings))
    return out


def _union(a: Bounds | None, b: Bounds | None) -> Bounds | None:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _ring_bounds(footprints: list[tuple[str, list[list[tuple[float, float]]]]]) -> Bounds | None:
    points = [pt for _, rings in footprints for ring in rings for pt in ring]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _grid(bounds: Bounds) -> tuple[int, int]:
    width, height = bounds[2] - bounds[0], bounds[3] - bounds[1]
    if width <= 0 or height <= 0:
        return (1, 1)
    if width >= height:
        return (GRID_CELLS, max(1, round(GRID_CELLS * height / width)))
    return (max(1, round(GRID_CELLS * width / height)), GRID_CELLS)


def _density(con: Any, bounds: Bounds, shape: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Detections per grid cell of their box centre (row 0: the south edge)."""
    cols, rows = shape
    dx = max((bounds[2] - bounds[0]) / cols, 1e-12)
    dy = max((bounds[3] - bounds[1]) / rows, 1e-12)
    sql = (
        "SELECT least(greatest(CAST(floor(((bbox.xmin + bbox.xmax) / 2 - $x0) / $dx) AS INTEGER), 0), $c) AS i, "
        "least(greatest(CAST(floor(((bbox.ymin + bbox.ymax) / 2 - $y0) / $dy) AS INTEGER), 0), $r) AS j, "
        "count(*) FROM detections GROUP BY ALL ORDER BY ALL"
    )
    params = {"x0": bounds[0], "y0": bounds[1], "dx": dx, "dy": dy, "c": cols - 1, "r": rows - 1}
    return [(int(i), int(j), int(n)) for i, j, n in con.execute(sql, params).fetchall()]


# One scan of the files: counts and extents per (scene, label), and per (label, score bin); the
# figures are then read from this small table (scenes x classes + classes x bins rows).
AGGREGATE_SQL = """
CREATE TEMP TABLE report_agg AS
SELECT GROUPING(scene) AS by_bin, scene, label,
       CASE WHEN score IS NOT NULL AND isfinite(score)
            THEN least(greatest(CAST(floor(score * $k) AS INTEGER), 0), $k - 1) END AS bin,
       count(*) AS n, min(bbox.xmin) AS x0, min(bbox.ymin) AS y0, max(bbox.xmax) AS x1, max(bbox.ymax) AS y1
FROM detections GROUP BY GROUPING SETS ((scene, label), (label, bin))
"""


def _detection_figures(con: Any) -> dict[str, Any]:
    """Counts per class, per scene and class, score histograms and the extent: one scan of the files."""
    con.execute(AGGREGATE_SQL, {"k": NUM_BINS})
    classes = con.execute(
        "SELECT label, sum(n) FROM report_agg WHERE by_bin = 0 GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    num_scenes = con.execute("SELECT count(DISTINCT scene) FROM report_agg WHERE by_bin = 0").fetchone()[0]
    per_scene = con.execute(
        "SELECT scene, label, n FROM report_agg WHERE by_bin = 0 AND scene IN "
        "(SELECT DISTINCT scene FROM report_agg WHERE by_bin = 0 ORDER BY scene LIMIT $n) ORDER BY ALL",
        {"n": MAX_SCENES},
    ).fetchall()
    bins = con.execute(
        "SELECT label, bin, n FROM report_agg WHERE by_bin = 1 AND bin IS NOT NULL ORDER BY ALL"
    ).fetchall()
    extent = con.execute(
        "SELECT min(x0), min(y0), max(x1), max(y1) FROM report_agg WHERE by_bin = 0"
    ).fetchone()
    scene_counts: dict[str, dict[str, int]] = {}
    for scene, label, n in per_scene:
        scene_counts.setdefault(str(scene), {})[str(label)] = int(n)
    histograms: dict[str, list[int]] = {}
    for label, b, n in bins:
        histograms.setdefault(str(label), [0] * NUM_BINS)[int(b)] = int(n)
    return {
        "class_counts": {str(label): int(n) for label, n in classes},
        "num_scenes": int(num_scenes),
        "scene_counts": scene_counts,
        "histograms": histograms,
        "extent": None if extent[0] is None else tuple(float(v) for v in extent),
    }


def _view(location: str, files: list[str]) -> Any:
    """A DuckDB connection with a locked ``detections`` view of the files.

    Local files: plain DuckDB, without the spatial extension (no query here
    needs it, and loading it is most of a small report's time); extension
    auto-install and auto-load off, locked to the files as ``pipeline.query``
    does.  S3: ``pipeline.query.open_view`` (its Arrow scan decodes WKB).
    """
    import glob as globmod

    import duckdb

    from pipeline.query import open_view
    from pipeline.query_sql import lock_to_files
    from pipeline.sources import is_s3_uri

    if is_s3_uri(files[0]):
        return open_view(location)[0]
    con = duckdb.connect()
    for setting in (
        "autoinstall_known_extensions",
        "autoload_known_extensions",
        "allow_community_extensions",
    ):
        con.execute(f"SET {setting} = false")
    con.execute("SET enable_progress_bar = false")  # a long scan would draw one on the run's stderr
    con.read_parquet([globmod.escape(f) for f in files]).create_view("detections")
    lock_to_files(con, files)
    return con


def gather(location: str) -> ReportData:
    """The report's figures for an output (a folder or ``s3://bucket/prefix``).

    Raises:
        OutputError: the output holds neither a run record nor detection files.
    """
    from pipeline.query import dataset_crs, dataset_files
    from pipeline.query_sql import QueryError

    store = open_store(location)
    try:
        summary: dict[str, Any] | None = read_report(store, with_scenes=False)
    except (OutputError, ValueError):
        summary = None
    statuses, failed, num_failed = _run_lines(store, str(summary["run_id"])) if summary else ({}, [], 0)
    try:
        files = dataset_files(location)
    except QueryError:
        files = []
    if summary is None and not files:
        raise OutputError(
            f"{location}: holds no run record (_run.json) and no detections; run `aerialdet detect ... "
            f"--out {location}` first"
        )
    data = ReportData(location, summary, statuses=statuses, failed=failed, num_failed=num_failed)
    if not files:
        return data
    con = _view(location, files)
    try:
        figures = _detection_figures(con)
        footprints = _footprints(files[:MAX_FOOTPRINTS])
        bounds = _union(_ring_bounds(footprints), figures.pop("extent"))
        shape = _grid(bounds) if bounds else (0, 0)
        density = _density(con, bounds, shape) if bounds and figures["class_counts"] else []
    finally:
        con.close()
    return ReportData(
        location,
        summary,
        dataset_crs(files[:1]).to_string(),  # one CRS per output (pipeline.dataset): the first file's
        bounds=bounds,
        grid_shape=shape,
        density=density,
        footprints=footprints,
        num_footprints_left_out=max(0, len(files) - MAX_FOOTPRINTS),
        statuses=statuses,
        failed=failed,
        num_failed=num_failed,
        **figures,
    )
