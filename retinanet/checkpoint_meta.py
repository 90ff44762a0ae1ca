"""``meta.json`` of a checkpoint directory: read, check and migrate.

``read_meta`` reads the file and checks its ``format_version``;
``read_config`` turns its ``config`` object into a validated ``ModelConfig``.
No weights are read here and torch is not imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from retinanet.config import ModelConfig
from retinanet.errors import CheckpointError

FORMAT_VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "model.pt"
SAFETENSORS_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"


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
    return config_of(read_meta(path), path)


def config_of(meta: dict[str, Any], path: str | os.PathLike[str]) -> ModelConfig:
    """The ``ModelConfig`` in an already read ``meta.json`` of checkpoint ``path``."""
    if "config" not in meta:
        raise CheckpointError(f"{Path(path) / META_FILE}: has no 'config' object; re-export the checkpoint")
    try:
        return ModelConfig.from_json(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(path) / META_FILE}: invalid model config: {exc}") from None
