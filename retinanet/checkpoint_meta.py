"""``meta.json`` of a checkpoint directory: read, check and migrate.

``read_meta`` reads the file (at most ``MAX_META_BYTES``), migrates an older
``format_version`` step by step through ``_MIGRATIONS`` (torchvision's
``_version`` habit), refuses a newer one, and checks ``score_thresholds``
(``check_score_thresholds``, the one validator of calibrated scores);
``read_config`` turns its ``config`` object into a validated ``ModelConfig``
after capping the sizes that decide how large the model is
(``MAX_CLASSES`` ...), so a hostile ``meta.json`` cannot make ``load_dir``
allocate gigabytes before its weights are compared.  No weights are read
here and torch is not imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retinanet.config import ModelConfig
from retinanet.errors import CheckpointError

FORMAT_VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "model.pt"
SAFETENSORS_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"

# meta.json aerialdet writes is a few KB; a larger file is not one of ours.
MAX_META_BYTES = 1 << 20
# What a config may declare: each cap is far above real use and keeps the
# model small enough to build (400k classes were 33 GB of head weights).
MAX_CLASSES = 1000
MAX_CLASS_NAME_CHARS = 200
MAX_BANDS = 256  # hyperspectral scenes have ~200 bands; the stem conv stays < 4 MB
MAX_ANCHOR_SHAPES = 16  # per list: anchor_scales, aspect_ratios (the paper has 3 each)

Migration = Callable[[dict[str, Any]], dict[str, Any]]
_MIGRATIONS: dict[int, Migration] = {}
"""``format_version`` N -> a function turning a version-N ``meta.json`` into version N+1.

``read_meta`` applies them in order up to ``FORMAT_VERSION`` (and sets the
version after each step).  A ``meta.json`` without ``format_version`` is
version 0: a reader for such files would be registered as ``_MIGRATIONS[0]``.
There is only version 1 today, so the table is empty.
"""


def read_json_object(file: Path, *, max_bytes: int = MAX_META_BYTES) -> dict[str, Any]:
    """A JSON object from ``file``, refused in one line when too large, too deep or not an object.

    Raises:
        CheckpointError: naming the file and the problem.
    """
    size = file.stat().st_size
    if size > max_bytes:
        raise CheckpointError(
            f"{file}: {size} bytes, more than the {max_bytes} bytes this file may hold; "
            "it is not one aerialdet wrote: re-export the checkpoint"
        )
    try:
        data = json.loads(file.read_bytes())
    except RecursionError:
        raise CheckpointError(f"{file}: {file.name} is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{file}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def migrate(meta: dict[str, Any], meta_path: Path) -> dict[str, Any]:
    """``meta`` at ``FORMAT_VERSION``: older versions migrated step by step, newer ones refused.

    Raises:
        CheckpointError: a version that is not an integer, newer than this
            code, or older without a migration.
    """
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{meta_path}: format_version must be an integer >= 0, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: format_version {version} was written by a newer aerialdet (this one reads "
            f"versions up to {FORMAT_VERSION}): upgrade aerialdet"
        )
    while version < FORMAT_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            found = "no format_version" if "format_version" not in meta else f"format_version {version}"
            raise CheckpointError(
                f"{meta_path}: {found}, and this aerialdet has no migration from version {version} to "
                f"{version + 1}; re-export the checkpoint with the aerialdet that wrote it"
            )
        meta = {**step(dict(meta)), "format_version": version + 1}
        version += 1
    return meta


def check_score_thresholds(raw: Any, class_names: Sequence[str], source: str) -> dict[str, float]:
    """Validate calibrated per-class scores (``meta.json``'s ``score_thresholds``).

    The one check every reader calls: a mapping of the checkpoint's class
    names to numbers in [0, 1]; bools (``true`` is not 1.0), NaN, numbers
    outside [0, 1], unknown class names and more entries than classes are
    refused.  Classes left out are not calibrated.

    Args:
        raw: the ``score_thresholds`` value.
        class_names: the checkpoint's classes.
        source: the checkpoint (directory or meta.json), for the message.

    Returns:
        ``{class name: score}``.

    Raises:
        CheckpointError: naming ``source``, ``score_thresholds`` and the offending value.
    """
    where = f"{source}: score_thresholds"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where} must map class names to scores in [0, 1], got {raw!r}")
    if len(raw) > len(class_names):
        raise CheckpointError(
            f"{where} has {len(raw)} entries for {len(class_names)} classes; one score per class at most"
        )
    for name, value in raw.items():
        if name not in class_names:
            raise CheckpointError(f"{where} names {name!r}, not a class of the model ({list(class_names)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            # `not 0 <= nan <= 1` holds: NaN is refused here too
            raise CheckpointError(f"{where}[{name!r}] must be a number in [0, 1], got {value!r}")
    return {str(k): float(v) for k, v in raw.items()}


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read, migrate and check ``meta.json`` of a checkpoint directory.

    Raises:
        CheckpointError: if the directory or its meta.json is missing, too
            large, not a JSON object, of a format version this code cannot
            read, or holds invalid ``score_thresholds``.
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
    meta = migrate(read_json_object(meta_path), meta_path)
    config = meta.get("config")
    names = config.get("class_names") if isinstance(config, dict) else None
    if "score_thresholds" in meta and isinstance(names, list):  # else config_of refuses the config
        check_score_thresholds(meta["score_thresholds"], names, str(meta_path))
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
    _check_sizes(meta["config"], Path(path) / META_FILE)
    try:
        return ModelConfig.from_json(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(path) / META_FILE}: invalid model config: {exc}") from None


def _check_sizes(config: Any, meta_path: Path) -> None:
    """Refuse a config that declares more classes, bands or anchors than a model may have.

    Other shapes and types are left to ``ModelConfig.from_json``.
    """
    if not isinstance(config, dict):
        return
    names = config.get("class_names")
    if isinstance(names, list):
        if len(names) > MAX_CLASSES:
            raise CheckpointError(
                f"{meta_path}: config.class_names holds {len(names)} classes, more than the "
                f"{MAX_CLASSES} a model may have; this is not a checkpoint aerialdet can load"
            )
        for name in names:
            if isinstance(name, str) and len(name) > MAX_CLASS_NAME_CHARS:
                raise CheckpointError(
                    f"{meta_path}: config.class_names has a name of {len(name)} characters "
                    f"({name[:40]!r}...); at most {MAX_CLASS_NAME_CHARS}"
                )
    bands = config.get("band_config")
    lists = (
        {f"band_config.{k}": bands.get(k) for k in ("bands", "mean", "std")}
        if isinstance(bands, dict)
        else {}
    )
    caps = {
        **dict.fromkeys(lists, MAX_BANDS),
        "anchor_scales": MAX_ANCHOR_SHAPES,
        "aspect_ratios": MAX_ANCHOR_SHAPES,
    }
    values = {
        **lists,
        "anchor_scales": config.get("anchor_scales"),
        "aspect_ratios": config.get("aspect_ratios"),
    }
    for key, value in values.items():
        if isinstance(value, list) and len(value) > caps[key]:
            raise CheckpointError(
                f"{meta_path}: config.{key} holds {len(value)} values, more than {caps[key]}; "
                "this is not a checkpoint aerialdet can load"
            )
