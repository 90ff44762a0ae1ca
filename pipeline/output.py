"""Merged scene detections -> one GeoParquet file per scene under ``OUT/``.

``OUT`` is a local folder or ``s3://bucket/prefix`` (``pipeline.storage``).

File names are ``<scene stem>-<8 hex of the URI's sha1>.parquet`` so scenes
with the same name in different folders or buckets never collide, and a
re-run finds a scene's file again.  The URI is normalised first
(``sources.normalize_scene_uri``), so ``one.tif`` and ``$PWD/one.tif`` share
one file.  The stem keeps letters, digits, ``.``, ``-`` and ``_`` (anything
else becomes ``_``), never starts with ``.`` or ``_`` (``RESERVED_PREFIXES``:
readers skip those names, which are temp files and run records), and is
shortened so the name, and the temp name it is written under, fit in 255
bytes.  A file exists only once complete and is written once
(``storage.OutputStore.write_bytes_once``: a local temp file linked into
place, or an S3 put with ``If-None-Match: *``), so "the file exists" is "the
scene is done", and a second writer of the same scene never replaces it.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from pyproj import CRS

from pipeline.errors import InvalidSceneError, OutputError
from pipeline.geoparquet import DetectionColumns, build_table, crs_label, encode_geoparquet
from pipeline.georef import boxes_to_geometry, scene_footprint
from pipeline.manifest import record
from pipeline.sources import normalize_scene_uri
from pipeline.storage import RESERVED_PREFIXES, LocalStore, OutputStore, open_store

if TYPE_CHECKING:  # type names only: `pipeline.query` imports this module without loading torch
    from pipeline.merging import MergedBoxes
    from pipeline.types import SceneInfo

# a local store writes `.<name>.<32 hex>.tmp` first (38 bytes more); both must stay <= 255 bytes
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


class OutputExistsError(OutputError, FileExistsError):
    """A scene's output exists already and ``replace`` was not asked for: nothing was written."""


def scene_output_name(scene_uri: str) -> str:
    """The file name of a scene's detections in any output (folder or S3 prefix).

    Args:
        scene_uri: local path or ``s3://`` URI, as typed; it is normalised first.

    Returns:
        ``"<stem>-<8 hex of sha1(normalised URI)>.parquet"``: at most
        ``MAX_NAME_BYTES`` bytes, never starting with a reserved prefix.

    Example:
        >>> scene_output_name("s3://bucket/tiles/_a.tif")
        'a-5f0df505.parquet'
    """
    uri = normalize_scene_uri(scene_uri)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{_stem(uri)}-{digest}.parquet"


def scene_output_path(out_dir: str | Path, scene_uri: str) -> Path:
    """Where a scene's detections go in a local output folder.

    Args:
        out_dir: the output folder.
        scene_uri: local path or ``s3://`` URI, as typed; it is normalised first.

    Returns:
        ``out_dir / scene_output_name(scene_uri)``.

    Example:
        >>> scene_output_path("out", "s3://bucket/tiles/_a.tif")
        PosixPath('out/a-5f0df505.parquet')
    """
    return Path(out_dir) / scene_output_name(scene_uri)


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


def check_reachable(scene: SceneInfo, out_crs_wkt: str) -> None:
    """Refuse, before any tile is read, a scene whose CRS cannot be transformed to the output's.

    The scene's four corners are transformed; a local (engineering) CRS or a
    datum without a path to the output's CRS fails here, not after inference.

    Raises:
        InvalidSceneError: naming the scene, its CRS, the output's CRS and ``--to-crs``.
    """
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    src, dst = CRS.from_wkt(scene.crs_wkt), CRS.from_wkt(out_crs_wkt)
    if src == dst:
        return
    cols = np.array([0, scene.width_px, scene.width_px, 0], dtype=np.float64)
    rows = np.array([0, 0, scene.height_px, scene.height_px], dtype=np.float64)
    xs, ys = scene.transform @ (cols, rows)
    try:
        tx, ty = Transformer.from_crs(src, dst, always_xy=True).transform(xs, ys, errcheck=True)
        ok = bool(np.isfinite(tx).all() and np.isfinite(ty).all())
    except ProjError:
        ok = False
    if not ok:
        raise InvalidSceneError(
            f"{scene.uri}: its CRS ({src.name}) cannot be transformed to the output's CRS ({dst.to_string()}); "
            "detect it into another --out, or choose a --to-crs every scene can reach for a new output"
        )


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


def encode_scene_detections(
    scene: SceneInfo,
    merged: MergedBoxes,
    *,
    class_names: tuple[str, ...],
    out_crs: CRS,
    model_id: str,
    run_id: str,
) -> bytes:
    """Georeference one scene's merged boxes and encode its GeoParquet file (bytes; nothing written).

    Args:
        scene: the scene's header.
        merged: its merged boxes, scene px.
        class_names: names indexed by label id.
        out_crs: the dataset's CRS.
        model_id: checkpoint id, written in each row.
        run_id: this run's id, written in each row.
    """
    cols = scene_columns(
        scene, merged, class_names=class_names, out_crs=out_crs, model_id=model_id, run_id=run_id
    )
    return encode_geoparquet(
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


def write_scene_file(
    out: str | Path | OutputStore,
    scene_uri: str,
    data: bytes,
    *,
    num_detections: int,
    model_id: str,
    run_id: str,
    replace: bool = True,
) -> Path | str:
    """Write one scene's encoded GeoParquet, atomically and once, and its manifest entry.

    Args:
        out: output folder, ``s3://bucket/prefix``, or an open store.
        scene_uri: the scene the file belongs to (names it: ``scene_output_name``).
        data: the file's bytes (``encode_scene_detections``).
        num_detections: its rows, for the manifest.
        model_id: checkpoint id, for the manifest.
        run_id: this run's id, for the manifest.
        replace: replace an existing output (``--overwrite``); when False an
            existing output is left as it is and ``OutputExistsError`` raised.

    Returns:
        The file written: a ``Path`` in a local folder (``scene_output_path``),
        else its ``s3://`` URI.

    Raises:
        OutputExistsError: ``replace`` is False and the scene's output exists.
        OutputError: the write failed (after retries for S3), naming the file or key.
    """
    store = out if isinstance(out, OutputStore) else open_store(out)
    name = scene_output_name(scene_uri)
    if not store.write_bytes_once(name, data, replace=replace):
        raise OutputExistsError(f"{store.uri(name)}: exists already (written by another run); left as it is")
    try:
        record(
            store,
            name,
            data,
            scene=scene_uri,
            run_id=run_id,
            model_id=model_id,
            num_detections=num_detections,
        )
    except OutputError as exc:  # the scene is written; the manifest shows it under files_without_entry
        warnings.warn(f"{store.uri(name)}: written, but its manifest entry was not: {exc}", stacklevel=2)
    return store.path(name) if isinstance(store, LocalStore) else store.uri(name)


def write_scene_detections(
    out: str | Path | OutputStore,
    scene: SceneInfo,
    merged: MergedBoxes,
    *,
    class_names: tuple[str, ...],
    out_crs: CRS,
    model_id: str,
    run_id: str,
    replace: bool = True,
) -> Path | str:
    """Georeference and write one scene's detections, atomically and once, and its manifest entry.

    ``encode_scene_detections`` then ``write_scene_file``: detect runs the first
    in a Ray task and the second on the driver, with the driver's credentials.

    Args:
        out: output folder, ``s3://bucket/prefix``, or an open store.
        scene: the scene's header.
        merged: its merged boxes, scene px.
        class_names: names indexed by label id.
        out_crs: the dataset's CRS.
        model_id: checkpoint id, written in each row.
        run_id: this run's id, written in each row.
        replace: see ``write_scene_file``.

    Returns:
        The file written (see ``write_scene_file``).

    Raises:
        OutputExistsError: ``replace`` is False and the scene's output exists.
        OutputError: the write failed (after retries for S3), naming the file or key.
    """
    data = encode_scene_detections(
        scene, merged, class_names=class_names, out_crs=out_crs, model_id=model_id, run_id=run_id
    )
    return write_scene_file(
        out, scene.uri, data, num_detections=len(merged), model_id=model_id, run_id=run_id, replace=replace
    )
