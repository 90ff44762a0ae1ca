"""``build_model(config)``: torchvision's RetinaNet with the aerial configuration.

The network is torchvision's: ResNet (or MobileNetV3) + FPN on P3-P7, a
classification and a box-regression subnet, focal loss (alpha 0.25,
gamma 2), classifier bias prior 0.01.  What we set:

* anchors from ``ModelConfig`` (9 per location by default);
* no resizing: ``NoResizeTransform`` passes tiles through at the scene's
  resolution (torchvision would resize the short side to 800 px);
* band scaling in the model: torchvision's transform subtracts
  ``image_mean`` and divides by ``image_std``, set from ``BandConfig`` in raw
  scene units, so every caller (detect, train, evaluate, a plain script)
  passes raw values as float32 ``[C, H, W]`` and the checkpoint carries its
  own scaling;
* ``detections_per_img`` from ``ModelConfig.detections_per_tile`` (torchvision's
  silent default cap is 300).

Weights are always random (``weights=None, weights_backbone=None``): nothing
is downloaded at run time.  Load trained weights with ``retinanet.checkpoint``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn
from torchvision.models import mobilenet, resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    _mobilenet_extractor,
    _resnet_fpn_extractor,
)
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet.config import Backbone, ModelConfig, NormLayer, P6Input

_RESNET_C5_CHANNELS = {Backbone.RESNET18: 512, Backbone.RESNET34: 512, Backbone.RESNET50: 2048}


class NoResizeTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision ships no stubs
    """torchvision's detection transform minus the resize.

    Tiles are normalised (``image_mean``/``image_std``) and batched
    (zero-padded to a multiple of 32 px) but never rescaled, so a box in the
    output is in the tile's own pixels.
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Return ``image`` and ``target`` unchanged (no resize)."""
        return image, target


def _build_backbone(config: ModelConfig) -> BackboneWithFPN:
    """ResNet/MobileNetV3 + FPN returning P3-P7 (256 channels each)."""
    # Trainable BatchNorm when training from scratch; FrozenBatchNorm2d for
    # imported releases that were fine-tuned from ImageNet backbones.
    norm_layer: Any = nn.BatchNorm2d if config.norm_layer is NormLayer.BATCH else FrozenBatchNorm2d
    if config.backbone in _RESNET_C5_CHANNELS:
        body = getattr(resnet, config.backbone.value)(weights=None, norm_layer=norm_layer)
        # P6 from C5 as in the focal-loss paper (torchvision's v2 recipe), or from
        # P5 as torchvision v1 / DeepForest do.
        p6_in = _RESNET_C5_CHANNELS[config.backbone] if config.p6_input is P6Input.C5 else 256
        return _resnet_fpn_extractor(
            body, trainable_layers=5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(p6_in, 256)
        )
    if config.backbone is Backbone.MOBILENET_V3_LARGE:
        body = mobilenet.mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        # stage_indices are [stem, strided blocks (strides 4, 8, 16, 32)..., last];
        # C3/C4/C5 = the stride-8 and stride-16 blocks and the last block (stride 32).
        num_stages = 1 + sum(getattr(b, "_is_cn", False) for b in body.features) + 1
        returned = [num_stages - 4, num_stages - 3, num_stages - 1]
        extractor = _mobilenet_extractor(
            body,
            fpn=True,
            trainable_layers=num_stages,
            returned_layers=returned,
            extra_blocks=LastLevelP6P7(256, 256),
        )
        assert isinstance(extractor, BackboneWithFPN)
        return extractor
    raise ValueError(f"unknown backbone {config.backbone!r}")


def build_model(config: ModelConfig) -> RetinaNet:
    """Build an untrained RetinaNet for ``config``.

    Args:
        config: model configuration (classes, backbone, anchors, thresholds).

    Returns:
        A ``torchvision.models.detection.RetinaNet`` in eval mode whose
        ``forward`` takes raw tiles ``list[Tensor[C, H, W]]`` (float32, scene
        units: it applies ``config.band_config``'s mean/std itself) and, in
        eval mode, returns per tile ``{"boxes": Tensor[N, 4] xyxy tile px,
        "scores": Tensor[N], "labels": Tensor[N] (0-based class ids)}``.

    Example:
        >>> from retinanet import ModelConfig, build_model
        >>> model = build_model(ModelConfig(backbone="resnet18", class_names=("car",)))
        >>> model.anchor_generator.num_anchors_per_location()
        [9, 9, 9, 9, 9]
    """
    backbone = _build_backbone(config)
    anchor_generator = AnchorGenerator(
        sizes=config.anchor_sizes_per_level(),
        aspect_ratios=(tuple(config.aspect_ratios),) * len(config.anchor_sizes_px),
    )
    head = RetinaNetHead(
        backbone.out_channels,
        anchor_generator.num_anchors_per_location()[0],
        config.num_classes,
    )
    # RetinaNetHead's default prior is 0.01; re-apply from the config so a
    # non-default prior_probability is honoured.
    _set_classifier_prior(head, config.prior_probability)
    # torchvision's own switch (its retinanet_resnet50_fpn_v2 sets "giou" the same way)
    head.regression_head._loss_type = config.box_loss.value
    model = RetinaNet(
        backbone,
        num_classes=config.num_classes,
        anchor_generator=anchor_generator,
        head=head,
        score_thresh=config.score_thresh,
        nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_tile,
        topk_candidates=config.topk_candidates,
    )
    model.transform = NoResizeTransform(
        min_size=config.tile_size_px,
        max_size=config.tile_size_px,
        image_mean=list(config.band_config.mean),
        image_std=list(config.band_config.std),
        size_divisible=32,
    )
    _adapt_input_channels(model, config.band_config.num_channels)
    model.eval()
    return model


def _set_classifier_prior(head: RetinaNetHead, prior_probability: float) -> None:
    """Set the classifier bias so sigmoid(bias) == prior_probability (paper eq. init)."""
    bias_value = -math.log(
        (1.0 - prior_probability) / prior_probability
    )  # a float: works on the meta device too
    nn.init.constant_(head.classification_head.cls_logits.bias, bias_value)


def _adapt_input_channels(model: RetinaNet, num_channels: int) -> None:
    """Replace the stem conv when the imagery has other than 3 bands."""
    if num_channels == 3:
        return
    body: Any = model.backbone.body
    if hasattr(body, "conv1"):
        old = body.conv1
        body.conv1 = nn.Conv2d(
            num_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    else:  # mobilenet: features.0 is Conv2dNormActivation
        stem = body["0"][0]
        body["0"][0] = nn.Conv2d(
            num_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
        )
