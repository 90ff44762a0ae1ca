"""Ground truth as GeoParquet, in the detections' schema (score null).

``SceneTruth`` is the ground truth of one scene in scene pixels;
``write_ground_truth`` georeferences it and writes the GeoParquet that
``evaluate`` and ``train`` read (``retinanet.synth`` writes its scenes' truth
through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.geoparquet import DetectionColumns, build_table, crs_label, write_geoparquet
from pipeline.georef import boxes_to_geometry


@dataclass(frozen=True)
class SceneTruth:
    """Ground truth of one scene.

    Attributes:
        path: the GeoTIFF.
        transform: its affine transform.
        boxes_xyxy_px: float64 ``[N, 4]`` scene px.
        labels: int64 ``[N]`` class ids.
    """

    path: Path
    transform: Affine
    boxes_xyxy_px: np.ndarray
    labels: np.ndarray


def write_ground_truth(
    path: str | Path, truths: Sequence[SceneTruth], crs: CRS, class_names: tuple[str, ...]
) -> Path:
    """Write scene-pixel ground truth boxes as GeoParquet in ``crs``.

    Args:
        path: output ``.parquet``.
        truths: per scene, its path, transform, pixel boxes and labels.
        crs: the scenes' CRS.
        class_names: names of the label ids.
    """
    import pyarrow as pa

    tables = []
    for truth in truths:
        polygons, bounds = boxes_to_geometry(truth.boxes_xyxy_px, truth.transform, crs, crs)
        tables.append(
            build_table(
                DetectionColumns(
                    polygons=polygons,
                    bounds_crs=bounds,
                    scores=None,
                    label_ids=truth.labels,
                    class_names=class_names,
                    scene=str(Path(truth.path).resolve()),
                    boxes_xyxy_px=np.asarray(truth.boxes_xyxy_px),
                    model=None,
                    run_id=None,
                    scene_crs=crs_label(crs),
                )
            )
        )
    return write_geoparquet(path, pa.concat_tables(tables), crs)
