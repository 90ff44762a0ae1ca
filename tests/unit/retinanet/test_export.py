"""`aerialdet export --format onnx`: the file's detections match eager torch (ONNX Runtime on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from jobs.cli import _register_optional, cli
from retinanet import ModelConfig, build_model
from retinanet.checkpoint import load_dir, save_dir
from retinanet.config import BandConfig

_register_optional()

TILE_PX = 128
# stated tolerances: ONNX Runtime's fp32 kernels differ from oneDNN's by ~2e-5 in a logit
SCORE_ATOL = 1e-4
BOX_ATOL_PX = 1e-2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny resnet18 RetinaNet, random weights, whose scores spread over (0, 1) so it detects."""
    torch.manual_seed(0)
    config = ModelConfig(
        backbone="resnet18",
        class_names=("car", "tree"),
        band_config=BandConfig(mean=(90.0, 100.0, 110.0), std=(40.0, 50.0, 60.0)),
        tile_size_px=TILE_PX,
    )
    model = build_model(config)
    cls_logits = model.head.classification_head.cls_logits
    nn.init.normal_(cls_logits.weight, std=0.5)  # the 0.01 prior would leave no score above 0.05
    nn.init.zeros_(cls_logits.bias)
    return save_dir(tmp_path_factory.mktemp("export") / "ckpt", model, config)


@pytest.fixture(scope="module")
def onnx_file(checkpoint):
    out = checkpoint.parent / "model.onnx"
    result = CliRunner().invoke(cli, ["export", "--format", "onnx", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return out


def _match(eager: dict, exported: dict) -> None:
    """Same detections: count, labels, boxes and scores within the stated tolerances."""
    order_e = np.lexsort((eager["boxes"][:, 0], -eager["scores"]))
    order_x = np.lexsort((exported["boxes"][:, 0], -exported["scores"]))
    assert len(order_e) == len(order_x)
    np.testing.assert_array_equal(eager["labels"][order_e], exported["labels"][order_x])
    np.testing.assert_allclose(exported["scores"][order_x], eager["scores"][order_e], atol=SCORE_ATOL, rtol=0)
    np.testing.assert_allclose(exported["boxes"][order_x], eager["boxes"][order_e], atol=BOX_ATOL_PX, rtol=0)


def test_onnx_detections_match_eager(checkpoint, onnx_file):
    import onnx
    import onnxruntime as ort

    from retinanet.export import decode_detections

    model = load_dir(checkpoint).model
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 3, TILE_PX, TILE_PX)).astype(np.float32)  # raw units, batch of 2
    with torch.inference_mode():
        eager = model(list(torch.from_numpy(images)))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    cls_logits, bbox_regression = session.run(None, {"images": images})
    exported = decode_detections(
        model, (TILE_PX, TILE_PX), torch.from_numpy(cls_logits), torch.from_numpy(bbox_regression)
    )
    assert sum(len(d["boxes"]) for d in eager) > 10  # the comparison is not of empty sets
    for e, x in zip(eager, exported):
        _match({k: v.numpy() for k, v in e.items()}, {k: v.numpy() for k, v in x.items()})
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert '"class_names": ["car", "tree"]' in props["aerialdet.config"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "tensorrt"], "--format 'tensorrt' is not supported; build a TensorRT engine"),
        (["--format", "coreml"], "--format 'coreml' is not supported; supported: onnx"),
        (["--tile-size-px", "100"], "--tile-size-px must be a multiple of 32"),
    ],
)
def test_export_refuses_in_one_line(checkpoint, tmp_path, args, expected):
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx"), *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_without_the_export_extra_is_one_line(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # `import onnxscript` now fails
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: the ONNX export needs the 'onnxscript' package: pip install 'aerialdet[export]'"
    )


def test_export_refuses_an_existing_file_and_a_missing_checkpoint(checkpoint, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"keep")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "exists; pass --overwrite" in result.output
    assert (tmp_path / "m.onnx").read_bytes() == b"keep"
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "n.onnx")])
    assert result.exit_code == 2 and "is not a directory" in result.output
    assert len(result.output.strip().splitlines()) == 1
