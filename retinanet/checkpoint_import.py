"""Imports of models users already have: torchvision RetinaNet, DeepForest, ResNet backbones.

``import_torchvision_state_dict`` (a plain torchvision RetinaNet state dict)
and ``import_deepforest`` (a DeepForest release: ``.pt``, Lightning ``.ckpt``
or ``model.safetensors`` + ``config.json``) are both behind ``import_model``
(``aerialdet import``, ``aerialdet train --init FILE``);
``load_backbone_weights`` starts a backbone from a torchvision ResNet state
dict (``aerialdet train --backbone-weights``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection.retinanet import RetinaNet

from retinanet.checkpoint_meta import SAFETENSORS_FILE, read_json_object
from retinanet.checkpoint_weights import load_into, load_state_dict_file
from retinanet.config import Backbone, BandConfig, ModelConfig, NormLayer, P6Input
from retinanet.errors import CheckpointError
from retinanet.model import build_model

# DeepForest and torchvision's COCO weights expect [0, 1] input then ImageNet
# mean/std inside the model's transform; in raw uint8 units that is:
IMAGENET_BANDS_UINT8 = BandConfig(
    bands=(1, 2, 3),
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)


def import_torchvision_state_dict(
    state: dict[str, torch.Tensor],
    *,
    class_names: tuple[str, ...],
    band_config: BandConfig = IMAGENET_BANDS_UINT8,
    source: str = "state dict",
    **config_overrides: Any,
) -> tuple[RetinaNet, ModelConfig]:
    """Build a model from a plain torchvision RetinaNet (ResNet-50 FPN) state dict.

    The variant is read from the weights: P6 from P5 (v1, 256 input channels)
    or from C5 (v2), frozen or trainable batch norm, and the class count.

    Args:
        state: keys ``backbone.*``, ``anchor_generator.*``?, ``head.*``.
        class_names: one name per class of the classification head.
        band_config: input scaling; defaults to ImageNet statistics on uint8.
        source: where the state came from, for error messages.
        **config_overrides: any other ``ModelConfig`` fields.

    Returns:
        The model with the weights loaded, and its config.
    """
    p6 = state.get("backbone.fpn.extra_blocks.p6.weight")
    if p6 is None:
        raise CheckpointError(f"{source}: no backbone.fpn.extra_blocks.p6.weight; not a RetinaNet FPN")
    p6_input = P6Input.P5 if p6.shape[1] == 256 else P6Input.C5
    frozen = not any(k.endswith("num_batches_tracked") for k in state)
    cls = state.get("head.classification_head.cls_logits.weight")
    if cls is None:
        raise CheckpointError(f"{source}: no head.classification_head.cls_logits.weight")
    num_anchors = 9
    num_classes = cls.shape[0] // num_anchors
    if num_classes != len(class_names):
        raise CheckpointError(
            f"{source}: the classification head has {num_classes} classes but class_names has "
            f"{len(class_names)} ({class_names}); pass one name per class"
        )
    config = ModelConfig(
        class_names=class_names,
        backbone=Backbone.RESNET50,
        band_config=band_config,
        p6_input=p6_input,
        norm_layer=NormLayer.FROZEN_BATCH if frozen else NormLayer.BATCH,
        **config_overrides,
    )
    model = build_model(config)
    load_into(model, state, source)
    return model, config


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def import_deepforest(
    path: str | os.PathLike[str], *, class_names: tuple[str, ...] | None = None
) -> tuple[RetinaNet, ModelConfig]:
    """Import a DeepForest release.

    Accepts a ``.pt`` state dict, a Lightning ``.ckpt`` (``{"state_dict": ...}``)
    or a directory / file ``model.safetensors`` with ``config.json`` beside it.
    Keys are prefixed ``model.``; the network is torchvision's ResNet-50 FPN
    RetinaNet with frozen batch norm.  Class names come from ``config.json``'s
    ``label_dict`` when present, else ``class_names``, else ``("Tree",)``.

    Returns:
        The model with the weights loaded, and its config (ImageNet scaling on uint8).
    """
    src = Path(path)
    if src.is_dir():
        src = src / SAFETENSORS_FILE
    config_json = src.parent / "config.json"
    raw = load_state_dict_file(src)
    state = _strip_prefix(raw, "model.") if any(k.startswith("model.") for k in raw) else raw
    if class_names is None and config_json.is_file():
        cfg = read_json_object(config_json)  # size-capped; too deep or not JSON: one line
        label_dict = cfg.get("label_dict")
        if isinstance(label_dict, dict):
            class_names = tuple(sorted(label_dict, key=lambda k: label_dict[k]))
    return import_torchvision_state_dict(state, class_names=class_names or ("Tree",), source=str(src))


def load_backbone_weights(model: RetinaNet, path: str | os.PathLike[str]) -> list[str]:
    """Start a RetinaNet's ResNet backbone from a torchvision ResNet state dict (e.g. ImageNet).

    The file is what ``torchvision.models.resnet50(weights=...).state_dict()``
    saves (``conv1.*``, ``bn1.*``, ``layer1.*`` .. ``layer4.*``, ``fc.*``), as
    ``.pth``/``.pt`` or ``.safetensors``; the classifier ``fc.*`` is not used.
    With other than 3 bands the stem's RGB filters are averaged and repeated
    over the bands.  Nothing is downloaded.

    Args:
        model: from ``build_model`` (a ResNet backbone of the same depth).
        path: the state dict file.

    Returns:
        The keys loaded.

    Raises:
        CheckpointError: not a ResNet state dict, or one of another depth.
    """
    state = load_state_dict_file(path)
    state = {k.removeprefix("backbone.body."): v for k, v in state.items() if not k.startswith("fc.")}
    body = model.backbone.body
    own = body.state_dict()
    if "conv1.weight" not in state or "conv1.weight" not in own:
        raise CheckpointError(
            f"{path}: not a torchvision ResNet state dict (no conv1.weight), or the model's backbone is not "
            "a ResNet; pass e.g. resnet50-*.pth with --backbone resnet50"
        )
    stem, own_stem = state["conv1.weight"], own["conv1.weight"]
    if stem.shape[1] != own_stem.shape[1]:  # (64, 3, 7, 7) -> (64, C, 7, 7)
        bands = own_stem.shape[1]
        state["conv1.weight"] = stem.mean(dim=1, keepdim=True).repeat(1, bands, 1, 1) * (3 / bands)
    state = {k: v for k, v in state.items() if k in own or not k.endswith("num_batches_tracked")}
    own_needed = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(own_needed - set(state))
    shapes = [k for k in own_needed & set(state) if tuple(state[k].shape) != tuple(own[k].shape)]
    unexpected = sorted(set(state) - set(own))
    if missing or shapes or unexpected:
        raise CheckpointError(
            f"{path}: does not fit the {type(body).__name__} backbone (missing {missing[:3]}, "
            f"shape mismatch {shapes[:3]}, unexpected {unexpected[:3]}); is it the same ResNet depth as --backbone?"
        )
    body.load_state_dict(state, strict=False)
    return sorted(state)


def import_model(
    path: str | os.PathLike[str], *, class_names: tuple[str, ...] | None = None
) -> tuple[RetinaNet, ModelConfig]:
    """Import a DeepForest release or a torchvision RetinaNet state dict, whichever ``path`` is.

    ``.pt``/``.pth``/``.ckpt``/``.safetensors`` files and folders holding
    ``model.safetensors``: keys prefixed ``model.`` (DeepForest, Lightning)
    or not (torchvision) are both read by ``import_deepforest``.

    Raises:
        CheckpointError: the file cannot be read, or is not a ResNet-50 FPN RetinaNet.
    """
    src = Path(path)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or directory")
    if src.is_dir() and not (src / SAFETENSORS_FILE).is_file():
        raise CheckpointError(
            f"{src}: a folder without {SAFETENSORS_FILE}; pass a DeepForest release (.pt, .ckpt, "
            "model.safetensors + config.json) or a torchvision RetinaNet state dict (.pth)"
        )
    try:
        return import_deepforest(src, class_names=class_names)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # torch's unpickler on a non-torch file
        raise CheckpointError(
            f"{src}: not a readable torch or safetensors file ({type(exc).__name__}: {exc}); "
            "pass a DeepForest release or a torchvision RetinaNet state dict"
        ) from None
