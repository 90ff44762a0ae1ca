"""Detections for ``aerialdet review``: read through ``pipeline.query``, given stable ids, put on the map.

``load_detections`` reads an output (all of it, or one viewport: the bbox
filter on the covering column that ``pipeline.query.Filters`` pushes down)
into a DataFrame with one row per detection: ``id``
(``review_store.detection_ids``), ``label``, ``score``, ``scene``,
``model``, the bounds in the dataset CRS (``xmin``..``ymax``) and in scene
pixels.  ``to_map`` reprojects bounds to EPSG:3857, the page's CRS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import CRS, Transformer

from pipeline.query import Filters, dataset_files, file_metadata, read_table
from pipeline.review_store import detection_ids

MAP_CRS = "EPSG:3857"
BOUNDS = ("xmin", "ymin", "xmax", "ymax")
PX = ("xmin_px", "ymin_px", "xmax_px", "ymax_px")


def load_detections(path: str | Path, f: Filters = Filters()) -> tuple[Any, CRS]:
    """The detections of an output matching ``f`` as a pandas DataFrame (see the module doc), and the CRS.

    Raises:
        QueryError: the output cannot be read, or a filter is malformed.
    """
    table, crs = read_table(path, f)
    bbox = table.column("bbox").combine_chunks()
    frame = table.select(["label", "score", "scene", "model", *PX]).to_pandas()
    for name in BOUNDS:
        frame[name] = bbox.field(name).to_numpy(zero_copy_only=False)
    frame["score"] = frame["score"].astype(np.float64)
    frame["id"] = detection_ids(
        frame["scene"].tolist(), frame[list(PX)].to_numpy(), frame["label"].tolist(), frame["model"].tolist()
    )
    return frame, crs


def class_names(path: str | Path) -> tuple[str, ...]:
    """The class names an output's files were made with (their ``aerialdet`` metadata), in id order."""
    names: list[str] = []
    for uri in dataset_files(path):
        meta = json.loads(file_metadata(uri).get(b"aerialdet", b"{}"))
        names += [str(n) for n in meta.get("class_names", []) if str(n) not in names]
    return tuple(names)


def to_map(bounds_crs: np.ndarray, crs: CRS) -> np.ndarray:
    """float64 ``[N, 4]`` bounds in ``crs`` -> their bounds in EPSG:3857 (corners reprojected).

    Example:
        >>> to_map(np.array([[0.0, 0.0, 1.0, 1.0]]), CRS.from_epsg(3857)).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """
    boxes = np.asarray(bounds_crs, np.float64).reshape(-1, 4)
    to = Transformer.from_crs(crs, CRS.from_user_input(MAP_CRS), always_xy=True)
    xs = boxes[:, [0, 2, 2, 0]]
    ys = boxes[:, [1, 1, 3, 3]]
    mx, my = to.transform(xs, ys)
    return np.stack([mx.min(1), my.min(1), mx.max(1), my.max(1)], axis=1)
