"""Real inputs for the review tests: GeoTIFF scenes with painted objects and a detection output.

``make_review_case`` writes two 256 x 256 px scenes (1 m pixels, EPSG:32633,
side by side) with solid objects, and a detection output for them written by
the pipeline's own writer (``pipeline.output``), one box per object plus one
false box per scene, with scores spread around 0.5.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.merging import MergedBoxes
from pipeline.output import encode_scene_detections, write_scene_file
from pipeline.reading import ReadConfig, open_scene
from tests.conftest import write_scene

CLASSES = ("vehicle", "building")
# per scene: (x1, y1, x2, y2, band) painted objects; detections get these boxes
OBJECTS = (
    [(40, 40, 72, 72, 0), (150, 60, 190, 100, 1), (60, 170, 84, 194, 0)],
    [(30, 30, 70, 70, 1), (120, 120, 152, 152, 0)],
)
FALSE_BOX = (200, 200, 230, 230)  # a detection on empty ground in each scene
SCORES = ((0.9, 0.52, 0.3, 0.45), (0.8, 0.55, 0.62))  # per scene: objects..., then the false box


@dataclass(frozen=True)
class ReviewCase:
    scenes: tuple[str, ...]
    det: Path
    truth: list[tuple[str, tuple[float, float, float, float], str]]  # (scene, box px, label)


def make_review_case(
    root: Path,
    *,
    class_names: Sequence[str] = CLASSES,
    model_id: str = "weak-model",
    det_name: str = "det",
    first_only: bool = False,
) -> ReviewCase:
    """The scenes and a detection output ``root/det_name`` (``first_only``: one box a scene, at 0.9)."""
    scenes = []
    truth = []
    det = root / det_name
    for i, objects in enumerate(OBJECTS):
        transform = Affine(1.0, 0.0, 500000.0 + 256 * i, 0.0, -1.0, 4000256.0)
        path = write_scene(
            root / "scenes" / f"scene_{i}.tif", objects, width=256, height=256, transform=transform
        )
        info = open_scene(str(path), ReadConfig())
        boxes = [o[:4] for o in objects] + [FALSE_BOX]
        labels = [0 if o[4] == 0 else 1 for o in objects] + [0]
        scores = SCORES[i]
        if first_only:
            boxes, labels, scores = boxes[:1], labels[:1], (0.9,)
        merged = MergedBoxes(
            np.array(boxes, np.float64), np.array(scores, np.float32), np.array(labels, np.int64)
        )
        data = encode_scene_detections(
            info,
            merged,
            class_names=tuple(class_names),
            out_crs=CRS.from_epsg(32633),
            model_id=model_id,
            run_id="r1",
        )
        write_scene_file(det, info.uri, data, num_detections=len(boxes), model_id=model_id, run_id="r1")
        scenes.append(info.uri)
        truth += [(info.uri, tuple(map(float, o[:4])), class_names[0 if o[4] == 0 else 1]) for o in objects]
    return ReviewCase(tuple(scenes), det, truth)


def open_case_session(
    case: ReviewCase, labels: Path, thresholds: dict[str, float] | None = None, other: Path | None = None
):
    from jobs.review_session import open_session

    return open_session(
        str(case.det),
        case.scenes,
        labels,
        thresholds=thresholds if thresholds is not None else {"vehicle": 0.5, "building": 0.5},
        class_names=CLASSES,
        reviewer="tester",
        read_config=ReadConfig(),
        other=None if other is None else str(other),
    )


@contextmanager
def serving(session):
    """The review server on a free 127.0.0.1 port, in a thread; yields its URL (with the token)."""
    from jobs.review import vendor_dir
    from jobs.review_server import make_server

    server, url = make_server(session, vendor_dir())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
