"""Checkpoint directories: ``model.pt`` (or ``model.safetensors``) + ``meta.json``.

Layout::

    CKPT/
      meta.json          format_version, model config (classes, bands, scaling,
                         anchors, tile size, GSD), library versions, git sha
      model.pt           state_dict of the unwrapped model, tensors only
      train_state.pt     optional: optimizer, scheduler, epoch (for --resume)

Weights are loaded with ``torch.load(weights_only=True)``: a checkpoint that
carries a pickled object other than tensors is refused.  A config that does
not match its weights fails naming the mismatched keys.

Imports of models users already have: ``import_torchvision_state_dict`` (a
plain torchvision RetinaNet state dict) and ``import_deepforest`` (a
DeepForest release: ``.pt``, Lightning ``.ckpt`` or ``model.safetensors`` +
``config.json``), both behind ``import_model`` (``aerialdet import``,
``aerialdet train --init FILE``); ``load_backbone_weights`` starts a backbone
from a torchvision ResNet state dict (``aerialdet train --backbone-weights``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection.retinanet import RetinaNet

from retinanet.config import BandConfig, ModelConfig, NormLayer, P6Input
from retinanet.errors import CheckpointError
from retinanet.model import build_model

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "checkpoint_id",
    "import_deepforest",
    "import_model",
    "import_torchvision_state_dict",
    "load_backbone_weights",
    "load_dir",
    "load_into",
    "load_state_dict_file",
    "load_train_state",
    "read_config",
    "read_meta",
    "resolve_checkpoint",
    "save_dir",
    "weights_path",
]

FORMAT_VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "model.pt"
SAFETENSORS_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"

# DeepForest and torchvision's COCO weights expect [0, 1] input then ImageNet
# mean/std inside the model's transform; in raw uint8 units that is:
IMAGENET_BANDS_UINT8 = BandConfig(
    bands=(1, 2, 3),
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for inference plus what describes it.

    Attributes:
        model: RetinaNet in eval mode with the checkpoint's weights.
        config: the model configuration from ``meta.json``.
        checkpoint_id: ``name@sha256[:12]`` of the weights file, written to
            every detection's ``model`` column.
        meta: the whole ``meta.json``.
    """

    model: RetinaNet
    config: ModelConfig
    checkpoint_id: str
    meta: dict[str, Any]


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def unwrap(model: nn.Module) -> nn.Module:
    """Return the model under a DDP/DataParallel wrapper, or the model itself."""
    return model.module if hasattr(model, "module") else model


def save_dir(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: ModelConfig,
    *,
    train_state: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temp dir + rename).

    Args:
        path: the directory to create or replace.
        model: the (possibly DDP-wrapped) model; its unwrapped state_dict is saved.
        config: the configuration the model was built from.
        train_state: optional optimizer/scheduler/epoch state for resuming.
        extra_meta: merged into ``meta.json`` (e.g. metrics, epoch).

    Returns:
        The checkpoint directory.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": config.to_json(),
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
            "git_sha": _git_sha(),
            **(extra_meta or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Find the checkpoint directory for ``path``.

    ``path`` is a checkpoint directory (it holds ``meta.json``) or a training
    run directory written by ``aerialdet train --out RUN``: then ``RUN/best``
    when validation ever wrote it, else ``RUN/last``.

    Returns:
        The checkpoint directory, and a note saying which one was chosen
        (None when ``path`` itself is a checkpoint).

    Raises:
        CheckpointError: when ``path`` is neither.
    """
    ckpt = Path(path)
    if (ckpt / META_FILE).is_file():
        return ckpt, None
    for name, why in (("best", "best validation AP50"), ("last", "last epoch; the run wrote no best/")):
        if (ckpt / name / META_FILE).is_file():
            return ckpt / name, f"using {ckpt / name} ({why})"
    if not ckpt.is_dir():
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} is not a directory; pass a checkpoint directory (holding "
            f"{META_FILE} and {WEIGHTS_FILE}) or a training run written by `aerialdet train --out RUN`"
        )
    raise CheckpointError(
        f"{str(ckpt)!r} holds no {META_FILE}, best/ or last/: it is neither a checkpoint nor a "
        "training run; pass the --out directory of `aerialdet train`, or its best/ or last/"
    )


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``meta.json`` of a checkpoint directory.

    Raises:
        CheckpointError: if the directory or its meta.json is missing or not a
            JSON object of a supported format version.
    """
    ckpt = Path(path)
    meta_path = ckpt / META_FILE
    if not ckpt.is_dir():
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} is not a directory; a checkpoint is a directory holding "
            f"{META_FILE} and {WEIGHTS_FILE} (write one with `aerialdet train`)"
        )
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(ckpt)!r} has no {META_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format_version {version!r} is not supported (this aerialdet reads "
            f"version {FORMAT_VERSION}); upgrade aerialdet or re-export the checkpoint"
        )
    return meta


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The validated ``ModelConfig`` of a checkpoint directory (no weights are read).

    Raises:
        CheckpointError: naming meta.json and the offending field.
    """
    return _config_of(read_meta(path), path)


def _config_of(meta: dict[str, Any], path: str | os.PathLike[str]) -> ModelConfig:
    """The ``ModelConfig`` in an already read ``meta.json`` of checkpoint ``path``."""
    if "config" not in meta:
        raise CheckpointError(f"{Path(path) / META_FILE}: has no 'config' object; re-export the checkpoint")
    try:
        return ModelConfig.from_json(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(path) / META_FILE}: invalid model config: {exc}") from None


def _torch_load(file: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "not an allowed global" in text or "This file can still be loaded" in text:
            raise CheckpointError(
                f"{file}: refused to load, it carries a pickle payload beyond tensors. Only load "
                "checkpoints you trust; re-save the state_dict alone with torch.save(model.state_dict())"
            ) from None
        raise CheckpointError(
            f"{file}: not a readable torch file (corrupt, truncated or another format); "
            "re-copy it or re-export the checkpoint"
        ) from None
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{file}: cannot read weights ({first}); re-copy it or re-export it") from None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a tensors-only state dict from ``.pt``/``.pth``/``.ckpt`` or ``.safetensors``.

    A Lightning ``.ckpt`` (``{"state_dict": ...}``) yields its ``state_dict``.

    Raises:
        CheckpointError: if the file carries pickled objects other than tensors
            and plain containers, or cannot be read.
    """
    file = Path(path)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file)))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None
    loaded = _torch_load(file)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{file}: expected a state dict of tensors, got {type(loaded).__name__}")
    return loaded


def weights_path(ckpt: str | os.PathLike[str]) -> Path:
    """The weights file of a checkpoint directory (``model.pt`` or ``model.safetensors``).

    Raises:
        CheckpointError: if there is neither.
    """
    for name in (WEIGHTS_FILE, SAFETENSORS_FILE):
        if (Path(ckpt) / name).is_file():
            return Path(ckpt) / name
    raise CheckpointError(f"checkpoint {str(ckpt)!r} has neither {WEIGHTS_FILE} nor {SAFETENSORS_FILE}")


def checkpoint_id(ckpt: str | os.PathLike[str]) -> str:
    """``name@sha256[:12]`` of a checkpoint's weights: written to every detection's ``model`` column."""
    digest = hashlib.sha256()
    with weights_path(ckpt).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{Path(ckpt).resolve().name}@{digest.hexdigest()[:12]}"


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatch.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:3]}")
        if missing:
            parts.append(f"{len(missing)} keys missing from the weights, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        raise CheckpointError(
            f"{source}: weights do not match the model config ({'; '.join(parts)}). "
            "Check class_names, backbone, anchors and band count in meta.json"
        )
    model.load_state_dict(state, strict=True)


def load_dir(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint directory into a model in eval mode.

    Args:
        path: checkpoint directory written by ``save_dir`` (or ``aerialdet train``).
        device: where to put the model.

    Returns:
        ``LoadedCheckpoint`` with the model, its config and an id.

    Raises:
        CheckpointError: missing files, unsafe pickle, or config/weights mismatch.

    Example:
        >>> ckpt = load_dir("runs/demo/best")  # doctest: +SKIP
        >>> ckpt.config.class_names  # doctest: +SKIP
        ('vehicle', 'building', 'tree')
    """
    ckpt = Path(path)
    meta = read_meta(ckpt)
    config = _config_of(meta, ckpt)
    weights = weights_path(ckpt)
    state = load_state_dict_file(weights)
    model = build_model(config)
    load_into(model, state, str(weights))
    model.to(device).eval()
    return LoadedCheckpoint(model, config, checkpoint_id(ckpt), meta)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the optimizer/scheduler/epoch state saved beside the weights, if any."""
    file = Path(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    state = _torch_load(file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of training state, got {type(state).__name__}")
    return state


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
        backbone="resnet50",
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
        cfg = json.loads(config_json.read_text())
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
