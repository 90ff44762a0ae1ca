"""Hostile label files (issue 25): sized up before they are read, refused fast and small.

Before: a GeoParquet file of identical rows compresses to almost nothing (a
430 KB file reached 6.6 GB in the audit; here 2.5M rows in ~60 KB took 1.3 GB
more and 37 s to become 2.5M "issues"; 16M rows in 309 KB are now refused in
2.6 s at 203 MB), one huge WKB geometry (280 MB, ~30 KB on disk) was
decoded whole, and a deeply nested COCO file was a ``RecursionError``
traceback.  Memory is measured in a subprocess (``ru_maxrss`` growth after
the imports), as the issue asked.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from retinanet import geo_labels, label_formats
from retinanet.errors import LabelError
from retinanet.labeled_tiles import read_labels

ROOT = Path(__file__).resolve().parents[2]


def _geo_metadata() -> dict[bytes, bytes]:
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}},
    }
    return {b"geo": json.dumps(geo).encode()}


def _write_rows(path: Path, wkb: bytes, num_rows: int, *, chunk: int = 500_000) -> Path:
    """``num_rows`` identical label rows (one box on one scene), written in row groups of ``chunk``."""
    block = pa.table(
        {
            "label": pa.repeat(pa.scalar("car"), chunk),
            "scene": pa.repeat(pa.scalar("scene.tif"), chunk),
            "geometry": pa.repeat(pa.scalar(wkb, pa.binary()), chunk),
        }
    ).replace_schema_metadata(_geo_metadata())
    with pq.ParquetWriter(path, block.schema, compression="zstd") as writer:
        for start in range(0, num_rows, chunk):
            writer.write_table(block.slice(0, min(chunk, num_rows - start)))
    return path


def _read_in_subprocess(path: Path) -> dict:
    """``read_geo_labels(path)`` in a fresh interpreter: its error, RSS growth and seconds."""
    script = textwrap.dedent(
        f"""
        import json, resource, time
        from pathlib import Path
        import geopandas, pyarrow.parquet, shapely
        from retinanet.errors import LabelError
        from retinanet.geo_labels import read_geo_labels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            labels = read_geo_labels(Path({str(path)!r}))
            error = f"read: {{len(labels.issues)}} issues"
        except LabelError as exc:
            error = "LabelError: " + str(exc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"error": error, "rss_growth_mb": (after - before) / 1024,
                          "seconds": time.perf_counter() - start}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert out.stdout.strip(), out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_parquet_of_millions_of_identical_rows_is_refused_from_its_metadata(tmp_path):
    bomb = _write_rows(tmp_path / "bomb.parquet", shapely.box(0, 0, 3, 3).wkb, 2_500_000)
    assert bomb.stat().st_size < 200_000  # the bomb: a few tens of KB
    result = _read_in_subprocess(bomb)
    assert result["error"].startswith("LabelError: "), result
    assert "2500000 label rows, more than the 2000000" in result["error"] and "split it" in result["error"]
    assert result["rss_growth_mb"] < 150 and result["seconds"] < 20, result  # before: 1300 MB, 37 s


def test_one_huge_wkb_geometry_is_refused_before_it_is_decoded(tmp_path):
    num_points = 17_500_000  # 280 MB of WKB, over the 256 MiB geometry budget; compresses to ~30 KB
    wkb = struct.pack("<BIII", 1, 3, 1, num_points) + bytes(16 * num_points)
    path = _write_rows(tmp_path / "one.parquet", wkb, 1, chunk=1)
    del wkb
    result = _read_in_subprocess(path)
    assert result["error"].startswith("LabelError: "), result
    assert "geometries are 28" in result["error"] and "more than the 268435456" in result["error"]
    assert result["rss_growth_mb"] < 150, result


def test_a_geopackage_over_the_row_cap_is_refused_before_reading(tmp_path, monkeypatch):
    import geopandas as gpd

    # a GeoPackage does not compress, so its file size bounds it; its feature count is checked too
    path = tmp_path / "many.gpkg"
    boxes = [shapely.box(i, 0, i + 1, 1) for i in range(30)]
    gpd.GeoDataFrame(
        {"label": ["car"] * 30, "scene": ["s.tif"] * 30}, geometry=boxes, crs="EPSG:32633"
    ).to_file(path, driver="GPKG")
    monkeypatch.setattr(geo_labels, "MAX_LABEL_ROWS", 10)
    with pytest.raises(LabelError, match="30 label rows, more than the 10 one file may hold; split it"):
        read_labels([path])
    monkeypatch.setattr(geo_labels, "MAX_LABEL_ROWS", 100)
    monkeypatch.setattr(geo_labels, "MAX_LABEL_BYTES", 1000)
    with pytest.raises(LabelError, match="bytes, more than the 1000 a label file may hold"):
        read_labels([path])


def test_a_parquet_within_the_caps_reads_only_the_label_columns(tmp_path):
    path = _write_rows(tmp_path / "ok.parquet", shapely.box(0, 0, 3, 3).wkb, 3, chunk=3)
    table = pq.read_table(path).append_column("notes", pa.array(["x" * 1000] * 3))
    pq.write_table(table.replace_schema_metadata(_geo_metadata()), path)
    frame = geo_labels._read_frame(path)
    assert list(frame.columns) == ["label", "scene", "geometry"] and len(frame) == 3


def test_deeply_nested_coco_json_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(LabelError, match=r"deep.json: not valid JSON \(nested too deeply\)"):
        read_labels([path])  # before: RecursionError


def test_a_coco_file_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [], "pad": "x" * 5000}))
    monkeypatch.setattr(label_formats, "MAX_COCO_BYTES", 4096)
    with pytest.raises(LabelError, match="bytes, more than the 4096 a COCO label file may hold; split"):
        read_labels([path])
