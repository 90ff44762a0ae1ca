"""Starting points users have: DeepForest releases, torchvision RetinaNet / ResNet state dicts (built here, random)."""

import json

import pytest
import torch
from click.testing import CliRunner
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from jobs.import_model import import_command
from retinanet import ModelConfig, build_model
from retinanet.checkpoint import CheckpointError, load_backbone_weights, load_dir
from retinanet.config import BandConfig

KEY = "backbone.body.layer1.0.conv1.weight"


@pytest.fixture(scope="module")
def deepforest_state():
    """A DeepForest-shaped release: ResNet-50 FPN, FrozenBatchNorm, P6 from P5, 1 class, keys ``model.*``."""
    torch.manual_seed(0)
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return {f"model.{k}": v for k, v in RetinaNet(backbone, num_classes=1).state_dict().items()}


def _write_release(kind, state, folder):
    folder.mkdir(exist_ok=True)
    if kind == "pt":
        torch.save(state, folder / "NEON.pt")
        return folder / "NEON.pt"
    if kind == "ckpt":  # Lightning: the weights under "state_dict"
        torch.save({"state_dict": state, "epoch": 7, "global_step": 100}, folder / "last.ckpt")
        return folder / "last.ckpt"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"label_dict": {"Tree": 0}}))
    return folder


@pytest.mark.parametrize("kind", ["pt", "ckpt", "safetensors"])
def test_aerialdet_import_deepforest_release_gives_a_checkpoint_for_detect(deepforest_state, tmp_path, kind):
    source = _write_release(kind, deepforest_state, tmp_path / "release")
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(import_command, [str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "['Tree']" in result.output
    loaded = load_dir(out)
    assert loaded.config.class_names == ("Tree",) and loaded.config.norm_layer == "frozen_batch"
    assert torch.equal(loaded.model.state_dict()[KEY], deepforest_state["model." + KEY])
    assert json.loads((out / "meta.json").read_text())["imported_from"] == str(source.resolve())
    again = CliRunner().invoke(import_command, [str(source), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output  # no silent clobbering


def test_aerialdet_import_torchvision_state_dict_with_class_names(tmp_path):
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(
        import_command, [str(tmp_path / "tv.pth"), "--out", str(out), "--classes", "car,truck"]
    )
    assert result.exit_code == 0, result.output
    loaded = load_dir(out)
    assert loaded.config.class_names == ("car", "truck") and loaded.config.p6_input == "p5"
    assert torch.equal(loaded.model.state_dict()[KEY], tv.state_dict()[KEY])
    wrong = CliRunner().invoke(import_command, [str(tmp_path / "tv.pth"), "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "2 classes" in wrong.output and "Traceback" not in wrong.output


def test_import_of_a_file_that_is_not_weights_is_one_line(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    result = CliRunner().invoke(import_command, [str(tmp_path / "notes.pt"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "notes.pt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()


def test_train_init_accepts_a_release_file(deepforest_state, tmp_path):
    """`train --init NEON.pt`: the file is imported (not mistaken for a run directory)."""
    from jobs.train import _init_checkpoint, _is_import
    from retinanet.labeled_tiles import TrainData

    source = _write_release("pt", deepforest_state, tmp_path / "release")
    # a release file is imported; a folder that is neither a checkpoint nor model.safetensors is not
    assert _is_import(str(source)) and not _is_import(str(tmp_path / "release"))
    data = TrainData([], [], ("Tree",), [])
    config, _, imported = _init_checkpoint(str(source), data)
    assert config.class_names == ("Tree",) and imported is not None
    assert torch.equal(imported.state_dict()[KEY], deepforest_state["model." + KEY])


def _resnet18_config(bands=(1, 2, 3)):
    n = len(bands)
    return ModelConfig(
        backbone="resnet18", class_names=("tree",), band_config=BandConfig(bands, (100.0,) * n, (50.0,) * n)
    )


def test_backbone_weights_from_a_torchvision_resnet_file(tmp_path):
    torch.manual_seed(1)
    imagenet_like = resnet18(weights=None).state_dict()  # what resnet18-f37072fd.pth holds
    torch.save(imagenet_like, tmp_path / "resnet18.pth")
    model = build_model(_resnet18_config())
    head_before = model.head.classification_head.cls_logits.weight.clone()
    loaded = load_backbone_weights(model, tmp_path / "resnet18.pth")
    assert "layer4.1.conv2.weight" in loaded and not any(k.startswith("fc.") for k in loaded)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["layer4.1.conv2.weight"], imagenet_like["layer4.1.conv2.weight"])
    assert torch.equal(body["bn1.running_mean"], imagenet_like["bn1.running_mean"])
    assert torch.equal(model.head.classification_head.cls_logits.weight, head_before)  # the head is untouched

    four = build_model(_resnet18_config((1, 2, 3, 4)))  # 4 bands: RGB filters averaged over the bands
    load_backbone_weights(four, tmp_path / "resnet18.pth")
    stem = four.backbone.body.conv1.weight
    assert stem.shape[1] == 4 and torch.allclose(stem[:, 0], imagenet_like["conv1.weight"].mean(1) * 0.75)


def test_backbone_weights_of_another_depth_are_refused(tmp_path):
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(CheckpointError, match="same ResNet depth"):
        load_backbone_weights(build_model(_resnet18_config()), tmp_path / "resnet50.pth")
