"""Hostile checkpoints (issue 25): refused in one line, before they cost memory.

Each case misbehaved before: a ``meta.json`` declaring 400k classes had the
loader allocate a 33 GB head before the weights were compared (now: a 4 MB
meta.json is over the 1 MB cap, 50k classes over the 1000-class cap); sizes within
any cap but not those of the weights (1000 classes x 256 anchors) built a
2.4 GB head first; deeply nested JSON was a ``RecursionError`` traceback; a
pickle that torch's ``weights_only`` loader blocks was reported as a corrupt
file instead of a refused payload.

Memory is measured in a subprocess (``ru_maxrss``) under an address-space
limit, so the old code fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from retinanet import ModelConfig, build_model
from retinanet.checkpoint import CheckpointError, import_deepforest, load_dir, read_meta, save_dir

CFG = ModelConfig(backbone="resnet18", class_names=("car",), tile_size_px=64)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_dir(tmp_path_factory.mktemp("ck") / "ck", build_model(CFG), CFG)


def _copy(good: Path, dest: Path, edit=lambda meta: meta) -> Path:
    dest.mkdir()
    (dest / "model.pt").write_bytes((good / "model.pt").read_bytes())
    meta = edit(json.loads((good / "meta.json").read_text()))
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def _load_in_subprocess(ckpt: Path) -> dict:
    """``load_dir(ckpt)`` in a fresh interpreter limited to 10 GB of address space.

    Returns:
        ``error`` (the CheckpointError text, or another exception's type and
        text) and ``rss_growth_mb``: peak RSS during the load minus the peak
        after importing torch and building nothing.
    """
    script = textwrap.dedent(
        f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (10 << 30, 10 << 30))
        import torch
        from retinanet.checkpoint import CheckpointError, load_dir
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_dir({str(ckpt)!r})
            error = None
        except CheckpointError as exc:
            error = "CheckpointError: " + str(exc)
        except BaseException as exc:
            error = type(exc).__name__ + ": " + str(exc)[:300]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"error": error, "rss_growth_mb": (after - before) / 1024}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert out.stdout.strip(), out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_400k_classes_are_refused_before_the_head_is_allocated(tmp_path, good):
    def edit(meta):
        meta["config"]["class_names"] = [f"c{i}" for i in range(400_000)]
        return meta

    result = _load_in_subprocess(_copy(good, tmp_path / "ck", edit))
    # before: build_model tried to allocate the 33 GB head (an allocation error under the limit)
    assert result["error"].startswith("CheckpointError: "), result
    assert "meta.json: 4" in result["error"] and "more than the 1048576 bytes" in result["error"]
    assert result["rss_growth_mb"] < 300, result


def test_50k_classes_in_a_small_meta_json_are_over_the_class_cap(tmp_path, good):
    def edit(meta):
        meta["config"]["class_names"] = [f"c{i}" for i in range(50_000)]  # 450 KB of meta.json
        return meta

    result = _load_in_subprocess(_copy(good, tmp_path / "ck", edit))
    assert result["error"].startswith("CheckpointError: "), result
    assert "config.class_names holds 50000 classes, more than the 1000" in result["error"]
    assert result["rss_growth_mb"] < 300, result  # before: the 4 GB head was built, then compared


def test_sizes_within_the_caps_are_compared_with_the_weights_before_building(tmp_path, good):
    # 1000 classes x 16 x 16 anchors: a 2.4 GB classifier head; model.pt holds a 1-class one
    def edit(meta):
        meta["config"].update(
            class_names=[f"c{i}" for i in range(1000)],
            anchor_scales=[1.0 + i / 16 for i in range(16)],
            aspect_ratios=[0.5 + i / 8 for i in range(16)],
        )
        return meta

    result = _load_in_subprocess(_copy(good, tmp_path / "ck", edit))
    assert result["error"].startswith("CheckpointError: "), result
    assert "cls_logits" in result["error"] and "256 anchors x 1000 classes" in result["error"]
    assert result["rss_growth_mb"] < 300, result  # before: ~2400 MB, the head was built first


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("class_names", ["x" * 201], "201 characters"),
        ("anchor_scales", [1.0] * 17, "anchor_scales holds 17"),
        (
            "band_config",
            {"bands": [1] * 257, "mean": [0] * 257, "std": [1] * 257},
            "band_config.bands holds 257",
        ),
    ],
)
def test_meta_sizes_over_the_caps_name_the_field(tmp_path, good, key, value, fragment):
    def edit(meta):
        meta["config"][key] = value
        return meta

    with pytest.raises(CheckpointError, match="meta.json") as info:
        load_dir(_copy(good, tmp_path / "ck", edit))
    assert fragment in str(info.value)


def test_deeply_nested_meta_json_is_one_line(tmp_path, good):
    ck = _copy(good, tmp_path / "ck")
    (ck / "meta.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CheckpointError, match=r"meta.json is not valid JSON \(nested too deeply\)"):
        read_meta(ck)  # before: RecursionError


def test_meta_json_over_1_mb_is_refused_unread(tmp_path, good):
    def edit(meta):
        meta["notes"] = "x" * (2 << 20)
        return meta

    with pytest.raises(CheckpointError, match="more than the 1048576 bytes"):
        read_meta(_copy(good, tmp_path / "ck", edit))  # before: read and accepted


class _Shell:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    ("payload", "name"),
    [(_Shell(), "posix.system"), (__import__("argparse").Namespace(a=1), "argparse.Namespace")],
)
def test_blocked_pickle_is_refused_not_called_corrupt(tmp_path, good, payload, name):
    ck = _copy(good, tmp_path / "ck")
    state = torch.load(good / "model.pt", weights_only=True)
    torch.save({**state, "extra": payload}, ck / "model.pt")
    with pytest.raises(CheckpointError) as info:
        load_dir(ck)
    message = str(info.value)
    # before: posix.system (a blocked module) was "not a readable torch file (corrupt, ...)"
    assert "refused: model.pt holds a pickled object other than tensors" in message
    assert f"weights_only loading refused {name}" in message and "plain state dicts" in message
    assert "corrupt" not in message


def test_deepforest_config_json_too_deep_is_one_line(tmp_path):
    from safetensors.torch import save_file

    release = tmp_path / "release"
    release.mkdir()
    save_file({"model.x": torch.zeros(1)}, release / "model.safetensors")
    (release / "config.json").write_text("{" + '"a":{' * 100_000 + "}" * 100_001)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        import_deepforest(release)  # before: RecursionError
