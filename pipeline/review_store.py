"""The labels file of ``aerialdet review``: detections, corrected, as training labels.

The review starts from a detection output: each detection whose score is at
or above its class's decision threshold (the model's calibrated
``score_thresholds``) is a label, marked ``review = "unreviewed"``; the
others are not.  Each edit (``pipeline.review_edits``) changes that set:
``accepted``, ``relabeled`` and ``moved`` rows replace the detection's,
``drawn`` rows are boxes the model missed, and a rejected detection is no
label at all (its id, reviewer and time are kept in the file's metadata,
so a reload knows it was rejected).

The file is GeoParquet 1.1 in the detections' CRS, one row per label, with
the columns ``aerialdet train`` reads (``geometry``, ``label``, ``scene``:
``retinanet.geo_labels``) and the review's own (``review_id``, ``review``,
``reviewer``, ``time``, ``source_detection``, ``model``, ``score``).  It is
written whole after every edit, to a temporary file beside it that
``os.replace`` puts in place: a crash loses at most the edit in flight.
Training on it takes the unreviewed rows as they are (the model's
detections at its threshold); filter ``review != 'unreviewed'`` to train on
reviewed rows only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import CRS

from pipeline.errors import PipelineError

REVIEW_STATES = ("unreviewed", "accepted", "relabeled", "moved", "drawn")
"""``review`` values of a label row; a detection's state is one of these, ``rejected`` or ``dropped``."""
META_KEY = b"aerialdet_review"
FORMAT_VERSION = 1
COLUMNS = ("review_id", "label", "scene", "review", "reviewer", "time", "source_detection", "model", "score")


class ReviewFileError(PipelineError, ValueError):
    """A labels file that is not one ``aerialdet review`` wrote (or cannot be read)."""


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One label: a box in the dataset CRS on one scene.

    Attributes:
        review_id: the source detection's id, or ``drawn-<hex>`` for a drawn box.
        bounds_crs: (xmin, ymin, xmax, ymax) in the file's CRS, xmin < xmax, ymin < ymax.
        label: class name.
        scene: the scene's URI, as the detections name it.
        review: one of ``REVIEW_STATES``.
        reviewer: who made the last edit (None: unreviewed).
        time: ISO 8601 UTC time of the last edit (None: unreviewed).
        source_detection: the detection's id (None: drawn).
        model: the model id of the source detection (None: drawn).
        score: the source detection's score (None: drawn).
    """

    review_id: str
    bounds_crs: tuple[float, float, float, float]
    label: str
    scene: str
    review: str
    reviewer: str | None = None
    time: str | None = None
    source_detection: str | None = None
    model: str | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        xmin, ymin, xmax, ymax = self.bounds_crs
        if not (xmin < xmax and ymin < ymax):
            raise ValueError(
                f"LabelRow.bounds_crs must have xmin < xmax and ymin < ymax, got {self.bounds_crs}"
            )
        if self.review not in REVIEW_STATES:
            raise ValueError(f"LabelRow.review must be one of {REVIEW_STATES}, got {self.review!r}")


@dataclass(frozen=True)
class ReviewState:
    """All labels and rejections of one review.

    Attributes:
        rows: label rows by ``review_id``.
        rejected: rejected detection id -> ``{"reviewer", "time", "model"}``.
    """

    rows: Mapping[str, LabelRow] = field(default_factory=dict)
    rejected: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    def state_of(self, detection_id: str) -> str:
        """A detection's state: its row's ``review``, ``rejected``, or ``dropped`` (below threshold)."""
        if detection_id in self.rejected:
            return "rejected"
        row = self.rows.get(detection_id)
        return row.review if row is not None else "dropped"

    def reviewed_ids(self) -> set[str]:
        """Ids of the detections a reviewer has decided on (any edit)."""
        return set(self.rejected) | {k for k, r in self.rows.items() if r.review != "unreviewed"}


def detection_ids(
    scenes: Sequence[str], boxes_xyxy_px: np.ndarray, labels: Sequence[str], models: Sequence[str | None]
) -> list[str]:
    """Stable ids of detections: a hash of scene, scene-px box (0.01 px), label and model.

    Example:
        >>> detection_ids(["a.tif"], np.array([[1.0, 2.0, 3.0, 4.0]]), ["car"], ["m1"])[0]
        'd-bce2bd689ecaeedc'
    """
    out = []
    for scene, box, label, model in zip(scenes, np.asarray(boxes_xyxy_px, np.float64), labels, models):
        key = f"{scene}|{'|'.join(f'{v:.2f}' for v in box)}|{label}|{model}"
        out.append("d-" + hashlib.sha1(key.encode()).hexdigest()[:16])
    return out


def seed_state(
    detections: Any, thresholds: Mapping[str, float], default_threshold: float = 0.5
) -> ReviewState:
    """The state before any edit: the detections at or above their class's threshold, unreviewed.

    Args:
        detections: a DataFrame with ``id``, ``label``, ``score``, ``scene``, ``model`` and
            ``xmin``/``ymin``/``xmax``/``ymax`` (dataset CRS) columns.
        thresholds: class name -> decision threshold.
        default_threshold: for classes without one.
    """
    rows = {}
    for rec in detections.itertuples(index=False):
        if float(rec.score) >= thresholds.get(rec.label, default_threshold):
            bounds = (float(rec.xmin), float(rec.ymin), float(rec.xmax), float(rec.ymax))
            if bounds[0] < bounds[2] and bounds[1] < bounds[3]:
                rows[rec.id] = LabelRow(
                    rec.id,
                    bounds,
                    rec.label,
                    rec.scene,
                    "unreviewed",
                    None,
                    None,
                    rec.id,
                    rec.model,
                    float(rec.score),
                )
    return ReviewState(rows, {})


def _table(state: ReviewState, crs: CRS) -> Any:
    """The labels as a pyarrow Table with GeoParquet 1.1 ``geo`` metadata and the rejections."""
    import geopandas as gpd
    import shapely
    from geopandas.io.arrow import _geopandas_to_arrow

    rows = sorted(state.rows.values(), key=lambda r: (r.scene, r.review_id))
    frame = gpd.GeoDataFrame(
        {name: [getattr(r, name) for r in rows] for name in COLUMNS},
        geometry=shapely.box(*np.array([r.bounds_crs for r in rows], np.float64).reshape(-1, 4).T),
        crs=crs,
    )
    frame["score"] = frame["score"].astype("float64")
    table = _geopandas_to_arrow(frame, index=False, schema_version="1.1.0", write_covering_bbox=True)
    review = {"format_version": FORMAT_VERSION, "rejected": dict(state.rejected)}
    return table.replace_schema_metadata({**table.schema.metadata, META_KEY: json.dumps(review).encode()})


def write_labels(path: str | os.PathLike[str], state: ReviewState, crs: CRS) -> Path:
    """Write the labels file whole and atomically (a temporary file beside it, then ``os.replace``).

    Raises:
        OSError: the folder cannot be written.
    """
    import pyarrow.parquet as pq

    target = Path(path)
    table = _table(state, crs)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_labels(path: str | os.PathLike[str]) -> tuple[ReviewState, CRS | None]:
    """Read a labels file ``write_labels`` wrote back into a ``ReviewState`` (and its CRS).

    Raises:
        ReviewFileError: the file cannot be read or is not a review labels file.
    """
    import geopandas as gpd
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        frame = gpd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types
        raise ReviewFileError(
            f"{path}: cannot be read as GeoParquet ({exc}); give a new --labels file"
        ) from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if META_KEY not in meta or missing:
        raise ReviewFileError(
            f"{path}: not a labels file aerialdet review wrote (missing {missing or 'its review metadata'}); "
            "give a new --labels file"
        )
    review = json.loads(meta[META_KEY])
    rows = {}
    for rec, bounds in zip(frame.itertuples(index=False), frame.geometry.bounds.to_numpy()):
        values = {c: (None if _is_null(getattr(rec, c)) else getattr(rec, c)) for c in COLUMNS}
        rows[rec.review_id] = LabelRow(bounds_crs=tuple(float(v) for v in bounds), **values)  # type: ignore[arg-type]
    return ReviewState(rows, dict(review.get("rejected", {}))), frame.crs


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def with_row(state: ReviewState, row: LabelRow) -> ReviewState:
    """``state`` with ``row`` set (and its id no longer rejected)."""
    rejected = {k: v for k, v in state.rejected.items() if k != row.review_id}
    return replace(state, rows={**state.rows, row.review_id: row}, rejected=rejected)


def without_row(
    state: ReviewState, review_id: str, rejection: Mapping[str, str | None] | None
) -> ReviewState:
    """``state`` without the row ``review_id``; a detection's id is recorded as rejected by ``rejection``."""
    rows = {k: v for k, v in state.rows.items() if k != review_id}
    rejected = dict(state.rejected)
    if rejection is not None:
        rejected[review_id] = dict(rejection)
    return replace(state, rows=rows, rejected=rejected)
