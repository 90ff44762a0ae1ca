"""The review's labels file: seeded from detections, round-trips, read by training, never half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import CRS

from pipeline.review_store import (
    LabelRow,
    ReviewFileError,
    ReviewState,
    detection_ids,
    read_labels,
    seed_state,
    with_row,
    without_row,
    write_labels,
)
from tests.review_helpers import CLASSES, make_review_case, open_case_session

UTM = CRS.from_epsg(32633)


def _frame(rows):
    return pd.DataFrame(
        rows, columns=["id", "label", "score", "scene", "model", "xmin", "ymin", "xmax", "ymax"]
    )


def test_seed_keeps_detections_at_their_class_threshold():
    frame = _frame(
        [
            ("a", "car", 0.30, "s.tif", "m", 0, 0, 1, 1),  # car threshold 0.3: kept (>=)
            ("b", "car", 0.29, "s.tif", "m", 0, 0, 1, 1),
            ("c", "tree", 0.60, "s.tif", "m", 0, 0, 1, 1),  # no tree threshold: 0.5
            ("d", "tree", 0.40, "s.tif", "m", 0, 0, 1, 1),
        ]
    )
    state = seed_state(frame, {"car": 0.3})
    assert sorted(state.rows) == ["a", "c"]
    assert state.rows["a"].review == "unreviewed" and state.rows["a"].source_detection == "a"
    assert state.state_of("b") == "dropped" and state.reviewed_ids() == set()


def test_detection_ids_are_stable_and_distinct():
    boxes = np.array([[1, 2, 3, 4], [1, 2, 3, 4.01]], float)
    first = detection_ids(["s", "s"], boxes, ["car", "car"], ["m", "m"])
    assert first == detection_ids(["s", "s"], boxes.copy(), ["car", "car"], ["m", "m"])
    assert len(set(first)) == 2
    assert detection_ids(["s"], boxes[:1], ["car"], ["other-model"]) != first[:1]


def test_round_trip_keeps_rows_and_rejections(tmp_path):
    row = LabelRow(
        "d-1",
        (500000.0, 4000000.0, 500010.0, 4000010.0),
        "car",
        "/s.tif",
        "accepted",
        "me",
        "t",
        "d-1",
        "m",
        0.7,
    )
    drawn = LabelRow(
        "drawn-1", (500020.0, 4000000.0, 500030.0, 4000012.0), "tree", "/s.tif", "drawn", "me", "t"
    )
    state = without_row(
        with_row(with_row(ReviewState(), row), drawn), "d-2", {"reviewer": "me", "time": "t", "model": "m"}
    )
    path = write_labels(tmp_path / "labels.parquet", state, UTM)
    back, crs = read_labels(path)
    assert crs.equals(UTM)
    assert back.rows == state.rows and back.rejected == state.rejected
    assert back.state_of("d-2") == "rejected" and back.state_of("drawn-1") == "drawn"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.parquet"]  # no temporary file left


def test_accepting_a_rejected_detection_clears_the_rejection():
    row = LabelRow("d-1", (0.0, 0.0, 1.0, 1.0), "car", "s", "accepted", source_detection="d-1")
    state = without_row(ReviewState(), "d-1", {"reviewer": "me", "time": "t", "model": None})
    assert with_row(state, row).state_of("d-1") == "accepted"


def test_file_is_geoparquet_11_with_the_training_columns(tmp_path):
    import json

    import pyarrow.parquet as pq

    row = LabelRow(
        "d-1",
        (500000.0, 4000000.0, 500010.0, 4000010.0),
        "car",
        "/s.tif",
        "unreviewed",
        source_detection="d-1",
        model="m",
        score=0.5,
    )
    path = write_labels(tmp_path / "l.parquet", ReviewState({"d-1": row}), UTM)
    schema = pq.read_schema(path)
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB" and "covering" in geo["columns"]["geometry"]
    for name in ("geometry", "label", "scene", "reviewer", "time", "source_detection", "model"):
        assert name in schema.names
    assert "label_id" not in schema.names  # training would read it as a class order


def test_training_reads_the_labels_file_as_it_is(tmp_path):
    from retinanet.geo_labels import read_geo_labels

    case = make_review_case(tmp_path)
    labels = tmp_path / "labels.parquet"
    open_case_session(case, labels)  # seeds the file: detections at 0.5
    read = read_geo_labels(labels, CLASSES, tile_size_px=256)
    assert not read.issues and len(read.images) == 2
    by_scene = {Path(i.path).name: i for i in read.images}
    # scene 0: 0.9 vehicle at (40, 40, 72, 72) and 0.52 building at (150, 60, 190, 100) px
    boxes = {tuple(b) for b in by_scene["scene_0.tif"].boxes_xyxy_px.tolist()}
    assert boxes == {(40.0, 40.0, 72.0, 72.0), (150.0, 60.0, 190.0, 100.0)}


def test_not_a_review_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ReviewFileError, match="x.parquet: cannot be read as GeoParquet"):
        read_labels(bad)
    case = make_review_case(tmp_path / "c")
    other = next(case.det.glob("*.parquet"))  # a detection file: GeoParquet, but no review
    with pytest.raises(ReviewFileError, match="not a labels file aerialdet review wrote"):
        read_labels(other)


_WRITER = """
import resource, signal, sys
from pyproj import CRS
from pipeline.review_store import LabelRow, ReviewState, write_labels
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
rows = {f"d-{i}": LabelRow(f"d-{i}", (i, 0.0, i + 1.0, 1.0), "car", "/s.tif", "accepted") for i in range(20000)}
write_labels(sys.argv[1], ReviewState(rows), CRS.from_epsg(32633))
"""


def test_a_write_that_fails_midway_leaves_the_last_file_whole(tmp_path):
    """A real mid-write failure (the OS's file-size limit, as a full disk would): the old file stays as it was."""
    path = tmp_path / "labels.parquet"
    old = {
        f"d-{i}": LabelRow(f"d-{i}", (i, 0.0, i + 1.0, 1.0), "tree", "/s.tif", "accepted") for i in range(10)
    }
    write_labels(path, ReviewState(old), UTM)
    before = path.read_bytes()
    assert len(before) < 65536
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _WRITER, str(path)], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "File too large" in done.stderr, done.stderr[-500:]
    assert path.read_bytes() == before
    assert read_labels(path)[0].rows == old
    assert [p.name for p in tmp_path.iterdir()] == ["labels.parquet"]  # the temporary file was removed
