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

The parts live in three modules, re-exported here (import from
``retinanet.checkpoint``): ``retinanet.checkpoint_meta`` reads and checks
``meta.json``; ``retinanet.checkpoint_weights`` reads weight files and loads
them strictly; ``retinanet.checkpoint_import`` imports torchvision RetinaNet,
DeepForest and ResNet backbone weights (``aerialdet import``, ``aerialdet
train --init FILE`` / ``--backbone-weights``).
"""

from __future__ import annotations

import hashlib
import json
import os
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

from retinanet.checkpoint_import import (
    IMAGENET_BANDS_UINT8,
    import_deepforest,
    import_model,
    import_torchvision_state_dict,
    load_backbone_weights,
)
from retinanet.checkpoint_meta import (
    FORMAT_VERSION,
    MAX_CLASSES,
    META_FILE,
    SAFETENSORS_FILE,
    TRAIN_STATE_FILE,
    WEIGHTS_FILE,
    check_score_thresholds,
    config_of,
    read_config,
    read_meta,
)
from retinanet.checkpoint_weights import (
    check_declared_sizes,
    check_matches,
    load_into,
    load_state_dict_file,
    torch_load,
)
from retinanet.config import ModelConfig
from retinanet.errors import CheckpointError
from retinanet.model import build_model

__all__ = [
    "FORMAT_VERSION",
    "IMAGENET_BANDS_UINT8",
    "MAX_CLASSES",
    "META_FILE",
    "SAFETENSORS_FILE",
    "TRAIN_STATE_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "LoadedCheckpoint",
    "check_declared_sizes",
    "check_score_thresholds",
    "checkpoint_id",
    "import_deepforest",
    "import_model",
    "import_torchvision_state_dict",
    "load_backbone_weights",
    "CheckedCheckpoint",
    "check_dir",
    "load_dir",
    "load_into",
    "load_state_dict_file",
    "load_train_state",
    "read_config",
    "read_meta",
    "resolve_checkpoint",
    "save_dir",
    "unwrap",
    "weights_path",
]


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
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


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


def _no_best_reason(run: Path, chosen: str) -> str:
    """``: <why>`` when ``last/`` was chosen and the run said why it has no best/ (``train_report``)."""
    from retinanet.train_report import no_best_reason

    reason = no_best_reason(run) if chosen == "last" else None
    return f": {reason}" if reason else ""


def resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Find the checkpoint directory for ``path``.

    ``path`` is a checkpoint directory (it holds ``meta.json``) or a training
    run directory written by ``aerialdet train --out RUN``: then ``RUN/best``
    when validation ever wrote it, else ``RUN/last`` (the note then gives the
    run's reason, ``train_report.NO_BEST_FILE``).

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
            return ckpt / name, f"using {ckpt / name} ({why}{_no_best_reason(ckpt, name)})"
    if not ckpt.is_dir():
        raise CheckpointError(
            f"checkpoint {str(ckpt)!r} is not a directory; pass a checkpoint directory (holding "
            f"{META_FILE} and {WEIGHTS_FILE}) or a training run written by `aerialdet train --out RUN`"
        )
    raise CheckpointError(
        f"{str(ckpt)!r} holds no {META_FILE}, best/ or last/: it is neither a checkpoint nor a "
        "training run; pass the --out directory of `aerialdet train`, or its best/ or last/"
    )


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
    config = config_of(meta, ckpt)
    weights = weights_path(ckpt)
    state = load_state_dict_file(weights, mmap=True)
    check_declared_sizes(state, config, str(weights))  # before meta.json's sizes allocate a model
    model = build_model(config)
    load_into(model, state, str(weights))
    model.to(device).eval()
    return LoadedCheckpoint(model, config, checkpoint_id(ckpt), meta)


@dataclass(frozen=True)
class CheckedCheckpoint:
    """A checkpoint directory whose weights were checked against its config, without a model built.

    Attributes:
        config: the model configuration from ``meta.json``.
        checkpoint_id: stable id of the weights.
        meta: the parsed ``meta.json``.
    """

    config: ModelConfig
    checkpoint_id: str
    meta: dict[str, Any]


def check_dir(path: str | os.PathLike[str]) -> CheckedCheckpoint:
    """Check a checkpoint directory as ``load_dir`` would, without building its model in memory.

    The weights are memory-mapped and their keys and shapes compared with a
    model built on torch's ``meta`` device (shapes, no storage): what the
    driver of a detect run needs to refuse a broken checkpoint in one line
    before any actor starts, at a fraction of ``load_dir``'s memory and time.

    Raises:
        CheckpointError: missing files, unsafe pickle, or config/weights mismatch.
    """
    ckpt = Path(path)
    meta = read_meta(ckpt)
    config = config_of(meta, ckpt)
    weights = weights_path(ckpt)
    state = load_state_dict_file(weights, mmap=True)
    check_declared_sizes(state, config, str(weights))
    with torch.device("meta"):
        expected = build_model(config).state_dict()
    check_matches(expected, state, str(weights))
    return CheckedCheckpoint(config, checkpoint_id(ckpt), meta)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the optimizer/scheduler/epoch state saved beside the weights, if any."""
    file = Path(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    state = torch_load(file)
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of training state, got {type(state).__name__}")
    return state
