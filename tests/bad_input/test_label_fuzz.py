"""Hostile values in every label reader: a LabelSet (bad rows listed as issues) or one LabelError, nothing else.

Values: quotes, `?`, `;`, NUL, non-finite numbers, negative and huge boxes,
wrong JSON types.  A reader must never raise anything but LabelError, and a
box it keeps must be finite, inside its image and non-empty.
"""

from __future__ import annotations

import csv
import json
import math
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retinanet.errors import LabelError
from retinanet.labeled_tiles import read_labels
from tests.conftest import write_scene

HOSTILE_TEXT = st.sampled_from(
    ["", "'", '"', "?", ";", "\x00", "a?b", "); DROP --", "tree", "nan", "1e309", "-5"]
)
HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from([None, True, [], {}, [1, 2], math.inf, -math.inf, math.nan, -1, 0, 10**12]),
    st.floats(-100, 200, allow_nan=False),
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def image(tmp_path):
    return write_scene(tmp_path / "img.tif", [(4, 4, 20, 20, 0)], width=64, height=64)


def _check(paths):
    try:
        labels = read_labels([str(p) for p in paths])
    except LabelError as exc:
        assert str(exc)  # one message, naming something
        return
    for item in labels.images:
        boxes = np.asarray(item.boxes_xyxy_px, dtype=float).reshape(-1, 4)
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 64).all() and (boxes[:, [1, 3]] <= 64).all()


@FUZZ
@given(box=st.lists(HOSTILE_VALUE, min_size=4, max_size=4), label=HOSTILE_VALUE)
def test_coco_with_hostile_values(tmp_path, image, box, label):
    doc = {
        "images": [{"id": 1, "file_name": image.name, "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box}],
        "categories": [{"id": 1, "name": label}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    _check([path])


@FUZZ
@given(values=st.lists(HOSTILE_TEXT | st.floats(-100, 200).map(str), min_size=5, max_size=5))
def test_voc_with_hostile_values(tmp_path, image, values):
    xmin, ymin, xmax, ymax, name = (escape(v.replace("\x00", "")) for v in values)
    path = tmp_path / "a.xml"
    path.write_text(
        f"<annotation><filename>{image.name}</filename><size><width>64</width><height>64</height><depth>3</depth>"
        f"</size><object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox></object></annotation>"
    )
    _check([path])


@FUZZ
@given(values=st.lists(HOSTILE_TEXT | st.floats(-100, 200).map(str), min_size=5, max_size=5))
def test_csv_with_hostile_values(tmp_path, image, values):
    path = tmp_path / "a.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "xmin", "ymin", "xmax", "ymax", "label"])
        writer.writerow([image.name, *values[:4], values[4]])
        writer.writerow([image.name, 4, 4, 20, 20, "tree"])  # one good row beside the hostile one
    _check([path])


@pytest.mark.parametrize(
    "doc", [[], "text", {"images": "x"}, {"images": [{"id": 1}]}, {"annotations": [1]}, None]
)
def test_coco_of_the_wrong_shape_is_a_label_error_or_listed_rows(tmp_path, doc):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    try:
        labels = read_labels([str(path)])
    except LabelError as exc:
        assert "coco.json" in str(exc)
    else:  # a well-formed document with bad rows: nothing kept, every bad row listed
        assert labels.images == [] and labels.issues and all("coco.json" in i.file for i in labels.issues)
