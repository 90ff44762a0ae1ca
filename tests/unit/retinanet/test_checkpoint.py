import json
import os
import pickle

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet import ModelConfig, build_model
from retinanet.checkpoint import (
    CheckpointError,
    import_deepforest,
    import_torchvision_state_dict,
    load_dir,
    save_dir,
)
from retinanet.config import BandConfig

CFG = ModelConfig(
    backbone="resnet18",
    class_names=("car", "tree"),
    band_config=BandConfig(mean=(1, 2, 3), std=(4, 5, 6)),
    tile_size_px=256,
    gsd_m=0.3,
)


def test_round_trip(tmp_path):
    model = build_model(CFG)
    save_dir(tmp_path / "ck", model, CFG, train_state={"epoch": 3})
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["config"]["class_names"] == ["car", "tree"]
    assert "torch" in meta["versions"]
    loaded = load_dir(tmp_path / "ck")
    assert loaded.config == CFG
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert loaded.checkpoint_id.startswith("ck@")


def test_pickle_payload_is_refused(tmp_path):
    model = build_model(CFG)
    ck = save_dir(tmp_path / "ck", model, CFG)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    state = model.state_dict()
    state["evil"] = Evil()
    with open(ck / "model.pt", "wb") as f:
        pickle.dump(state, f)
    with pytest.raises(CheckpointError, match="pickle"):
        load_dir(ck)
    assert not (tmp_path / "pwned").exists()


def test_config_mismatch_names_keys(tmp_path):
    ck = save_dir(tmp_path / "ck", build_model(CFG), CFG)
    meta = json.loads((ck / "meta.json").read_text())
    meta["config"]["class_names"] = ["car", "tree", "building"]
    (ck / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cls_logits"):
        load_dir(ck)


def test_check_dir_finds_what_load_dir_finds_without_building_the_model(tmp_path):
    from retinanet.checkpoint import check_dir

    ck = save_dir(tmp_path / "ck", build_model(CFG), CFG)
    checked = check_dir(ck)
    assert checked.config == load_dir(ck).config and checked.checkpoint_id == load_dir(ck).checkpoint_id
    state = torch.load(ck / "model.pt", weights_only=True)
    state["extra.weight"] = state.pop(next(k for k in state if k.startswith("head.regression_head")))
    torch.save(state, ck / "model.pt")
    with pytest.raises(CheckpointError, match="extra.weight") as info:
        check_dir(ck)
    assert "regression_head" in str(info.value)  # the missing key is named too


def test_missing_dir_message(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_dir(tmp_path / "nope")


def test_import_torchvision_state_dict():
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    model, cfg = import_torchvision_state_dict(tv.state_dict(), class_names=("a", "b", "c"))
    assert cfg.p6_input == "p5" and cfg.backbone == "resnet50"
    x = torch.rand(3, 128, 128)
    tv.eval()
    tv.transform = model.transform  # compare the networks, not their preprocessing
    ours = model([x])[0]
    theirs = tv([x])[0]
    assert torch.allclose(ours["scores"], theirs["scores"]) and torch.equal(ours["labels"], theirs["labels"])


def _deepforest_like_state():
    """A DeepForest-shaped RetinaNet: ResNet-50 FPN, FrozenBatchNorm, P6 from P5, 1 class."""
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    net = RetinaNet(backbone, num_classes=1)
    return {f"model.{k}": v for k, v in net.state_dict().items()}


def test_import_deepforest_pt_ckpt_and_safetensors(tmp_path):
    state = _deepforest_like_state()
    torch.save(state, tmp_path / "release.pt")
    model, cfg = import_deepforest(tmp_path / "release.pt")
    assert cfg.class_names == ("Tree",) and cfg.norm_layer == "frozen_batch"
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "release.ckpt")
    model2, _ = import_deepforest(tmp_path / "release.ckpt")
    from safetensors.torch import save_file

    d = tmp_path / "hf"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({"label_dict": {"Tree": 0}}))
    model3, cfg3 = import_deepforest(d)
    assert cfg3.class_names == ("Tree",)
    k = "backbone.body.conv1.weight"
    assert torch.equal(model.state_dict()[k], state["model." + k]) and torch.equal(
        model3.state_dict()[k], state["model." + k]
    )


def test_import_deepforest_class_count_mismatch(tmp_path):
    torch.save(_deepforest_like_state(), tmp_path / "r.pt")
    with pytest.raises(CheckpointError, match="1 classes"):
        import_deepforest(tmp_path / "r.pt", class_names=("Tree", "Bird"))
