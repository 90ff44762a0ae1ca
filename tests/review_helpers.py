"""Real inputs for the review tests: GeoTIFF scenes with painted objects and a detection output.

``make_review_case`` writes two 256 x 256 px scenes (1 m pixels, EPSG:32633,
side by side) with solid objects, and a detection output for them written by
the pipeline's own writer (``pipeline.output``), one box per object plus one
false box per scene, with scores spread around 0.5.

A reviewer who knows the ground truth (``decide``, ``reviewer_edits``,
``draw_missed``, ``review``): the loop test (tests/integration/test_review_loop.py) and the
measured loop (bench/review_loop.py) both post their edits through these.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
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
def serving(session, *, pages: bool = True):
    """The review server on a free 127.0.0.1 port, in a thread; yields its URL (with the token).

    ``pages=False``: the API alone (no OpenLayers needed: the page's files are not served).
    """
    from jobs.review import vendor_dir
    from jobs.review_server import make_server

    server, url = make_server(session, vendor_dir() if pages else Path("/nonexistent"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- a reviewer who knows the ground truth (the loop test and bench/review_loop.py) ----------------------


def truth_boxes(labels: Path) -> list[tuple[str, np.ndarray, str]]:
    """(scene URI, CRS box, label) of each ground-truth object of a labels GeoParquet (``aerialdet synth``'s)."""
    import geopandas as gpd

    gdf = gpd.read_parquet(labels)
    root = labels.parent
    return [
        (str((root / s).resolve() if not Path(s).is_absolute() else Path(s)), np.array(g.bounds), str(lab))
        for s, g, lab in zip(gdf["scene"], gdf.geometry, gdf["label"])
    ]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decide(det: dict, truth: list, to_map) -> dict:
    """The edit a reviewer who knows the ground truth makes for one detection.

    Accept (a box of the same class at IoU >= 0.5), relabel (another class at
    IoU >= 0.5), move (IoU >= 0.1: to the ground-truth box, in map
    coordinates), reject (no object there).
    """
    box = np.array([det["xmin"], det["ymin"], det["xmax"], det["ymax"]])
    best, best_iou = None, 0.0
    for scene, gt_box, label in truth:
        if scene == det["scene"]:
            iou = box_iou(box, gt_box)
            if iou > best_iou:
                best, best_iou = (gt_box, label), iou
    if best is None or best_iou < 0.1:
        return {"op": "reject", "id": det["id"]}
    if best_iou < 0.5:
        return {"op": "move", "id": det["id"], "bbox": list(to_map.transform_bounds(*best[0]))}
    if best[1] != det["label"]:
        return {"op": "relabel", "id": det["id"], "label": best[1]}
    return {"op": "accept", "id": det["id"]}


def post_edit(url: str, edit: dict) -> dict:
    """POST one edit to the review server's ``api/edit``; its JSON answer."""
    req = urllib.request.Request(
        url + "api/edit", data=json.dumps(edit).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as response:
        return json.load(response)


def reviewer_edits(url: str, session, truth: list, order: str, n: int, seed: int = 0) -> list[dict]:
    """Up to ``n`` edits POSTed in ``order`` (``queue``: ``GET api/queue``; ``random``); the edits sent."""
    from pyproj import Transformer

    to_map = Transformer.from_crs(session.crs, "EPSG:3857", always_xy=True)
    by_id = {d["id"]: d for d in session.detections.to_dict("records")}
    shuffled = list(by_id)
    random.Random(seed).shuffle(shuffled)
    sent: list[dict] = []
    for k in range(n):
        if order == "queue":
            with urllib.request.urlopen(url + "api/queue?limit=1", timeout=60) as response:
                items = json.load(response)["items"]
            if not items:
                break
            det_id = items[0]["id"]
        else:
            if k >= len(shuffled):
                break
            det_id = shuffled[k]
        edit = decide(by_id[det_id], truth, to_map)
        post_edit(url, edit)
        sent.append(edit)
    return sent


def draw_missed(url: str, session, truth: list, limit: int) -> list[dict]:
    """POST a ``draw`` for up to ``limit`` ground-truth objects of the session's scenes that no label covers.

    Covered: a label of the same scene at IoU >= 0.5 (what the reviewer sees
    on the page; the edits still go through the API).  Returns the edits sent.
    """
    from pyproj import Transformer

    to_map = Transformer.from_crs(session.crs, "EPSG:3857", always_xy=True)
    with session.lock:
        labeled = [(r.scene, np.array(r.bounds_crs)) for r in session.state.rows.values()]
    sent: list[dict] = []
    for scene, box, label in truth:
        if len(sent) >= limit:
            break
        if scene in session.scenes and not any(s == scene and box_iou(b, box) >= 0.5 for s, b in labeled):
            edit = {"op": "draw", "label": label, "bbox": list(to_map.transform_bounds(*box))}
            post_edit(url, edit)
            sent.append(edit)
    return sent


def review(
    det: Path,
    scenes: Path | Sequence[str],
    truth_file: Path,
    labels: Path,
    model: Path,
    order: str,
    n: int,
    seed: int,
    reviewer: str | None = None,
) -> dict:
    """N edits through the HTTP API of a review server over ``det``; the counts of each kind of edit.

    ``scenes``: a folder of scenes, or the scene URIs to review.
    """
    from jobs.review import _thresholds
    from jobs.review_session import open_session
    from pipeline.sources import list_scenes

    thresholds, names = _thresholds(str(model), {})
    named = tuple(sorted(list_scenes(str(scenes)).scenes)) if isinstance(scenes, Path) else tuple(scenes)
    session = open_session(
        str(det),
        named,
        labels,
        thresholds=thresholds,
        class_names=names,
        reviewer=reviewer or f"bench-{order}",
        read_config=ReadConfig(),
    )
    with serving(session, pages=False) as url:
        sent = reviewer_edits(url, session, truth_boxes(truth_file), order, n, seed)
    counts: dict[str, int] = {}
    for edit in sent:
        counts[edit["op"]] = counts.get(edit["op"], 0) + 1
    return counts
