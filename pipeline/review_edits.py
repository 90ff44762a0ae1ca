"""Edits of ``aerialdet review``: a JSON body checked, then applied to a ``ReviewState``.

One edit is a JSON object, at most ``MAX_EDIT_BYTES``:

* ``{"op": "accept", "id": ID}``: the detection (or label) ``ID`` is right.
* ``{"op": "reject", "id": ID}``: it is wrong (a drawn box is deleted).
* ``{"op": "relabel", "id": ID, "label": NAME}``: right box, other class.
* ``{"op": "move", "id": ID, "bbox": [xmin, ymin, xmax, ymax]}``: moved or resized.
* ``{"op": "draw", "label": NAME, "bbox": [...]}``: a box the model missed.

``bbox`` is in the map's CRS (EPSG:3857, what the page draws in) and must
lie on one of the named scenes; ``label`` must be one of the classes.
Anything else (another key, a wrong type, NaN, an unknown id, a box off the
scenes) is refused with ``ReviewEditError`` naming the field and the value,
before the state changes.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import shapely
from pyproj import Transformer

from pipeline.errors import PipelineError
from pipeline.review_store import LabelRow, ReviewState, with_row, without_row

MAX_EDIT_BYTES = 16_384
MAX_ID_CHARS = 64
_KEYS = {
    "accept": {"op", "id"},
    "reject": {"op", "id"},
    "relabel": {"op", "id", "label"},
    "move": {"op", "id", "bbox"},
    "draw": {"op", "label", "bbox"},
}
OPS = tuple(_KEYS)


class ReviewEditError(PipelineError, ValueError):
    """An edit that is refused: the message names the field and the value."""


@dataclass(frozen=True)
class EditContext:
    """What an edit is checked against.

    Attributes:
        class_names: the classes a label may take.
        detections: every detection as an unreviewed ``LabelRow``, by id.
        footprints: scene URI -> the polygon it covers, in the dataset CRS.
        map_to_crs: EPSG:3857 -> dataset CRS (``always_xy``).
        reviewer: name written with each edit.
    """

    class_names: tuple[str, ...]
    detections: Mapping[str, LabelRow]
    footprints: Mapping[str, shapely.Polygon]
    map_to_crs: Transformer
    reviewer: str


def _refuse(message: str) -> ReviewEditError:
    return ReviewEditError(f"edit refused: {message}")


def parse_edit(body: bytes) -> dict[str, Any]:
    """The JSON edit in ``body``, its keys and their types checked (not yet its ids or boxes).

    Raises:
        ReviewEditError: too long, not JSON, not an object, an unknown op or key, a wrong type.
    """
    if len(body) > MAX_EDIT_BYTES:
        raise _refuse(f"body is {len(body)} bytes; an edit is at most {MAX_EDIT_BYTES}")
    try:
        edit = json.loads(body.decode("utf-8"), parse_constant=lambda name: math.nan)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(f"body is not JSON ({exc})") from None
    if not isinstance(edit, dict):
        raise _refuse(f"an edit is a JSON object, got {type(edit).__name__}")
    op = edit.get("op")
    if op not in _KEYS:
        raise _refuse(f"'op' must be one of {list(OPS)}, got {op!r}")
    if set(edit) != _KEYS[op]:
        raise _refuse(f"{op!r} takes exactly the keys {sorted(_KEYS[op])}, got {sorted(map(str, edit))}")
    for key in ("id", "label"):
        if key in edit and not (isinstance(edit[key], str) and 0 < len(edit[key]) <= MAX_ID_CHARS * 4):
            raise _refuse(f"{key!r} must be a non-empty string, got {edit[key]!r:.80}")
    if "bbox" in edit:
        edit["bbox"] = _bbox(edit["bbox"])
    return edit


def _bbox(value: Any) -> tuple[float, float, float, float]:
    """4 finite numbers with xmin < xmax and ymin < ymax."""
    ok = isinstance(value, list) and len(value) == 4
    ok = ok and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok:
        raise _refuse(f"'bbox' must be 4 finite numbers [xmin, ymin, xmax, ymax], got {value!r:.120}")
    xmin, ymin, xmax, ymax = (float(v) for v in value)
    if not (xmin < xmax and ymin < ymax):
        raise _refuse(f"'bbox' must have xmin < xmax and ymin < ymax, got {value!r}")
    return xmin, ymin, xmax, ymax


def _target(state: ReviewState, ctx: EditContext, review_id: str) -> LabelRow:
    """The row an edit acts on: its current label row, else the detection's."""
    row = state.rows.get(review_id) or ctx.detections.get(review_id)
    if row is None:
        raise _refuse(f"no detection or label has id {review_id!r:.80}")
    return row


def _on_scene(
    ctx: EditContext, bbox_map: tuple[float, float, float, float], scene: str | None
) -> tuple[Any, str]:
    """(bounds in the dataset CRS, scene) of a map box whose centre lies on ``scene`` (None: any)."""
    bounds = ctx.map_to_crs.transform_bounds(*bbox_map, densify_pts=5)
    centre = shapely.Point((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    names = [scene] if scene is not None else sorted(ctx.footprints)
    for name in names:
        footprint = ctx.footprints[name]
        if (
            footprint.contains(centre)
            and shapely.box(*bounds).intersection(footprint).area > 0.5 * shapely.box(*bounds).area
        ):
            return tuple(float(v) for v in bounds), name
    where = f"scene {scene}" if scene is not None else "any of the scenes under review"
    raise _refuse(f"'bbox' {list(bbox_map)} (EPSG:3857) does not lie on {where}")


def _label(ctx: EditContext, name: str) -> str:
    if name not in ctx.class_names:
        raise _refuse(f"'label' must be one of {list(ctx.class_names)}, got {name!r:.80}")
    return name


def apply_edit(
    state: ReviewState, edit: Mapping[str, Any], ctx: EditContext, now: str
) -> tuple[ReviewState, str]:
    """Apply a parsed edit (``parse_edit``); returns the new state and the id of the row it touched.

    Args:
        state: the state before.
        edit: the parsed edit.
        ctx: classes, detections, scenes and the reviewer.
        now: the edit's time, ISO 8601 UTC.

    Raises:
        ReviewEditError: an unknown id or label, or a box off the scenes; ``state`` is unchanged.
    """
    op = edit["op"]
    if op == "draw":
        bounds, scene = _on_scene(ctx, edit["bbox"], None)
        label = _label(ctx, edit["label"])
        row = LabelRow(f"drawn-{secrets.token_hex(8)}", bounds, label, scene, "drawn", ctx.reviewer, now)
        return with_row(state, row), row.review_id
    row = _target(state, ctx, edit["id"])
    if op == "reject":
        is_detection = row.source_detection is not None
        rejection = {"reviewer": ctx.reviewer, "time": now, "model": row.model} if is_detection else None
        return without_row(state, row.review_id, rejection), row.review_id
    changed = row.review if row.review not in ("unreviewed",) else "accepted"
    if op == "relabel":
        row = replace(
            row, label=_label(ctx, edit["label"]), review="drawn" if changed == "drawn" else "relabeled"
        )
    elif op == "move":
        bounds, _ = _on_scene(ctx, edit["bbox"], row.scene)
        row = replace(row, bounds_crs=bounds, review="drawn" if changed == "drawn" else "moved")
    else:  # accept
        row = replace(row, review=changed)
    return with_row(state, replace(row, reviewer=ctx.reviewer, time=now)), row.review_id
