"""Weight files: tensors-only ``torch.load``, safetensors, and strict loading with named mismatches."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from retinanet.errors import CheckpointError


def torch_load(file: Path) -> Any:
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
    loaded = torch_load(file)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{file}: expected a state dict of tensors, got {type(loaded).__name__}")
    return loaded


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
