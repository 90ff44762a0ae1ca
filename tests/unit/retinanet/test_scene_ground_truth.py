"""``retinanet.scene_ground_truth``: ground truth -> the scenes of a detections output."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS

from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.query import read_detections
from pipeline.reading import ReadConfig, open_scene
from retinanet.scene_ground_truth import (
    image_boxes,
    keys_by_location,
    keys_by_scene_column,
    matched_keys,
    scene_key,
)
from tests.conftest import write_scene

UTM33 = CRS.from_epsg(32633)
# scene a: x 500000..500640; scene b, 320 m east: x 500320..500960; both y 3999360..4000000
ORIGINS = {"a.tif": 500000.0, "b.tif": 500320.0}


def _detections(tmp_path):
    out = tmp_path / "det"
    for name, x0 in ORIGINS.items():
        path = write_scene(tmp_path / name, [], transform=Affine(10.0, 0.0, x0, 0.0, -10.0, 4000000.0))
        scene = open_scene(str(path), ReadConfig())
        merged = MergedBoxes(
            np.array([[1.0, 1.0, 5.0, 5.0]], np.float32), np.array([0.9], np.float32), np.array([0])
        )
        write_scene_detections(
            out, scene, merged, class_names=("car",), out_crs=UTM33, model_id="m", run_id="r"
        )
    return str(out), read_detections(str(out))


def _box_at(x_center: float) -> shapely.Polygon:
    return shapely.box(x_center - 20, 3999900, x_center + 20, 3999940)


def test_objects_join_every_scene_whose_footprint_holds_their_centroid(tmp_path):
    path, dt = _detections(tmp_path)
    gt = gpd.GeoDataFrame(
        {"label": ["car"] * 5, "name": ["a only", "both", "b only", "outside", "on a's west edge"]},
        geometry=[_box_at(500030), _box_at(500420), _box_at(500800), _box_at(501500), _box_at(500000)],
        crs=UTM33,
    )
    dt, joined, info = keys_by_location(path, dt, gt)
    key_a, key_b = scene_key(str(tmp_path / "a.tif")), scene_key(str(tmp_path / "b.tif"))
    assert list(zip(joined["name"], joined["key"], strict=True)) == [
        ("a only", key_a),
        ("both", key_a),
        ("both", key_b),
        ("b only", key_b),
    ]
    # a centroid on a footprint's edge is not inside it (as shapely.contains_xy had it)
    assert info["ground_truth_outside_scenes"] == 2
    assert info["matched_by"] == "location" and info["footprints_from_detections"] == []
    assert sorted(dt["key"]) == [key_a, key_b]
    gts, dts = image_boxes(dt, joined, [key_a, key_b], ["car"])
    assert [len(g.boxes_xyxy) for g in gts] == [2, 2] and [len(d.boxes_xyxy) for d in dts] == [1, 1]
    np.testing.assert_array_equal(
        gts[1].boxes_xyxy, [[500400, 3999900, 500440, 3999940], [500780, 3999900, 500820, 3999940]]
    )


def test_scene_column_matches_by_path_then_file_name(tmp_path):
    dt = gpd.GeoDataFrame({"scene": ["/data/x/a.tif", "s3://b/c.tif"]}, geometry=[None, None])
    gt = gpd.GeoDataFrame({"scene": ["s3://bucket/a.tif", "s3://b/c.tif"]}, geometry=[None, None])
    dt, gt, info = keys_by_scene_column(dt, gt)
    assert list(dt["key"]) == ["s3://bucket/a.tif", "s3://b/c.tif"]
    assert list(gt["key"]) == ["s3://bucket/a.tif", "s3://b/c.tif"] and info == {"matched_by": "scene"}


def test_matched_keys_keep_their_own_key_when_nothing_matches(tmp_path):
    local = tmp_path / "a.tif"
    assert matched_keys([str(local), "s3://b/z.tif"], ["s3://x/a.tif"]) == ["s3://x/a.tif", "s3://b/z.tif"]
    assert matched_keys(["s3://b/z.tif"], []) == ["s3://b/z.tif"]
    assert scene_key("rel.tif") == str((tmp_path.cwd() / "rel.tif").resolve())
