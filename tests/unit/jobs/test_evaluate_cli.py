import json
import re

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.georef import boxes_to_geometry
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.reading import ReadConfig, open_scene
from retinanet.synth import CLASS_NAMES, SynthConfig, write_scenes
from tests.conftest import write_voc

_register_optional()
UTM33 = CRS.from_epsg(32633)


def _detect_by_hand(tmp_path, num_scenes=2):
    """Synthetic scenes + detections: 3 objects missed and one top-scoring FP per scene.

    Returns:
        (truths, detections folder, expected TP at IoU 0.5 and score 0.5).
    """
    truths = write_scenes(tmp_path / "gt", num_scenes=num_scenes, cfg=SynthConfig(size_px=256), seed=3)
    out = tmp_path / "det"
    expected_tp = 0
    for truth in truths:
        scene = open_scene(str(truth.path), ReadConfig())
        boxes, labels = truth.boxes_xyxy_px.copy(), truth.labels.copy()
        keep = np.ones(len(boxes), bool)
        keep[:3] = False  # miss three objects per scene
        boxes[3] += [0.5, 0.5, 0.5, 0.5]  # a slightly shifted box still matches at IoU 0.5
        fp = np.array([[1.0, 1.0, 3.0, 3.0]])  # one false positive per scene, top score
        expected_tp += int(keep.sum())
        merged = MergedBoxes(
            np.concatenate([boxes[keep], fp]),
            np.concatenate([np.full(keep.sum(), 0.8, np.float32), [0.99]]).astype(np.float32),
            np.concatenate([labels[keep], [0]]),
        )
        write_scene_detections(
            out, scene, merged, class_names=CLASS_NAMES, out_crs=UTM33, model_id="m", run_id="r"
        )
    return truths, out, expected_tp


def _plain_ground_truth(truths, path, crs="EPSG:4326", extra=()):
    """What a GIS user holds: `label` and `geometry` only, no `scene`, in another CRS."""
    polygons = np.concatenate(
        [boxes_to_geometry(t.boxes_xyxy_px, t.transform, UTM33, UTM33)[0] for t in truths]
    )
    labels = [CLASS_NAMES[k] for t in truths for k in t.labels]
    gdf = gpd.GeoDataFrame(
        {"label": labels + [e[0] for e in extra]}, geometry=list(polygons) + [e[1] for e in extra], crs=UTM33
    )
    if str(path).endswith(".parquet"):
        gdf.to_crs(crs).to_parquet(path)  # geopandas' own GeoParquet writer
    else:
        gdf.to_crs(crs).to_file(path)  # GeoPackage through pyogrio
    return path


def _evaluate(*args):
    result = CliRunner().invoke(cli, ["evaluate", *map(str, args)])
    return result, (json.loads(result.stdout) if result.exit_code == 0 and "--json" in args else None)


def test_evaluate_scenes_against_ground_truth(tmp_path):
    truths, out, expected_tp = _detect_by_hand(tmp_path)
    result, m = _evaluate(out, tmp_path / "gt" / "labels.parquet", "--json")
    assert result.exit_code == 0, result.output
    num_gt = sum(len(t.labels) for t in truths)
    assert m["num_scenes"] == 2 and m["overall"]["num_gt"] == num_gt and m["matched_by"] == "scene"
    assert m["overall"]["tp"] == expected_tp and m["overall"]["fp"] == 2 and m["overall"]["fn"] == 6
    assert m["overall"]["recall"] == expected_tp / num_gt
    assert m["overall"]["precision"] == expected_tp / (expected_tp + 2)
    assert 0.5 < m["overall"]["ap50"] < 1.0 and set(CLASS_NAMES) <= set(m)
    text = CliRunner().invoke(cli, ["evaluate", str(out), str(tmp_path / "gt" / "labels.parquet")])
    assert "overall" in text.output and "AP50" in text.output


def test_plain_geoparquet_in_another_crs_is_matched_by_location(tmp_path):
    truths, out, expected_tp = _detect_by_hand(tmp_path)
    outside = ("tree", gpd.GeoSeries.from_xy([0.0], [0.0]).buffer(5).iloc[0])  # far from both scenes
    gt = _plain_ground_truth(truths, tmp_path / "trees.parquet", extra=[outside])
    assert set(gpd.read_parquet(gt).columns) == {"label", "geometry"}
    result, m = _evaluate(out, gt, "--json")
    assert result.exit_code == 0, result.output
    assert m["matched_by"] == "location" and m["num_scenes"] == 2
    assert m["ground_truth_outside_scenes"] == 1 and "outside every scene" in result.stderr
    assert m["footprints_from_detections"] == [] and m["no_footprint"] == []
    assert m["overall"]["num_gt"] == sum(len(t.labels) for t in truths)
    assert (m["overall"]["tp"], m["overall"]["fp"], m["overall"]["fn"]) == (expected_tp, 2, 6)


def test_score_alias_sets_the_operating_point(tmp_path):
    truths, out, _ = _detect_by_hand(tmp_path, num_scenes=1)
    gt = _plain_ground_truth(truths, tmp_path / "trees.parquet")
    _, m = _evaluate(out, gt, "--json", "--score", "0.9")  # the 0.8 true positives drop out
    assert m["score_threshold"] == 0.9 and (m["overall"]["tp"], m["overall"]["fp"]) == (0, 1)


def test_geopackage_ground_truth_and_scene_without_detections(tmp_path):
    truths, out, expected_tp = _detect_by_hand(tmp_path)
    # a third scene with no detection at all: its objects are misses, not "outside every scene"
    extra = write_scenes(tmp_path / "more", num_scenes=3, cfg=SynthConfig(size_px=256), seed=3)[2]
    empty = MergedBoxes(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    scene = open_scene(str(extra.path), ReadConfig())
    write_scene_detections(
        out, scene, empty, class_names=CLASS_NAMES, out_crs=UTM33, model_id="m", run_id="r"
    )
    gt = _plain_ground_truth([*truths, extra], tmp_path / "trees.gpkg", crs="EPSG:3857")
    result, m = _evaluate(out, gt, "--json")
    assert result.exit_code == 0, result.output
    assert m["num_scenes"] == 3 and m["ground_truth_outside_scenes"] == 0
    assert m["overall"]["tp"] == expected_tp and m["overall"]["fn"] == 6 + len(extra.labels)


def _drop_recorded_footprints(out):
    import json

    import pyarrow.parquet as pq

    for path in out.glob("*.parquet"):
        table = pq.read_table(path)
        meta = dict(table.schema.metadata)
        extra = json.loads(meta[b"aerialdet"])
        assert extra.pop("footprint")  # detect records it now
        meta[b"aerialdet"] = json.dumps(extra).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)


def test_unreadable_raster_falls_back_to_the_detections_extent(tmp_path):
    truths, out, expected_tp = _detect_by_hand(tmp_path, num_scenes=1)
    gt = _plain_ground_truth(truths, tmp_path / "trees.parquet")
    _drop_recorded_footprints(out)  # files written before detect recorded footprints
    truths[0].path.unlink()  # the raster is gone: its footprint is the extent of its detections
    result, m = _evaluate(out, gt, "--json")
    assert result.exit_code == 0, result.output
    assert m["footprints_from_detections"] == [str(truths[0].path)]
    assert "recall is an upper bound" in result.stderr
    assert m["overall"]["tp"] == expected_tp  # every detected object still matches
    assert m["overall"]["num_gt"] + m["ground_truth_outside_scenes"] == len(truths[0].labels)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text("not a parquet file"), "cannot read ground truth"),
        (
            lambda p: gpd.GeoDataFrame(
                {"name": ["a"]}, geometry=gpd.points_from_xy([0], [0]), crs=UTM33
            ).to_parquet(p),
            "no 'label' column",
        ),
        (
            lambda p: gpd.GeoDataFrame(
                {"label": ["a"]}, geometry=gpd.points_from_xy([0], [0]), crs=UTM33
            ).to_parquet(p),
            "must be polygons.*1 Point",
        ),
        (lambda p: None, "no such file or directory"),
    ],
    ids=["corrupt", "no-label", "points", "missing"],
)
def test_bad_ground_truth_is_one_line_exit_2(tmp_path, write, message):
    _, out, _ = _detect_by_hand(tmp_path, num_scenes=1)
    bad = tmp_path / "bad.parquet"
    write(bad)
    result, _ = _evaluate(out, bad)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert "bad.parquet" in result.stderr and re.search(message, result.stderr)


@pytest.mark.parametrize(("flag", "value"), [("--score", "nan"), ("--iou", "0"), ("--iou", "inf")])
def test_bad_thresholds_are_usage_errors(tmp_path, flag, value):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), str(tmp_path), flag, value])
    assert result.exit_code == 2 and flag in result.output and "Traceback" not in result.output


def test_footprint_recorded_in_the_detections_file_needs_no_raster(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.geoparquet import read_aerialdet_metadata, write_geoparquet
    from pipeline.georef import scene_footprint

    truths, out, expected_tp = _detect_by_hand(tmp_path, num_scenes=1)
    gt = _plain_ground_truth(truths, tmp_path / "trees.parquet")
    (det_file,) = out.glob("*.parquet")
    scene = open_scene(str(truths[0].path), ReadConfig())
    footprint = scene_footprint(scene.width_px, scene.height_px, scene.transform, UTM33, UTM33)
    meta = read_aerialdet_metadata(det_file) | {"footprint": footprint.wkt}
    write_geoparquet(det_file, pq.read_table(det_file), UTM33, extra_metadata=meta)
    truths[0].path.unlink()
    result, m = _evaluate(out, gt, "--json")
    assert result.exit_code == 0, result.output
    assert m["footprints_from_detections"] == [] and m["ground_truth_outside_scenes"] == 0
    assert (m["overall"]["tp"], m["overall"]["fn"]) == (expected_tp, 3)


def _chip_detections(tmp_path):
    """Two chips labelled in pixels (VOC), and detections of them with pixel boxes.

    The chips are GeoTIFFs with a nominal geotransform (detect refuses scenes without one);
    the VOC files know only their pixels.  Chip a: trees at (10, 10, 30, 30), (50, 50, 70, 70);
    detected at score 0.9 and 0.3, plus a false positive (80, 5, 90, 15) at 0.6.  Chip b: one
    tree (5, 40, 25, 60), missed.
    """
    import rasterio
    from rasterio.transform import from_origin

    truth = {"a": [(10, 10, 30, 30), (50, 50, 70, 70)], "b": [(5, 40, 25, 60)]}
    profile = {"driver": "GTiff", "width": 96, "height": 96, "count": 3, "dtype": "uint8", "crs": UTM33}
    for i, (name, boxes) in enumerate(truth.items()):
        transform = from_origin(500000 + 1000 * i, 5000000, 0.1, 0.1)
        with rasterio.open(tmp_path / f"{name}.tif", "w", transform=transform, **profile) as dst:
            dst.write(np.full((3, 96, 96), 90, np.uint8))
        write_voc(tmp_path / f"{name}.xml", f"{name}.tif", boxes)
    out = tmp_path / "det"
    scene = open_scene(str(tmp_path / "a.tif"), ReadConfig())
    merged = MergedBoxes(
        np.array([[10, 10, 30, 30], [51, 51, 71, 71], [80, 5, 90, 15]], float),
        np.array([0.9, 0.3, 0.6], np.float32),
        np.array([0, 0, 0]),
    )
    write_scene_detections(out, scene, merged, class_names=("Tree",), out_crs=UTM33, model_id="m", run_id="r")
    return out


def test_pixel_ground_truth_compared_in_scene_pixels(tmp_path):
    out = _chip_detections(tmp_path)
    gt = tmp_path / "voc"
    gt.mkdir()
    for name in ("a", "b"):  # a folder of VOC files, images beside them
        (gt / f"{name}.xml").write_text((tmp_path / f"{name}.xml").read_text())
        (gt / f"{name}.tif").write_bytes((tmp_path / f"{name}.tif").read_bytes())
    result, data = _evaluate(out, gt, "--json", "--score", "0.5")
    assert result.exit_code == 0, result.output
    tree = data["Tree"]  # at 0.5: TP (10, 10, 30, 30), FP (80, 5, ...); 2 of 3 trees missed
    assert (tree["num_gt"], tree["tp"], tree["fp"], tree["fn"]) == (3, 1, 1, 2)
    assert data["num_scenes"] == 2 and data["matched_by"] == "image"
    _, low = _evaluate(out, gt, "--json", "--score", "0.2")
    assert (low["Tree"]["tp"], low["Tree"]["fp"]) == (2, 1)


def test_calibrated_thresholds_from_the_model_and_a_pr_curve(tmp_path):
    from retinanet import ModelConfig, build_model
    from retinanet.checkpoint import save_dir

    out = _chip_detections(tmp_path)
    config = ModelConfig(backbone="resnet18", class_names=("Tree",))
    save_dir(tmp_path / "ckpt", build_model(config), config, extra_meta={"score_thresholds": {"Tree": 0.25}})
    result, data = _evaluate(
        out, tmp_path / "a.xml", "--json", "--model", tmp_path / "ckpt", "--pr-curve", tmp_path / "pr.png"
    )
    assert result.exit_code == 0, result.output
    assert data["score_threshold"] == {"Tree": 0.25} and data["Tree"]["tp"] == 2  # the 0.3 detection counts
    assert (tmp_path / "pr.png").stat().st_size > 5000
    _, given = _evaluate(out, tmp_path / "a.xml", "--json", "--model", tmp_path / "ckpt", "--score", "0.5")
    assert given["score_threshold"] == 0.5 and given["Tree"]["tp"] == 1  # --score wins over the model's
    save_dir(tmp_path / "plain", build_model(config), config)
    refused, _ = _evaluate(out, tmp_path / "a.xml", "--model", tmp_path / "plain")
    assert (
        refused.exit_code == 2 and "score_thresholds" in refused.output and "Traceback" not in refused.output
    )


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.xml", "<annotation><filename>a.png", "not valid XML"),
        ("bad.json", "[1, 2]", "expected a COCO object"),
        ("bad.csv", "a,b\n1,2\n", "missing CSV columns"),
    ],
)
def test_bad_pixel_ground_truth_is_one_line(tmp_path, name, text, message):
    out = _chip_detections(tmp_path)
    (tmp_path / name).write_text(text)
    result, _ = _evaluate(out, tmp_path / name)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
