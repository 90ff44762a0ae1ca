"""How much of a 1,000,000-detection GeoParquet file does a bbox query read?

Writes one file of N detections (random boxes over a 50 km x 50 km UTM area,
Hilbert-ordered, 8192-row row groups, through ``pipeline.geoparquet``), then
queries a 500 m x 500 m box:

* pyarrow: row groups whose ``bbox`` statistics survive the filter
  (``Fragment.split_by_row_group``), and their compressed bytes;
* DuckDB (``pipeline.query``): rows returned, and the time with the covering
  predicates vs ``ST_Intersects`` alone.

    .venv/bin/python bench/query_pruning.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyproj import CRS

from pipeline.geoparquet import DetectionColumns, build_table, write_geoparquet
from pipeline.georef import corners_to_bounds, corners_to_polygons, scene_px_to_crs
from pipeline.query import connect


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    xy = rng.uniform(0, 100_000, (n, 2))  # scene px at 0.5 m: 50 km square
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1)
    transform = (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
    corners = scene_px_to_crs(boxes, transform)
    crs = CRS.from_epsg(32633)
    t0 = time.perf_counter()
    table = build_table(
        DetectionColumns(
            corners_to_polygons(corners),
            corners_to_bounds(corners),
            rng.uniform(0, 1, n).astype(np.float32),
            rng.integers(0, 3, n),
            ("vehicle", "building", "tree"),
            "bench.tif",
            boxes,
            "bench",
            "bench",
            "EPSG:32633",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        write_geoparquet(path, table, crs)
        write_s = time.perf_counter() - t0
        meta = pq.ParquetFile(path).metadata
        total_bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        q = (520_000.0, 4_980_000.0, 520_500.0, 4_980_500.0)
        flt = (
            (pads.field("bbox", "xmax") >= q[0])
            & (pads.field("bbox", "xmin") <= q[2])
            & (pads.field("bbox", "ymax") >= q[1])
            & (pads.field("bbox", "ymin") <= q[3])
        )
        (frag,) = pads.dataset(path).get_fragments()
        kept = frag.split_by_row_group(flt)
        kept_ids = [rg.id for f in kept for rg in f.row_groups]
        kept_bytes = sum(meta.row_group(i).total_byte_size for i in kept_ids)
        con = connect()
        cover = f"bbox.xmax >= {q[0]} AND bbox.xmin <= {q[2]} AND bbox.ymax >= {q[1]} AND bbox.ymin <= {q[3]}"
        exact = f"ST_Intersects(geometry, ST_MakeEnvelope({q[0]}, {q[1]}, {q[2]}, {q[3]}))"
        timings = {}
        for name, where in (
            ("covering + ST_Intersects", f"{cover} AND {exact}"),
            ("ST_Intersects only", exact),
        ):
            con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE {where}").fetchone()  # warm
            t = time.perf_counter()
            for _ in range(3):
                rows = con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE {where}").fetchone()[0]
            timings[name] = ((time.perf_counter() - t) / 3, rows)
        print(
            f"{n} detections, {meta.num_row_groups} row groups, {total_bytes / 1e6:.1f} MB uncompressed columns; written in {write_s:.1f} s"
        )
        print(
            f"query box 500 m x 500 m: pyarrow keeps {len(kept_ids)}/{meta.num_row_groups} row groups "
            f"({100 * len(kept_ids) / meta.num_row_groups:.2f} %), {kept_bytes / 1e6:.2f} MB of {total_bytes / 1e6:.1f} MB "
            f"({100 * kept_bytes / total_bytes:.2f} %)"
        )
        for name, (sec, rows) in timings.items():
            print(f"duckdb {name:<26} {rows:>6} rows  {sec * 1000:8.1f} ms")
        a, b = timings["ST_Intersects only"][0], timings["covering + ST_Intersects"][0]
        print(f"speed-up from the covering predicates: {a / b:.1f}x")


if __name__ == "__main__":
    main()
