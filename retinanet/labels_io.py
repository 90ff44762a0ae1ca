"""Ground truth as GeoParquet, in the detections' schema (score null)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pyproj import CRS

from pipeline.geoparquet import DetectionColumns, build_table, crs_label, write_geoparquet
from pipeline.georef import boxes_to_geometry

if TYPE_CHECKING:
    from retinanet.synth import SceneTruth


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
        polygons, bounds = boxes_to_geometry(truth.boxes_xyxy_px, tuple(truth.transform)[:6], crs, crs)  # type: ignore[arg-type]
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
