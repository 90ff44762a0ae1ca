"""One scene's last stage: its tiles' detections -> merged, filtered, georeferenced, written.

Two halves, both plain functions (no Ray):

* ``prepare_scene``: merge, score floor, georeference and encode the
  GeoParquet file (CPU: the cross-tile NMS is the heavy part).  ``ray_stages``
  runs it as one Ray task per scene, so a bucket of scenes never waits on the
  driver, and a scene is prepared while the next scenes are inferred.
* ``write_prepared``: write the encoded file once, with its manifest entry.
  The driver does it, through its own output store: workers never need
  credentials for the output (nothing secret travels to Ray), only the
  encoded bytes come back.

``finish_scene`` is both in one call.  Settings travel in ``FinishSettings``
(small, picklable: the output CRS as WKT); none of these raise for a scene's
own problem, they return it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyproj import CRS

from pipeline.merging import MergeConfig, MergedBoxes, merge_scene
from pipeline.mosaic import centres_inside
from pipeline.output import OutputExistsError, encode_scene_detections, scene_output_name, write_scene_file
from pipeline.storage import OutputStore, open_store
from pipeline.types import SceneInfo, TileDetections


@dataclass(frozen=True, slots=True)
class FinishSettings:
    """What every scene's finish needs; the same for all scenes of a run.

    Attributes:
        out_dir: output folder or ``s3://bucket/prefix``.
        out_crs_wkt: the dataset's CRS.
        merge: cross-tile merge settings.
        class_names: names indexed by label id.
        min_score_per_class: keep detections scoring at least this for their
            class (``--min-score``, else the model's calibrated scores); None
            keeps every detection.
        model_id: checkpoint id, written in each row.
        run_id: this run's id, written in each row.
        replace: replace an existing output (``--overwrite``).
        keep_region_px: the part of the scene whose detections it reports (scene
            px, ``pipeline.scene_plan.ScenePlan.keep_px``): what it owns in
            the mosaic (``pipeline.mosaic.owned_px``) within ``--aoi``
            (``pipeline.aoi.aoi_in_scene_px``); a detection whose centre lies
            outside is another scene's, or outside the area.  None keeps all
            (one scene's settings: ``dataclasses.replace`` of the run's).
    """

    out_dir: str
    out_crs_wkt: str
    merge: MergeConfig
    class_names: tuple[str, ...]
    min_score_per_class: tuple[float, ...] | None
    model_id: str
    run_id: str
    replace: bool
    keep_region_px: Any = None  # shapely geometry; Any keeps shapely out of this dataclass's signature


@dataclass(frozen=True, slots=True)
class SceneOutcome:
    """How finishing one scene went.

    Attributes:
        status: ``done``, ``exists`` (another run wrote it first) or ``failed``.
        output: the file written (or found), else None.
        num_detections: rows written.
        error: why it failed (names the scene), else None.
        seconds: time spent merging and encoding.
    """

    status: str
    output: str | None = None
    num_detections: int = 0
    error: str | None = None
    seconds: float = 0.0


def keep_scores(merged: MergedBoxes, min_score_per_class: tuple[float, ...] | None) -> MergedBoxes:
    """Drop detections scoring below their class's minimum; ``None`` keeps all."""
    if min_score_per_class is None:
        return merged
    keep = merged.scores >= np.asarray(min_score_per_class, np.float32)[merged.labels]
    return MergedBoxes(merged.boxes_xyxy_px[keep], merged.scores[keep], merged.labels[keep])


@dataclass(frozen=True, slots=True)
class PreparedScene:
    """A scene merged and encoded, ready to write (or why it could not be).

    Attributes:
        data: the GeoParquet file's bytes (empty when ``error``).
        num_detections: its rows.
        error: why preparing failed (names the scene), else None.
        seconds: time spent merging and encoding.
    """

    data: bytes
    num_detections: int = 0
    error: str | None = None
    seconds: float = 0.0


def prepare_scene(scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> PreparedScene:
    """Merge one scene's tile detections, keep those above the score floor, encode its GeoParquet.

    Args:
        scene: the scene's header.
        tiles: every inferred tile's detections, tile pixels.
        settings: the run's merge, score and output settings.
    """
    started = time.time()
    try:
        merged = keep_scores(merge_scene(tiles, settings.merge), settings.min_score_per_class)
        if settings.keep_region_px is not None:
            keep = centres_inside(merged.boxes_xyxy_px, settings.keep_region_px)
            merged = MergedBoxes(merged.boxes_xyxy_px[keep], merged.scores[keep], merged.labels[keep])
        data = encode_scene_detections(
            scene,
            merged,
            class_names=settings.class_names,
            out_crs=CRS.from_wkt(settings.out_crs_wkt),
            model_id=settings.model_id,
            run_id=settings.run_id,
        )
        return PreparedScene(data, len(merged), seconds=round(time.time() - started, 3))
    except Exception as exc:
        error = f"{scene.uri}: merging failed: {type(exc).__name__}: {exc}"
        return PreparedScene(b"", error=error, seconds=round(time.time() - started, 3))


def write_prepared(
    store: OutputStore, scene: SceneInfo, prepared: PreparedScene, settings: FinishSettings
) -> SceneOutcome:
    """Write a prepared scene once through ``store``; ``exists`` when another run wrote it first."""
    if prepared.error is not None:
        return SceneOutcome("failed", error=prepared.error, seconds=prepared.seconds)
    try:
        path = write_scene_file(
            store,
            scene.uri,
            prepared.data,
            num_detections=prepared.num_detections,
            model_id=settings.model_id,
            run_id=settings.run_id,
            replace=settings.replace,
        )
        return SceneOutcome("done", str(path), prepared.num_detections, seconds=prepared.seconds)
    except OutputExistsError:
        return SceneOutcome("exists", store.uri(scene_output_name(scene.uri)), seconds=prepared.seconds)
    except Exception as exc:
        error = f"{scene.uri}: writing failed: {type(exc).__name__}: {exc}"
        return SceneOutcome("failed", error=error, seconds=prepared.seconds)


def finish_scene(scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> SceneOutcome:
    """``prepare_scene`` then ``write_prepared`` to ``settings.out_dir``, in one call.

    Args:
        scene: the scene's header.
        tiles: every inferred tile's detections, tile pixels.
        settings: the run's merge, score and output settings.

    Returns:
        ``done`` with the file and its row count; ``exists`` when another run
        wrote the scene first (theirs is kept); ``failed`` with the reason.
    """
    return write_prepared(
        open_store(settings.out_dir), scene, prepare_scene(scene, tiles, settings), settings
    )
