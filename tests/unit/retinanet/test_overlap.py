"""The overlap a checkpoint recommends: recorded by train, read by the loader, warned about by detect."""

import json

import numpy as np
import pytest

from jobs.detect import overlap_warning
from jobs.train import largest_object_px
from retinanet.checkpoint import load_dir
from retinanet.config import ModelConfig
from retinanet.errors import CheckpointError
from retinanet.label_formats import LabeledImage
from retinanet.model import build_model
from retinanet.predictor import CheckpointLoader
from retinanet.ray_train import write_epoch


def _config():
    return ModelConfig(class_names=("Tree",), backbone="resnet18", tile_size_px=128)


def _image(boxes):
    return LabeledImage(
        "a.png", None, np.asarray(boxes, np.float32).reshape(-1, 4), np.zeros(len(boxes), np.int64), "a"
    )


def test_largest_object_is_the_longest_side_of_any_box():
    images = [_image([[0, 0, 10, 40], [5, 5, 25, 15]]), _image([]), _image([[100, 100, 172.4, 130]])]
    assert largest_object_px(images) == pytest.approx(72.4)
    assert largest_object_px([_image([])]) is None


def test_checkpoints_record_it_and_the_loader_rounds_it_up(tmp_path):
    config = _config()
    metrics = {"epoch": 0, "loss": 1.0, "val_ap50": 0.5, "val_map": 0.2, "val_num_gt": 3}
    run_meta = {"largest_object_px": 172.4}
    write_epoch(
        tmp_path / "run", build_model(config), config, metrics, {"best_ap50": -1.0}, tmp_path / "t", run_meta
    )
    for part in ("best", "last"):
        assert load_dir(tmp_path / "run" / part).meta["largest_object_px"] == 172.4
    assert CheckpointLoader.open(tmp_path / "run").info.min_overlap_px == 173


def test_a_bad_recorded_value_is_a_checkpoint_error(tmp_path):
    config = _config()
    metrics = {"epoch": 0, "loss": 1.0, "val_ap50": 0.5, "val_map": 0.2, "val_num_gt": 3}
    write_epoch(tmp_path / "run", build_model(config), config, metrics, {"best_ap50": -1.0}, tmp_path / "t")
    assert CheckpointLoader.open(tmp_path / "run").info.min_overlap_px is None  # older checkpoints: unknown
    meta_file = tmp_path / "run" / "best" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "largest_object_px": "big"}))
    with pytest.raises(CheckpointError, match="largest_object_px must be a positive number"):
        CheckpointLoader.open(tmp_path / "run" / "best")


def test_detect_warns_below_the_recommended_overlap():
    message = overlap_warning(173, 128)
    assert "--overlap-px 128" in message and "173 px" in message and "--overlap-px 173 or more" in message
    assert overlap_warning(173, 173) is None and overlap_warning(None, 0) is None
