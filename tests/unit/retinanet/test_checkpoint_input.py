"""Issue 24: a checkpoint records the pixel kind it was trained on, and detect checks scenes against it.

Before, ``meta.json`` said nothing of the training images' dtype, so detect
ran a uint8 model on uint16, float, 1-bit or paletted scenes without a word.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.detect import _build_job, _model_input, detect_command
from jobs.train import train_command, train_options
from pipeline.types import PixelRange
from retinanet.checkpoint import CheckpointError, save_dir
from retinanet.checkpoint_input import UINT8, input_meta, model_input, training_input
from retinanet.config import Backbone, BandConfig, ModelConfig
from retinanet.model import build_model
from retinanet.predictor import CheckpointLoader
from retinanet.train_plan import plan_training
from retinanet.train_sink import RunDirectory
from tests.conftest import write_scene, write_voc

CFG = ModelConfig(class_names=("Tree",), backbone=Backbone.RESNET18, tile_size_px=64)


def test_training_records_the_dtype_and_range_of_its_images(tmp_path):
    for name in ("a", "b"):
        write_scene(
            tmp_path / f"{name}.tif", [(4, 4, 20, 20, 0)], width=96, height=96, dtype="uint16", fill=900
        )
        write_voc(tmp_path / f"{name}.xml", f"{name}.tif", [[4, 4, 20, 20]])
    argv = [str(tmp_path / "a.xml"), "--val", str(tmp_path / "b.xml"), "--out", str(tmp_path / "run")]
    opts = train_options(train_command.make_context("train", [*argv, "--tile-size-px", "64"]).params)
    spec = plan_training(opts).spec
    assert spec.input_kind == {"input": {"dtype": "uint16", "range": [0.0, 65535.0]}}
    assert RunDirectory(spec).run_meta["input"] == {"dtype": "uint16", "range": [0.0, 65535.0]}


def test_float_training_images_record_their_band_statistics_range():
    bands = BandConfig(bands=(1, 2), mean=(0.2, 0.3), std=(0.05, 0.1))
    kind = training_input([PixelRange("float32", None, None)], bands)  # mean -+ 3 std over the bands
    assert kind is not None and kind.dtype == "float32"
    assert (kind.min_value, kind.max_value) == pytest.approx((0.0, 0.6))
    assert training_input([PixelRange("uint8", 0, 255), PixelRange("uint16", 0, 65535)], bands) is None


def test_detect_reads_the_recorded_kind_and_refuses_a_broken_one(tmp_path):
    ck = save_dir(
        tmp_path / "ck", build_model(CFG), CFG, extra_meta=input_meta(PixelRange("uint16", 0, 4095))
    )
    assert _model_input(CheckpointLoader.open(ck)) == PixelRange("uint16", 0.0, 4095.0)
    meta = {"input": {"dtype": "uint8", "range": [255, 0]}}
    with pytest.raises(CheckpointError, match="input.range must be two finite numbers LOW < HIGH"):
        model_input(meta, CFG, "ck")
    with pytest.raises(CheckpointError, match="input must be"):
        model_input({"input": {"dtype": "complex_int16", "range": [0, 1]}}, CFG, "ck")


def test_an_older_checkpoint_is_assumed_uint8_only_when_its_band_stats_say_so(capsys):
    kind, note = model_input({}, CFG, "old")  # the default statistics: 127.5 +- 64
    assert kind == UINT8 and "assumed" in note
    reflectance = CFG.replace(band_config=BandConfig(mean=(0.1, 0.1, 0.1), std=(0.05, 0.05, 0.05)))
    kind, note = model_input({}, reflectance, "old")
    assert kind is None and note.startswith("warning: old: records no input dtype") and "not checked" in note


def test_rescale_option_and_the_model_kind_reach_the_reader(tmp_path):
    ck = save_dir(tmp_path / "ck", build_model(CFG), CFG, extra_meta=input_meta(UINT8))
    scene = write_scene(tmp_path / "s.tif", [])
    argv = [str(scene), "--model", str(ck), "--out", str(tmp_path / "out"), "--rescale", "percentile"]
    params = detect_command.make_context("detect", list(argv)).params  # click consumes the list it parses
    job = _build_job(str(scene), str(tmp_path / "out"), CheckpointLoader.open(Path(ck)), params)
    assert job.read.model_input == UINT8 and job.read.rescale == "percentile"
    default = detect_command.make_context("detect", argv[:-2]).params
    assert (
        _build_job(str(scene), str(tmp_path / "o2"), CheckpointLoader.open(ck), default).read.rescale
        == "refuse"
    )
