"""Malformed checkpoints: one clear CheckpointError naming the file and the field, never a traceback.

Each case was a raw traceback, or was silently accepted, before the checkpoint
schema was validated in one place (issue 13).
"""

import json
import math
import random

import pytest
import torch
from click.testing import CliRunner

from retinanet import ModelConfig, build_model
from retinanet.checkpoint import CheckpointError, load_dir, read_config, resolve_checkpoint, save_dir

CFG = ModelConfig(backbone="resnet18", class_names=("car",), tile_size_px=64)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_dir(tmp_path_factory.mktemp("ck") / "ck", build_model(CFG), CFG)


def _with_meta(tmp_path, good, edit):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.pt").write_bytes((good / "model.pt").read_bytes())
    meta = json.loads((good / "meta.json").read_text())
    meta = edit(meta)
    (ck / "meta.json").write_text(json.dumps(meta))
    return ck


def _set(key, value):
    def edit(meta):
        meta["config"][key] = value
        return meta

    return edit


BAD_META = {
    "a list": (lambda m: [m], "JSON object"),
    "a string": (lambda m: "config", "JSON object"),
    "config missing": (lambda m: {k: v for k, v in m.items() if k != "config"}, "'config'"),
    "unknown key": (_set("colour", "red"), "colour"),
    "backbone vgg": (_set("backbone", "vgg"), "backbone"),
    "tile size a string": (_set("tile_size_px", "big"), "tile_size_px"),
    "tile size 1e9": (_set("tile_size_px", 10**9), "tile_size_px"),
    "band_config a list": (_set("band_config", [1, 2, 3]), "band_config"),
    "std NaN": (_set("band_config", {"bands": [1, 2, 3], "mean": [0, 0, 0], "std": [1, math.nan, 1]}), "std"),
    "class_names a string": (_set("class_names", "abc"), "class_names"),
    "class_names numbers": (_set("class_names", [1, 2]), "class_names"),
    "config a list": (_set("config", None) if False else (lambda m: {**m, "config": [1]}), "JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_malformed_meta_is_one_clear_error(tmp_path, good, case):
    edit, fragment = BAD_META[case]
    ck = _with_meta(tmp_path, good, edit)
    with pytest.raises(CheckpointError, match="meta.json") as info:
        load_dir(ck)
    assert fragment in str(info.value)


def test_corrupt_weights_say_so_not_pickle(tmp_path, good):
    ck = _with_meta(tmp_path, good, lambda m: m)
    (ck / "model.pt").write_bytes(b"\x80\x02garbage that is not a torch file" * 10)
    with pytest.raises(CheckpointError, match="not a readable torch file") as info:
        load_dir(ck)
    assert "pickle payload" not in str(info.value)
    (ck / "model.pt").write_bytes((good / "model.pt").read_bytes()[:500])  # truncated zip
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_dir(ck)


def test_run_directory_resolves_to_best_then_last(tmp_path, good):
    run = tmp_path / "run"
    save_dir(run / "last", build_model(CFG), CFG)
    path, note = resolve_checkpoint(run)
    assert path == run / "last" and "no best/" in note
    save_dir(run / "best", build_model(CFG), CFG)
    path, note = resolve_checkpoint(run)
    assert path == run / "best" and "best" in note
    assert resolve_checkpoint(good) == (good, None)
    with pytest.raises(CheckpointError, match="neither a checkpoint nor a training run"):
        resolve_checkpoint(tmp_path)


def test_detect_cli_rejects_bad_checkpoint_in_one_line(tmp_path, good):
    from jobs.cli import cli

    ck = _with_meta(tmp_path, good, lambda m: m)
    (ck / "model.pt").write_bytes(b"not weights")
    result = CliRunner().invoke(
        cli, ["detect", str(tmp_path), "--model", str(ck), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert "model.pt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


HOSTILE = [None, True, -1, 0, 1e308, math.inf, math.nan, "", "?", "'; DROP", "\x00", [], {}, [None], {"a": 1}]


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_config_fields_give_a_config_or_a_clear_error(seed):
    # any JSON value in any field: a valid config or ValueError naming the field, nothing else
    rng = random.Random(seed)
    base = CFG.to_json()
    for _ in range(60):
        data = json.loads(json.dumps(base))
        key = rng.choice(sorted(data))
        data[key] = rng.choice(HOSTILE)
        try:
            ModelConfig.from_json(data)
        except ValueError as exc:
            assert key in str(exc) or "band_config" in str(exc), (key, data[key], exc)


def test_read_config_needs_no_weights(tmp_path, good):
    ck = _with_meta(tmp_path, good, lambda m: m)
    (ck / "model.pt").unlink()
    assert read_config(ck) == CFG
    with pytest.raises(CheckpointError, match="neither model.pt"):
        load_dir(ck)


def test_weights_that_do_not_match_the_config_name_the_keys(tmp_path, good):
    ck = _with_meta(tmp_path, good, _set("class_names", ["car", "tree"]))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_dir(ck)
    assert torch.__version__  # torch stayed importable; nothing crashed below the loader


def test_calibrated_thresholds_in_label_order_and_bad_ones_refused():
    from retinanet.predictor import calibrated_thresholds

    names = ("car", "tree", "house")
    assert calibrated_thresholds({}, names, "ck") is None
    assert calibrated_thresholds({"score_thresholds": {"tree": 0.4, "car": 0.7}}, names, "ck") == (
        0.7,
        0.4,
        0.0,
    )
    for bad in ([0.5], {"car": "high"}, {"car": 1.5}, {"car": True}):
        with pytest.raises(CheckpointError, match="score_thresholds"):
            calibrated_thresholds({"score_thresholds": bad}, names, "ck")


def test_text_file_as_weights_is_one_clear_error(tmp_path, good):
    ck = _with_meta(tmp_path, good, lambda m: m)
    (ck / "model.pt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="model.pt"):
        load_dir(ck)
