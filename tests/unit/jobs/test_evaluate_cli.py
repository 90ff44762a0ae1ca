import json

import numpy as np
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.reading import ReadConfig, open_scene
from retinanet.synth import CLASS_NAMES, SynthConfig, write_scenes

_register_optional()


def test_evaluate_scenes_against_ground_truth(tmp_path):
    truths = write_scenes(tmp_path / "gt", num_scenes=2, cfg=SynthConfig(size_px=256), seed=3)
    out = tmp_path / "det"
    expected_tp = 0
    for k, truth in enumerate(truths):
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
            out,
            scene,
            merged,
            class_names=CLASS_NAMES,
            out_crs=CRS.from_epsg(32633),
            model_id="m",
            run_id="r",
        )
    result = CliRunner().invoke(
        cli, ["evaluate", str(out), str(tmp_path / "gt" / "labels.parquet"), "--json"]
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    num_gt = sum(len(t.labels) for t in truths)
    assert m["num_scenes"] == 2 and m["overall"]["num_gt"] == num_gt
    assert m["overall"]["tp"] == expected_tp and m["overall"]["fp"] == 2 and m["overall"]["fn"] == 6
    assert m["overall"]["recall"] == expected_tp / num_gt
    assert m["overall"]["precision"] == expected_tp / (expected_tp + 2)
    assert 0.5 < m["overall"]["ap50"] < 1.0 and set(CLASS_NAMES) <= set(m)
    text = CliRunner().invoke(cli, ["evaluate", str(out), str(tmp_path / "gt" / "labels.parquet")])
    assert "overall" in text.output and "AP50" in text.output
