"""meta.json: format_version migrations (issue 20) and the one score_thresholds validator."""

from __future__ import annotations

import json
import math

import pytest

from retinanet import ModelConfig, build_model
from retinanet import checkpoint_meta as cm
from retinanet.checkpoint import CheckpointError, check_score_thresholds, load_dir, read_meta, save_dir

CFG = ModelConfig(backbone="resnet18", class_names=("car", "tree"), tile_size_px=64)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_dir(tmp_path_factory.mktemp("ck") / "ck", build_model(CFG), CFG)


def _write(ck, meta):
    (ck / "meta.json").write_text(json.dumps(meta))
    return ck


def test_a_newer_format_version_is_refused_in_one_line(tmp_path):
    ck = _write(tmp_path, {"format_version": 2, "config": CFG.to_json()})
    with pytest.raises(CheckpointError, match="written by a newer aerialdet") as info:
        read_meta(ck)
    assert "upgrade" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("version", [True, "1", 1.0, -1])
def test_a_format_version_that_is_not_an_integer_is_named(tmp_path, version):
    with pytest.raises(CheckpointError, match="format_version must be an integer"):
        read_meta(_write(tmp_path, {"format_version": version, "config": CFG.to_json()}))


def test_no_format_version_and_no_migration_for_it(tmp_path):
    with pytest.raises(
        CheckpointError, match="no format_version, and this aerialdet has no migration from version 0"
    ):
        read_meta(_write(tmp_path, {"config": CFG.to_json()}))


def test_migrations_run_step_by_step_up_to_the_current_version(tmp_path, good, monkeypatch):
    # a synthetic history: version 0 (no format_version, classes at top level) -> 1 (today's
    # layout) -> 2 (git_sha renamed source_sha); only the table and FORMAT_VERSION are patched
    calls = []

    def v0_to_v1(meta):
        calls.append(0)
        config = {**CFG.to_json(), "class_names": meta.pop("classes")}
        return {**meta, "config": config}  # meta no longer holds "classes"

    def v1_to_v2(meta):
        calls.append(meta["format_version"])
        sha = meta.pop("git_sha", None)
        return {**meta, "source_sha": sha}

    monkeypatch.setattr(cm, "FORMAT_VERSION", 2)
    monkeypatch.setitem(cm._MIGRATIONS, 0, v0_to_v1)
    monkeypatch.setitem(cm._MIGRATIONS, 1, v1_to_v2)

    old = tmp_path / "v0"
    old.mkdir()
    (old / "model.pt").write_bytes((good / "model.pt").read_bytes())
    _write(old, {"classes": ["car", "tree"], "git_sha": "abc"})
    loaded = load_dir(old)
    assert calls == [0, 1]
    assert loaded.meta["format_version"] == 2 and loaded.meta["source_sha"] == "abc"
    assert "git_sha" not in loaded.meta and loaded.config == CFG

    calls.clear()
    assert read_meta(good)["format_version"] == 2 and calls == [1]  # a version-1 directory: one step
    assert json.loads((good / "meta.json").read_text())["format_version"] == 1  # the file is not rewritten


def test_without_migrations_version_1_reads_as_before(good):
    assert cm._MIGRATIONS == {} and read_meta(good)["format_version"] == cm.FORMAT_VERSION == 1


NAMES = ("car", "tree")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"car": True}, "must be a number in [0, 1], got True"),  # jobs/evaluate took it as 1.0
        ({"car": math.nan}, "got nan"),
        ({"car": 1.5}, "got 1.5"),
        ({"car": -0.1}, "got -0.1"),
        ({"car": "0.5"}, "got '0.5'"),
        ({"bus": 0.5}, "names 'bus', not a class"),
        ({"car": 0.1, "tree": 0.2, "bus": 0.3}, "3 entries for 2 classes"),
        ([0.5, 0.5], "must map class names"),
    ],
)
def test_score_thresholds_are_refused_by_one_validator(raw, fragment):
    with pytest.raises(CheckpointError, match="score_thresholds") as info:
        check_score_thresholds(raw, NAMES, "ck/meta.json")
    assert fragment in str(info.value) and str(info.value).startswith("ck/meta.json: ")


def test_score_thresholds_accepted_as_floats_classes_may_be_left_out():
    assert check_score_thresholds({"tree": 1, "car": 0.25}, NAMES, "ck") == {"tree": 1.0, "car": 0.25}
    assert check_score_thresholds({"tree": 0.0}, NAMES, "ck") == {"tree": 0.0}


def test_read_meta_refuses_a_bool_score_threshold(tmp_path, good):
    # before: read_meta returned it, and `aerialdet evaluate --model` scored at 1.0
    meta = json.loads((good / "meta.json").read_text())
    ck = _write(tmp_path, {**meta, "score_thresholds": {"car": True}})
    with pytest.raises(
        CheckpointError, match=r"score_thresholds\['car'\] must be a number in \[0, 1\], got True"
    ):
        read_meta(ck)
