import pytest
import torch

from retinanet import ModelConfig, build_model
from retinanet.config import AERIAL_ANCHOR_SIZES_PX


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(backbone="resnet18", class_names=("car", "tree"), tile_size_px=256))


def test_nine_anchors_per_location_with_paper_sizes(model):
    gen = model.anchor_generator
    assert gen.num_anchors_per_location() == [9] * 5
    for base, sizes in zip((32, 64, 128, 256, 512), gen.sizes):
        assert sizes == pytest.approx((base, base * 2 ** (1 / 3), base * 2 ** (2 / 3)))
    assert all(r == (0.5, 1.0, 2.0) for r in gen.aspect_ratios)


def test_anchor_counts_per_level_match_feature_maps(model):
    image = torch.zeros(3, 256, 256)
    features = model.backbone(image[None])
    # P3..P7 strides 8..128 on a 256 px tile
    assert [f.shape[-1] for f in features.values()] == [32, 16, 8, 4, 2]
    images, _ = model.transform([image])
    anchors = model.anchor_generator(images, list(features.values()))[0]
    assert anchors.shape[0] == 9 * (32**2 + 16**2 + 8**2 + 4**2 + 2**2)
    # the 9 anchors at the first P3 location: areas of 32, 40.3, 50.8 px squared, 3 ratios each
    first9 = anchors[:9]
    side = ((first9[:, 2] - first9[:, 0]) * (first9[:, 3] - first9[:, 1])).sqrt()
    expected = sorted([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)] * 3)
    assert sorted(side.tolist()) == pytest.approx(expected, rel=0.03)
    centre = (first9[:, :2] + first9[:, 2:]) / 2
    assert torch.allclose(centre, torch.zeros_like(centre), atol=0.6)  # torchvision rounds anchor corners


def test_aerial_anchor_sizes_configurable():
    m = build_model(ModelConfig(backbone="resnet18", anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX))
    assert m.anchor_generator.sizes[0][0] == 16


def test_classifier_bias_gives_prior_001(model):
    bias = model.head.classification_head.cls_logits.bias
    assert torch.sigmoid(bias).mean().item() == pytest.approx(0.01, rel=1e-4)


def test_paper_inference_settings(model):
    assert model.score_thresh == 0.05 and model.nms_thresh == 0.5 and model.topk_candidates == 1000
    assert model.detections_per_img == 1000  # no silent cap of 300


def test_tile_goes_through_without_resizing(model):
    image = torch.rand(3, 200, 300) * 255
    images, _ = model.transform([image])
    assert images.image_sizes == [(200, 300)]
    # zero-padding to a multiple of 32 and the band scaling, no rescaling
    expected = (image - 127.5) / 64.0  # BandConfig's default mean/std, raw units
    assert torch.allclose(images.tensors[0, :, :200, :300], expected)


def test_model_applies_its_own_band_scaling():
    # the checkpoint's mean/std live in the model: callers pass raw uint16 values
    from retinanet.config import BandConfig

    bands = BandConfig(bands=(3, 2, 1), mean=(1000.0, 2000.0, 3000.0), std=(10.0, 20.0, 30.0))
    m = build_model(ModelConfig(backbone="resnet18", band_config=bands))
    raw = torch.tensor([1010.0, 2040.0, 3090.0]).reshape(3, 1, 1).expand(3, 32, 32)
    images, _ = m.transform([raw])
    assert images.tensors[0, :, 0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0])


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_other_backbones_give_p3_to_p7(backbone):
    m = build_model(ModelConfig(backbone=backbone))
    feats = m.backbone(torch.zeros(1, 3, 256, 256))
    assert [f.shape[-1] for f in feats.values()] == [32, 16, 8, 4, 2]


def test_four_band_input():
    from retinanet.config import BandConfig

    m = build_model(
        ModelConfig(
            backbone="resnet18", band_config=BandConfig(bands=(1, 2, 3, 4), mean=(0,) * 4, std=(1,) * 4)
        )
    )
    m.eval()
    out = m([torch.zeros(4, 64, 64)])
    assert out[0]["boxes"].shape[1] == 4


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="vgg")
    with pytest.raises(ValueError, match="anchor_sizes_px"):
        ModelConfig(anchor_sizes_px=(8, 16))


def test_closed_choices_are_enums_that_equal_their_names():
    from retinanet.config import Backbone, NormLayer

    cfg = ModelConfig(backbone="resnet18", norm_layer="frozen_batch")
    assert cfg.backbone is Backbone.RESNET18 and cfg.backbone == "resnet18"
    assert cfg.norm_layer is NormLayer.FROZEN_BATCH
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.to_json()["backbone"] == "resnet18" and type(cfg.to_json()["backbone"]) is str


def test_giou_box_loss_reaches_the_head_and_changes_the_regression_loss():
    from retinanet.config import BoxLoss

    image = torch.rand(3, 128, 128) * 255
    target = {"boxes": torch.tensor([[30.0, 40.0, 62.0, 70.0]]), "labels": torch.tensor([0])}
    losses = {}
    for kind in ("l1", "giou"):
        torch.manual_seed(0)
        m = build_model(ModelConfig(backbone="resnet18", class_names=("tree",), box_loss=kind)).train()
        assert m.head.regression_head._loss_type == kind
        losses[kind] = m([image], [target])
    assert torch.isfinite(losses["giou"]["bbox_regression"])
    # the same weights and data: only the regression loss differs
    assert torch.equal(losses["l1"]["classification"], losses["giou"]["classification"])
    assert not torch.equal(losses["l1"]["bbox_regression"], losses["giou"]["bbox_regression"])
    cfg = ModelConfig(box_loss="giou")
    assert ModelConfig.from_json(cfg.to_json()).box_loss is BoxLoss.GIOU
    old = {k: v for k, v in cfg.to_json().items() if k != "box_loss"}  # a checkpoint from before the option
    assert ModelConfig.from_json(old).box_loss is BoxLoss.L1
