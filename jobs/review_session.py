"""One review: the scenes, the detections, the labels file and the edits (what the server serves).

``open_session`` reads everything the page needs once (the scenes'
footprints, the detections with their ids, the labels file or its seed,
the decision thresholds) and ``ReviewSession``'s methods answer the page's
requests as JSON-ready dicts.  Edits go through ``pipeline.review_edits``;
the labels file is rewritten (atomically) before the new state is kept, so a
failed write leaves both the file and the state as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from pipeline.query import Filters
from pipeline.reading import ReadConfig, read_footprint
from pipeline.review_data import BOUNDS, MAP_CRS, load_detections, to_map
from pipeline.review_edits import EditContext, ReviewEditError, apply_edit, parse_edit
from pipeline.review_queue import review_queue
from pipeline.review_store import LabelRow, ReviewState, read_labels, seed_state, write_labels
from pipeline.review_tiles import display_range, render_tile

MAX_VIEWPORT_ROWS = 20_000
"""Most detections one viewport request returns (the page asks to zoom in past that)."""


@dataclass
class ReviewSession:
    """The state of one ``aerialdet review``: read-only inputs plus the labels and an undo stack."""

    det: str
    scenes: tuple[str, ...]
    crs: CRS
    detections: Any  # DataFrame (pipeline.review_data.load_detections), the named scenes' only
    thresholds: Mapping[str, float]
    ctx: EditContext
    labels_path: Path
    read_config: ReadConfig
    state: ReviewState
    other: Any = None
    undo_stack: list[ReviewState] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ranges: dict[int, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """Scenes (index, URI, bounds on the map), classes, thresholds, labels file."""
        footprints = [self.ctx.footprints[s].bounds for s in self.scenes]
        scene_bounds = to_map(np.array(footprints), self.crs).tolist()
        return {
            "scenes": [
                {"index": i, "scene": s, "bbox": b} for i, (s, b) in enumerate(zip(self.scenes, scene_bounds))
            ],
            "classes": list(self.ctx.class_names),
            "thresholds": dict(self.thresholds),
            "crs": self.crs.to_string(),
            "labels_file": str(self.labels_path),
            "reviewer": self.ctx.reviewer,
        }

    def _item(self, det_id: str, row: LabelRow | None, det: Any) -> dict[str, Any]:
        state = self.state.state_of(det_id)
        shown = row if row is not None else self.ctx.detections[det_id]
        return {
            "id": det_id,
            "bounds": list(shown.bounds_crs),
            "label": shown.label,
            "scene": shown.scene,
            "state": state,
            "score": None if det is None else float(det.score),
            "detected_label": None if det is None else det.label,
            "model": shown.model,
        }

    def viewport(
        self, bbox_map: Sequence[float], labels: Sequence[str], min_score: float | None
    ) -> dict[str, Any]:
        """Detections (with their review state) and drawn boxes in a map bbox (EPSG:3857).

        Raises:
            QueryError: a malformed bbox or filter.
        """
        f = Filters(tuple(bbox_map), MAP_CRS, tuple(labels), min_score)  # type: ignore[arg-type]
        frame, _ = load_detections(self.det, f)
        frame = frame[frame["scene"].isin(self.scenes)].head(MAX_VIEWPORT_ROWS)
        with self.lock:
            items = [self._item(d.id, self.state.rows.get(d.id), d) for d in frame.itertuples(index=False)]
            drawn = [r for r in self.state.rows.values() if r.source_detection is None]
        xmin, ymin, xmax, ymax = bbox_map
        box = Transformer.from_crs(MAP_CRS, self.crs, always_xy=True).transform_bounds(xmin, ymin, xmax, ymax)
        items += [
            self._item(r.review_id, r, None)
            for r in drawn
            if r.bounds_crs[0] <= box[2]
            and r.bounds_crs[2] >= box[0]
            and r.bounds_crs[1] <= box[3]
            and r.bounds_crs[3] >= box[1]
            and (not labels or r.label in labels)
        ]
        return {"items": self._on_map(items), "truncated": len(frame) >= MAX_VIEWPORT_ROWS}

    def _on_map(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if items:
            for item, bbox in zip(
                items, to_map(np.array([i.pop("bounds") for i in items]), self.crs).tolist()
            ):
                item["bbox"] = bbox
        return items

    def edit(self, body: bytes) -> dict[str, Any]:
        """Apply one edit (JSON ``body``), rewrite the labels file, return the item it changed.

        Raises:
            ReviewEditError: the edit is refused (the state and the file are unchanged).
        """
        edit = parse_edit(body)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.lock:
            new, review_id = apply_edit(self.state, edit, self.ctx, now)
            write_labels(self.labels_path, new, self.crs)
            self.undo_stack.append(self.state)
            self.state = new
            row = new.rows.get(review_id)
            det = self._detection(review_id)
            item = self._item(review_id, row, det) if (row or det is not None) else None
        return {"ok": True, "item": self._on_map([item])[0] if item else None, "id": review_id}

    def _detection(self, det_id: str) -> Any:
        match = self.detections[self.detections["id"] == det_id]
        return next(match.itertuples(index=False)) if len(match) else None

    def undo(self) -> dict[str, Any]:
        """Go back one edit (the labels file too); ``undone`` False when there is none."""
        with self.lock:
            if not self.undo_stack:
                return {"ok": True, "undone": False}
            write_labels(self.labels_path, self.undo_stack[-1], self.crs)
            self.state = self.undo_stack.pop()
        return {"ok": True, "undone": True}

    def queue(self, limit: int) -> dict[str, Any]:
        """The next ``limit`` stops of the review queue (``pipeline.review_queue``), on the map."""
        with self.lock:
            reviewed = self.state.reviewed_ids()
        items = review_queue(self.detections, self.thresholds, reviewed, other=self.other)[:limit]
        out = [
            {"kind": i.kind, "id": i.detection_id, "reason": i.reason, "bounds": list(i.bounds_crs)}
            for i in items
        ]
        return {"items": self._on_map(out)}

    def tile(self, index: int, z: int, x: int, y: int) -> bytes:
        """PNG of XYZ tile z/x/y of scene ``index`` (``IndexError`` for an unknown index)."""
        uri = self.scenes[index]
        if index not in self.ranges:
            self.ranges[index] = display_range(uri, self.read_config)
        return render_tile(uri, x, y, z, self.read_config, self.ranges[index])


def _footprints(scenes: Sequence[str], crs: CRS, config: ReadConfig) -> dict[str, Any]:
    return {uri: read_footprint(uri, crs, config) for uri in scenes}


def _detection_rows(frame: Any) -> dict[str, LabelRow]:
    rows = {}
    for d in frame.itertuples(index=False):
        xmin, ymin, xmax, ymax = (float(getattr(d, b)) for b in BOUNDS)
        if xmin < xmax and ymin < ymax:
            bounds = (xmin, ymin, xmax, ymax)
            rows[d.id] = LabelRow(
                d.id, bounds, d.label, d.scene, "unreviewed", None, None, d.id, d.model, float(d.score)
            )
    return rows


def open_session(
    det: str,
    scenes: Sequence[str],
    labels_path: Path,
    *,
    thresholds: Mapping[str, float],
    class_names: Sequence[str],
    reviewer: str,
    read_config: ReadConfig,
    other: str | None = None,
) -> ReviewSession:
    """Read the detections of the named scenes, their footprints and the labels file (or seed it).

    Raises:
        QueryError: an output cannot be read.
        InvalidSceneError: a scene cannot be opened.
        ReviewFileError: ``labels_path`` exists but is not a labels file of a review.
    """
    frame, crs = load_detections(det)
    frame = frame[frame["scene"].isin(list(scenes))].reset_index(drop=True)
    other_frame = None
    if other is not None:
        other_frame, other_crs = load_detections(other)
        if not other_crs.equals(crs):
            raise ReviewEditError(
                f"{other}: its CRS {other_crs.to_string()} differs from {det}'s {crs.to_string()}"
            )
        other_frame = other_frame[other_frame["scene"].isin(list(scenes))]
    names = tuple(dict.fromkeys([*class_names, *frame["label"].unique().tolist()]))
    ctx = EditContext(
        names,
        _detection_rows(frame),
        _footprints(scenes, crs, read_config),
        Transformer.from_crs(MAP_CRS, crs, always_xy=True),
        reviewer,
    )
    if labels_path.exists():
        state, _ = read_labels(labels_path)
    else:
        state = seed_state(frame, thresholds)
        write_labels(labels_path, state, crs)
    return ReviewSession(
        det, tuple(scenes), crs, frame, thresholds, ctx, labels_path, read_config, state, other_frame
    )
