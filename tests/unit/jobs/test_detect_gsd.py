"""detect's GSD options (issue 21): --gsd-m, --native-resolution, --max-gsd-factor, the checkpoint's gsd_m."""

from __future__ import annotations

import dataclasses

import click
import pytest

from jobs.detect import _build_job, detect_command
from pipeline.standin import STANDIN_INFO, StandinLoader


def _job(tmp_path, *args, loader=None):
    ctx = detect_command.make_context(
        "detect", [str(tmp_path), "--model", "standin:blobs", "--out", str(tmp_path / "out"), *args]
    )
    params = dict(ctx.params)
    source, out_dir = params.pop("source"), params.pop("out_dir")
    params.pop("model")
    return _build_job(source, out_dir, loader or StandinLoader(), params)


def test_a_model_without_gsd_runs_native_and_says_so(tmp_path):
    resolution = _job(tmp_path).resolution
    assert resolution.model_gsd_m is None and resolution.source == "native"
    assert "records no gsd_m" in resolution.note and "--gsd-m" in resolution.note


def test_the_checkpoint_gsd_is_used_and_the_options_override_it(tmp_path):
    loader = StandinLoader(dataclasses.replace(STANDIN_INFO, gsd_m=0.3))
    assert _job(tmp_path, loader=loader).resolution.model_gsd_m == 0.3
    assert _job(tmp_path, loader=loader).resolution.note is None
    assert _job(tmp_path, "--gsd-m", "0.15", loader=loader).resolution.model_gsd_m == 0.15
    assert _job(tmp_path, "--native-resolution", loader=loader).resolution.model_gsd_m is None
    assert _job(tmp_path, "--max-gsd-factor", "4", loader=loader).resolution.max_gsd_factor == 4.0


def test_gsd_and_native_together_are_a_usage_error(tmp_path):
    with pytest.raises(click.BadParameter, match="contradict"):
        _job(tmp_path, "--gsd-m", "0.3", "--native-resolution")


def test_help_says_tiles_are_in_model_pixels():
    from click.testing import CliRunner

    out = CliRunner().invoke(detect_command, ["--help"], terminal_width=200).output
    assert "--gsd-m" in out and "--native-resolution" in out and "--max-gsd-factor" in out
    assert "in model pixels" in out and "native pixels" in out


def test_the_checkpoint_loader_exposes_gsd_m(tmp_path):
    from retinanet.checkpoint import save_dir
    from retinanet.config import ModelConfig
    from retinanet.model import build_model
    from retinanet.predictor import CheckpointLoader

    config = ModelConfig(class_names=("car",), backbone="resnet18", tile_size_px=128, gsd_m=0.3)
    save_dir(tmp_path / "ckpt", build_model(config), config)
    assert CheckpointLoader.open(tmp_path / "ckpt").info.gsd_m == 0.3
