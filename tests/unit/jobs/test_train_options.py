"""train's command line -> TrainOptions -> retinanet.train_plan's TrainConfig and model config (no Ray)."""

from jobs.train import train_command, train_options
from retinanet.train_plan import train_config


def _config(tmp_path, *args):
    labels = tmp_path / "a.xml"
    labels.write_text("<annotation/>")
    ctx = train_command.make_context("train", [str(labels), "--out", str(tmp_path / "run"), *args])
    return train_config(train_options(ctx.params), num_tiles=40)


def test_defaults_augment_in_fp32(tmp_path):
    cfg = _config(tmp_path)
    assert cfg.augment is True and cfg.scale_range == (0.8, 1.25) and cfg.precision == "fp32"


def test_no_augment_also_turns_off_scale_jitter(tmp_path):
    cfg = _config(tmp_path, "--no-augment")
    assert cfg.augment is False and cfg.scale_range == (1.0, 1.0)


def test_precision_reaches_the_train_config(tmp_path):
    assert _config(tmp_path, "--precision", "bf16").precision == "bf16"
    assert _config(tmp_path, "--precision", "auto").precision == "auto"


def test_precision_choices_are_the_pipelines():
    from jobs.options import PRECISIONS
    from pipeline.detection import Precision

    assert PRECISIONS == tuple(p.value for p in Precision)


def test_scale_range_reaches_the_train_config_unless_augmentation_is_off(tmp_path):
    assert _config(tmp_path, "--scale-range", "0.5,1.5").scale_range == (0.5, 1.5)
    assert _config(tmp_path, "--scale-range", "0.5,1.5", "--no-augment").scale_range == (1.0, 1.0)


def test_ema_reaches_the_train_config_and_zero_is_off(tmp_path):
    import click
    import pytest

    assert _config(tmp_path).ema_half_life_steps is None
    assert _config(tmp_path, "--ema", "0").ema_half_life_steps is None
    assert _config(tmp_path, "--ema", "150").ema_half_life_steps == 150
    with pytest.raises(click.BadParameter):
        _config(tmp_path, "--ema", "-1")


def test_a_resumed_run_keeps_its_weight_average(tmp_path):
    import dataclasses

    import pytest

    from retinanet.config import ModelConfig
    from retinanet.train_loop import TrainConfig
    from retinanet.train_plan import TrainPlanError
    from retinanet.train_plan import keep_weight_average as _keep_weight_average
    from retinanet.train_spec import TrainSpec

    labels = tmp_path / "a.xml"
    labels.write_text("<annotation/>")

    def opts(*args):
        ctx = train_command.make_context("train", [str(labels), "--out", str(tmp_path / "run"), *args])
        return train_options(ctx.params)

    spec = TrainSpec(labels=(), out_dir="run", model=ModelConfig(class_names=("tree",)))
    with_average = dataclasses.replace(spec, train=TrainConfig(ema_half_life_steps=150))
    assert _keep_weight_average(opts(), None).ema == 0  # a new run: none
    assert _keep_weight_average(opts(), with_average).ema == 150  # resumed without --ema: its own
    assert _keep_weight_average(opts("--ema", "150"), with_average).ema == 150
    assert _keep_weight_average(opts(), spec).ema == 0
    with pytest.raises(TrainPlanError, match="started with --ema 150"):
        _keep_weight_average(opts("--ema", "0"), with_average)
    with pytest.raises(TrainPlanError, match="started with --ema 0"):
        _keep_weight_average(opts("--ema", "20"), spec)


def test_a_bad_scale_range_is_refused_by_name(tmp_path):
    import click
    import pytest

    for bad in ("1.5,0.5", "0,1", "abc", "0.5"):
        with pytest.raises(click.BadParameter, match="--scale-range|LOW,HIGH"):
            _config(tmp_path, "--scale-range", bad)


def test_box_loss_reaches_a_new_model_config(tmp_path):
    import numpy as np
    from PIL import Image

    from retinanet.label_formats import LabeledImage
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_plan import new_model_config as _new_model_config

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "chip.png")
    chip = LabeledImage(
        str(tmp_path / "chip.png"), None, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), "c", (64, 64)
    )
    data = TrainData([chip], [], ("tree",), [])
    for args, expected in (((), "l1"), (("--box-loss", "giou"), "giou")):
        labels = tmp_path / "a.xml"
        labels.write_text("<annotation/>")
        ctx = train_command.make_context("train", [str(labels), "--out", str(tmp_path / "run"), *args])
        assert _new_model_config(train_options(ctx.params), data).box_loss.value == expected


def test_fine_tuning_keeps_the_checkpoints_box_loss_unless_told(tmp_path):
    import numpy as np
    from PIL import Image

    from retinanet import ModelConfig, build_model
    from retinanet.checkpoint import save_dir
    from retinanet.label_formats import LabeledImage
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_plan import model_config as _model_config

    config = ModelConfig(backbone="resnet18", class_names=("tree",), box_loss="giou")
    save_dir(tmp_path / "ckpt", build_model(config), config)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "chip.png")
    chip = LabeledImage(
        str(tmp_path / "chip.png"), None, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), "c", (64, 64)
    )
    data = TrainData([chip], [], ("tree",), [])
    labels = tmp_path / "a.xml"
    labels.write_text("<annotation/>")
    for args, expected in (((), "giou"), (("--box-loss", "l1"), "l1")):
        argv = [str(labels), "--out", str(tmp_path / "run"), "--init", str(tmp_path / "ckpt"), *args]
        opts = train_options(train_command.make_context("train", argv).params)
        assert _model_config(opts, data, None)[0].box_loss.value == expected
