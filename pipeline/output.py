"""Merged scene detections -> one GeoParquet file per scene under ``OUT/``.

File names are ``<scene stem>-<8 hex of the URI's sha1>.parquet`` so scenes
with the same name in different folders or buckets never collide, and a
re-run finds a scene's file again.  The URI is normalised first
(``sources.normalize_scene_uri``), so ``one.tif`` and ``$PWD/one.tif`` share
one file.  The stem keeps letters, digits, ``.``, ``-`` and ``_`` (anything
else becomes ``_``), never starts with ``.`` or ``_`` (``RESERVED_PREFIXES``:
readers skip those names, which are temp files and run records), and is
shortened so the name, and the temp name it is written under, fit in 255
bytes.  A file exists only once complete
(``geoparquet.write_geoparquet`` renames a temp file into place), so "the file
exists" is "the scene is done".
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from pyproj import CRS

from pipeline.geoparquet import DetectionColumns, build_table, crs_label, write_geoparquet
from pipeline.georef import boxes_to_geometry, scene_footprint
from pipeline.sources import normalize_scene_uri

if TYPE_CHECKING:  # type names only: `pipeline.query` imports this module without loading torch
    from pipeline.merging import MergedBoxes
    from pipeline.types import SceneInfo

RESERVED_PREFIXES: tuple[str, ...] = (".", "_")
"""File names in an output folder that are not detections: temp files, ``_run.json``, ``_logs``."""

# write_geoparquet writes `.<name>.<32 hex>.tmp` first (38 bytes more); both must stay <= 255 bytes
MAX_NAME_BYTES = 200
_NAME_SUFFIX_BYTES = len("-12345678.parquet")
_UNSAFE_CHARACTERS = re.compile(r"[^\w.-]")


def _stem(scene_uri: str) -> str:
    stem = _UNSAFE_CHARACTERS.sub("_", PurePosixPath(scene_uri.rstrip("/")).stem).lstrip(
        "".join(RESERVED_PREFIXES)
    )
    budget = MAX_NAME_BYTES - _NAME_SUFFIX_BYTES
    # cut at a byte budget, then drop a multi-byte character split by the cut
    return stem.encode()[:budget].decode(errors="ignore") or "scene"


def scene_output_path(out_dir: str | Path, scene_uri: str) -> Path:
    """Where a scene's detections go.

    Args:
        out_dir: the output folder.
        scene_uri: local path or ``s3://`` URI, as typed; it is normalised first.

    Returns:
        ``out_dir / "<stem>-<8 hex of sha1(normalised URI)>.parquet"``: at most
        ``MAX_NAME_BYTES`` bytes, never starting with a reserved prefix.

    Example:
        >>> scene_output_path("out", "s3://bucket/tiles/_a.tif")
        PosixPath('out/a-5f0df505.parquet')
    """
    uri = normalize_scene_uri(scene_uri)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return Path(out_dir) / f"{_stem(uri)}-{digest}.parquet"


def choose_output_crs(scene_crs_wkts: list[str], to_crs: str | None) -> CRS:
    """One dataset, one CRS: the scenes' common CRS, else ``to_crs`` (default OGC:CRS84).

    Args:
        scene_crs_wkts: CRS of every scene in the run.
        to_crs: the user's ``--to-crs``; when given it always wins.
    """
    if to_crs:
        return CRS.from_user_input(to_crs)
    crss = {CRS.from_wkt(w) for w in scene_crs_wkts}
    if len(crss) == 1:
        return crss.pop()
    return CRS.from_user_input("OGC:CRS84")


def scene_columns(
    scene: SceneInfo,
    merged: MergedBoxes,
    *,
    class_names: tuple[str, ...],
    out_crs: CRS,
    model_id: str,
    run_id: str,
) -> DetectionColumns:
    """Georeference merged scene-pixel boxes into the contract's columns.

    ``scene`` is ``scene.uri`` as given: ``sources.list_scenes`` has normalised it.
    """
    scene_crs = CRS.from_wkt(scene.crs_wkt)
    polygons, bounds = boxes_to_geometry(merged.boxes_xyxy_px, scene.transform, scene_crs, out_crs)
    return DetectionColumns(
        polygons=polygons,
        bounds_crs=bounds,
        scores=merged.scores,
        label_ids=merged.labels,
        class_names=class_names,
        scene=scene.uri,
        boxes_xyxy_px=np.asarray(merged.boxes_xyxy_px),
        model=model_id,
        run_id=run_id,
        scene_crs=crs_label(scene_crs),
    )


def write_scene_detections(
    out_dir: str | Path,
    scene: SceneInfo,
    merged: MergedBoxes,
    *,
    class_names: tuple[str, ...],
    out_crs: CRS,
    model_id: str,
    run_id: str,
) -> Path:
    """Georeference and write one scene's detections atomically.

    Returns:
        The file written (see ``scene_output_path``).
    """
    cols = scene_columns(
        scene, merged, class_names=class_names, out_crs=out_crs, model_id=model_id, run_id=run_id
    )
    return write_geoparquet(
        scene_output_path(out_dir, scene.uri),
        build_table(cols),
        out_crs,
        extra_metadata={
            "scene": scene.uri,
            "run_id": run_id,
            "model": model_id,
            "class_names": list(class_names),
            # what `evaluate` places plain ground truth by, with no raster at hand
            "footprint": scene_footprint(
                scene.width_px, scene.height_px, scene.transform, CRS.from_wkt(scene.crs_wkt), out_crs
            ).wkt,
        },
    )
