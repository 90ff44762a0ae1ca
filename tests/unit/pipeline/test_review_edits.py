"""Edits: parsed strictly, applied to a state without touching the one before."""

from __future__ import annotations

import json

import pytest
import shapely
from pyproj import CRS, Transformer

from pipeline.review_edits import EditContext, ReviewEditError, apply_edit, parse_edit
from pipeline.review_store import LabelRow, ReviewState

UTM = CRS.from_epsg(32633)
TO_MAP = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
SCENE = "/data/s.tif"
DET = LabelRow(
    "d-1", (500010.0, 3999990.0, 500020.0, 4000000.0), "car", SCENE, "unreviewed", None, None, "d-1", "m", 0.4
)


def _ctx() -> EditContext:
    return EditContext(
        ("car", "tree"),
        {"d-1": DET},
        {SCENE: shapely.box(500000.0, 3999900.0, 500100.0, 4000000.0)},
        Transformer.from_crs("EPSG:3857", UTM, always_xy=True),
        "ann",
    )


def _map_box(xmin, ymin, xmax, ymax):
    return list(TO_MAP.transform_bounds(xmin, ymin, xmax, ymax))


def _apply(state, edit):
    return apply_edit(state, parse_edit(json.dumps(edit).encode()), _ctx(), "2026-12-03T00:00:00+00:00")


def test_accept_a_dropped_detection_makes_it_a_label():
    state = ReviewState()
    new, rid = _apply(state, {"op": "accept", "id": "d-1"})
    assert rid == "d-1" and new.rows["d-1"].review == "accepted" and new.rows["d-1"].reviewer == "ann"
    assert state.rows == {}  # the state before is untouched


def test_reject_then_accept_again():
    new, _ = _apply(ReviewState({"d-1": DET}), {"op": "reject", "id": "d-1"})
    assert (
        "d-1" not in new.rows
        and new.rejected["d-1"]["reviewer"] == "ann"
        and new.rejected["d-1"]["model"] == "m"
    )
    back, _ = _apply(new, {"op": "accept", "id": "d-1"})
    assert back.state_of("d-1") == "accepted"


def test_relabel_and_move():
    new, _ = _apply(ReviewState({"d-1": DET}), {"op": "relabel", "id": "d-1", "label": "tree"})
    assert new.rows["d-1"].label == "tree" and new.rows["d-1"].review == "relabeled"
    moved, _ = _apply(new, {"op": "move", "id": "d-1", "bbox": _map_box(500030, 3999950, 500045, 3999960)})
    xmin, ymin, xmax, ymax = moved.rows["d-1"].bounds_crs
    assert abs(xmin - 500030) < 0.01 and abs(ymax - 3999960) < 0.01 and moved.rows["d-1"].review == "moved"


def test_draw_finds_the_scene_and_reject_deletes_a_drawn_box():
    new, rid = _apply(
        ReviewState(), {"op": "draw", "label": "tree", "bbox": _map_box(500050, 3999950, 500060, 3999960)}
    )
    row = new.rows[rid]
    assert (
        rid.startswith("drawn-")
        and row.scene == SCENE
        and row.source_detection is None
        and row.review == "drawn"
    )
    gone, _ = _apply(new, {"op": "reject", "id": rid})
    assert rid not in gone.rows and rid not in gone.rejected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"op": "draw", "label": "tree", "bbox": [0, 0, 10, 10]}, "does not lie on any of the scenes"),
        (
            {"op": "draw", "label": "house", "bbox": _map_box(500050, 3999950, 500060, 3999960)},
            "'label' must be one of",
        ),
        ({"op": "relabel", "id": "d-1", "label": "house"}, "'label' must be one of \\['car', 'tree'\\]"),
        ({"op": "accept", "id": "d-9"}, "no detection or label has id 'd-9'"),
        # a box mostly off its scene (the scene ends at x = 500100)
        (
            {"op": "move", "id": "d-1", "bbox": _map_box(500095, 3999950, 500140, 3999960)},
            "does not lie on scene",
        ),
    ],
)
def test_refused_edits_name_the_problem(edit, message):
    state = ReviewState({"d-1": DET})
    with pytest.raises(ReviewEditError, match=message):
        _apply(state, edit)
    assert state.rows == {"d-1": DET}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"null", "JSON object"),
        (b'{"op": "accept", "id": ""}', "non-empty string"),
        (b'{"op": "accept", "id": "d-1", "label": "car"}', "takes exactly the keys"),
        (b'{"op": "move", "id": "d-1", "bbox": [0, 0, true, 1]}', "4 finite numbers"),
        (b'{"op": "move", "id": "d-1", "bbox": [0, 0, Infinity, 1]}', "4 finite numbers"),
        (b'{"op": "move", "id": "d-1", "bbox": {"xmin": 0}}', "4 finite numbers"),
        (b" " * 20000, "at most"),
    ],
)
def test_parse_refuses_malformed_bodies(body, message):
    with pytest.raises(ReviewEditError, match=message):
        parse_edit(body)
