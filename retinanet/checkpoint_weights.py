"""Weight files: tensors-only ``torch.load``, safetensors, and strict loading with named mismatches.

``torch_load`` refuses a pickled object other than tensors (torch's
``weights_only`` loader) and says so, apart from a corrupt file;
``check_declared_sizes`` compares what ``meta.json`` declares (classes,
anchors, bands) with the weights' tensor shapes before a model is built, so
a config that does not fit its weights costs no allocation.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from retinanet.config import Backbone, ModelConfig
from retinanet.errors import CheckpointError

# What torch's weights_only unpickler names when it refuses an object
# (torch/_weights_only_unpickler.py); any other UnpicklingError is a corrupt file.
_REFUSED_PATTERNS = (
    r"GLOBAL (\S+) was not an allowed global",
    r"GLOBAL (\S+) whose module \S+ is blocked",
    r"unrecognized function (\S+)",
    r"Can only (?:create new object|build) .* but got (.+)$",
    r"``(torch\.\S+)`` must be imported to load",
)


def _refused_name(message: str) -> str | None:
    """The global torch's ``weights_only`` loader refused, or None when the message is not a refusal."""
    for pattern in _REFUSED_PATTERNS:
        found = re.search(pattern, message, re.MULTILINE)
        if found:
            return found.group(1).rstrip(".")
    return None


def torch_load(file: Path, *, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file.

    Args:
        file: the ``.pt``/``.pth``/``.ckpt`` file.
        mmap: map the tensors from the file instead of reading them (files
            in torch's zip format; older ones are read as before).

    Raises:
        CheckpointError: the file holds a pickled object other than tensors
            (refused), or is corrupt, truncated or of another format.
    """
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not (mmap and "mmap can only be used" in str(exc)):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_name(str(exc))
        if refused is not None:
            raise CheckpointError(
                f"{file}: refused: {file.name} holds a pickled object other than tensors (weights_only "
                f"loading refused {refused}); aerialdet loads only plain state dicts. Load only checkpoints "
                "you trust, and re-save the state dict alone with torch.save(model.state_dict())"
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


def load_state_dict_file(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a tensors-only state dict from ``.pt``/``.pth``/``.ckpt`` or ``.safetensors``.

    A Lightning ``.ckpt`` (``{"state_dict": ...}``) yields its ``state_dict``.
    With ``mmap`` a torch file's tensors are mapped, not read: their shapes
    cost nothing until the data is used.

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
    loaded = torch_load(file, mmap=mmap)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{file}: expected a state dict of tensors, got {type(loaded).__name__}")
    return loaded


def _mismatch_message(source: str, shapes: list[str], missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:3]}")
    if missing:
        parts.append(f"{len(missing)} keys missing from the weights, e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    return (
        f"{source}: weights do not match the model config ({'; '.join(parts)}). "
        "Check class_names, backbone, anchors and band count in meta.json"
    )


def check_declared_sizes(state: dict[str, torch.Tensor], config: ModelConfig, source: str) -> None:
    """Compare the sizes ``config`` declares with the weights' shapes, before any model is built.

    The classifier's ``cls_logits`` has num_anchors x num_classes output
    rows, the box head num_anchors x 4, and the stem conv one input channel
    per band.  Reading ``.shape`` of (memory-mapped) tensors costs nothing, so
    a ``meta.json`` that declares 400k classes is refused here instead of
    allocating their head.  Keys absent from ``state`` are left to ``load_into``.

    Raises:
        CheckpointError: naming the weights file, the tensor and what meta.json declares.
    """
    anchors, classes = config.num_anchors_per_location, config.num_classes
    stem = (
        "backbone.body.0.0.weight"
        if config.backbone is Backbone.MOBILENET_V3_LARGE
        else "backbone.body.conv1.weight"
    )
    declared = {  # key: (dimension, size, what meta.json says)
        "head.classification_head.cls_logits.weight": (
            0,
            anchors * classes,
            f"{anchors} anchors x {classes} classes",
        ),
        "head.regression_head.bbox_reg.weight": (0, anchors * 4, f"{anchors} anchors x 4"),
        stem: (1, config.band_config.num_channels, f"{config.band_config.num_channels} bands"),
    }
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs config {what} = {size} in dimension {dim}"
        for key, (dim, size, what) in declared.items()
        if key in state and (state[key].dim() <= dim or state[key].shape[dim] != size)
    ]
    if shapes:
        raise CheckpointError(_mismatch_message(source, shapes, [], []))


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the mismatch.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    check_matches(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)


def check_matches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """The keys and shapes of ``state`` are those of a model's ``own`` state dict (a meta-device one will do).

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(_mismatch_message(source, shapes, missing, unexpected))
