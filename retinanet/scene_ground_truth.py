"""Vector ground truth -> the scenes of a detections output -> ``ImageBoxes`` per scene.

``aerialdet evaluate`` scores whole scenes, so each ground-truth object needs
the key of its scene (``scene_key``: a local path resolved, a URL as given):

* ``keys_by_scene_column``: ground truth with a ``scene`` column, matched by
  the resolved path, else by file name (``matched_keys``);
* ``keys_by_location``: ground truth without one, matched by a spatial join
  (``geopandas.sjoin``, predicate ``within``) of each object's centroid with
  the footprint of every scene the detections name (``scene_footprints``).
  An object inside two footprints belongs to both; one inside none is counted
  as outside, not scored.

``image_boxes`` then gives one (ground truth, detections) ``ImageBoxes`` pair
per scene key, in CRS units (the bounds of each geometry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import geopandas as gpd

    from retinanet.evaluate import ImageBoxes

# where a scene's footprint came from (``scene_footprints``' ``source`` column)
FROM_METADATA, FROM_RASTER, FROM_DETECTIONS = "metadata", "raster", "detections"


def scene_key(uri: str) -> str:
    """The key a scene is matched by: a URL as given, a local path resolved.

    Example:
        >>> scene_key("s3://b/a.tif")
        's3://b/a.tif'
    """
    return uri if "://" in uri else str(Path(uri).resolve())


def matched_keys(uris: Iterable[str], known: Iterable[str]) -> list[str]:
    """Each URI's key among the ``known`` URIs' keys: its own when known, else that of a known file of its name.

    A URI matching neither keeps its own key (it then matches nothing); of
    known files sharing a name, the last one listed wins.

    Example:
        >>> matched_keys(["/elsewhere/a.tif", "s3://b/c.tif"], ["s3://x/a.tif"])
        ['s3://x/a.tif', 's3://b/c.tif']
    """
    known = list(known)
    known_keys = {scene_key(uri) for uri in known}
    by_name = {Path(uri).name: scene_key(uri) for uri in known}
    keys = []
    for uri in uris:
        key = scene_key(uri)
        keys.append(key if key in known_keys else by_name.get(Path(uri).name, key))
    return keys


def keys_by_scene_column(
    dt: gpd.GeoDataFrame, gt: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, Any]]:
    """Both frames with a ``key`` column, from their ``scene`` columns (resolved path, else file name)."""
    dt_keys = matched_keys(dt["scene"], gt["scene"])
    return dt.assign(key=dt_keys), gt.assign(key=[scene_key(s) for s in gt["scene"]]), {"matched_by": "scene"}


def detection_scenes(path: str, dt: gpd.GeoDataFrame) -> dict[str, dict[str, Any]]:
    """Every scene the detections at ``path`` name, with its file metadata (``{}`` when only in rows).

    A scene with no detection is named only in its file's metadata: it counts too.
    """
    from pipeline.geoparquet import read_aerialdet_metadata
    from pipeline.query import dataset_files

    scenes: dict[str, dict[str, Any]] = {str(s): {} for s in dt["scene"].unique()}
    for f in dataset_files(path):
        meta = read_aerialdet_metadata(f)
        if meta.get("scene"):
            scenes[str(meta["scene"])] = meta
    return scenes


def _footprint(uri: str, meta: dict[str, Any], dt: gpd.GeoDataFrame) -> tuple[Any, str | None]:
    """(polygon in the detections' CRS or None, where it came from or None)."""
    import shapely

    from pipeline.errors import PipelineError
    from pipeline.reading import read_footprint

    if meta.get("footprint"):
        return shapely.from_wkt(meta["footprint"]), FROM_METADATA
    try:
        return read_footprint(uri, dt.crs), FROM_RASTER
    except (PipelineError, OSError, ValueError):  # raster gone, unreadable, no CRS
        rows = dt[dt["scene"] == uri]
        if len(rows) == 0:
            return None, None
        return shapely.box(*rows.total_bounds), FROM_DETECTIONS


def scene_footprints(path: str, dt: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One row per scene the detections name: ``scene``, ``key``, ``source`` and its footprint.

    The footprint is, in order: the ``footprint`` the detections file
    records, the raster's header (when it can still be opened), else the
    extent of that scene's detections (smaller than the scene).  A scene
    with none of these has ``source`` None and no geometry.
    """
    import geopandas as gpd

    scenes = detection_scenes(path, dt)
    found = [_footprint(uri, meta, dt) for uri, meta in scenes.items()]
    return gpd.GeoDataFrame(
        {
            "scene": list(scenes),
            "key": [scene_key(uri) for uri in scenes],
            "source": [source for _, source in found],
        },
        geometry=[polygon for polygon, _ in found],
        crs=dt.crs,
    )


def keys_by_location(
    path: str, dt: gpd.GeoDataFrame, gt: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict[str, Any]]:
    """Give each ground-truth object the key of every scene whose footprint holds its centroid.

    Returns:
        The detections with a ``key`` column; the ground truth, one row per
        (object, scene) pair, scene by scene in ``scene_footprints`` order,
        with a ``key`` column; and the info ``evaluate`` reports
        (``matched_by``, ``footprints_from_detections``, ``no_footprint``,
        ``ground_truth_outside_scenes``).
    """
    import geopandas as gpd

    footprints = scene_footprints(path, dt)
    has_footprint = footprints["source"].notna()
    info: dict[str, Any] = {
        "matched_by": "location",
        "footprints_from_detections": footprints.loc[
            footprints["source"] == FROM_DETECTIONS, "scene"
        ].tolist(),
        "no_footprint": footprints.loc[~has_footprint, "scene"].tolist(),
    }
    scenes = footprints[has_footprint].reset_index(drop=True)
    centroids = gpd.GeoDataFrame(
        {"row": range(len(gt))}, geometry=gt.geometry.centroid.to_numpy(), crs=gt.crs
    )
    joined = gpd.sjoin(centroids, scenes[["key", "geometry"]], how="inner", predicate="within")
    joined = joined.sort_values(
        ["index_right", "row"], kind="stable"
    )  # scene by scene, objects in file order
    info["ground_truth_outside_scenes"] = int(len(gt) - joined["row"].nunique())
    dt = dt.assign(key=[scene_key(s) for s in dt["scene"]])
    return dt, gt.iloc[joined["row"].to_numpy()].assign(key=joined["key"].to_numpy()), info


def image_boxes(
    dt: gpd.GeoDataFrame, gt: gpd.GeoDataFrame, scenes: Sequence[str], class_names: Sequence[str]
) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """One (ground truth, detections) ``ImageBoxes`` pair per scene key: geometry bounds, label ids, scores."""
    import numpy as np

    from retinanet.evaluate import ImageBoxes

    ids = {name: i for i, name in enumerate(class_names)}

    def label_ids(frame: gpd.GeoDataFrame) -> np.ndarray:
        return np.array([ids[x] for x in frame["label"]], int)

    gts, dts = [], []
    for key in scenes:
        g, d = gt[gt["key"] == key], dt[dt["key"] == key]
        gts.append(ImageBoxes(g.geometry.bounds.to_numpy(), label_ids(g)))
        dts.append(ImageBoxes(d.geometry.bounds.to_numpy(), label_ids(d), d["score"].to_numpy()))
    return gts, dts
