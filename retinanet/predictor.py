"""The model loader the detect pipeline runs: a checkpoint directory -> RetinaNet.

``pipeline`` never imports ``retinanet``; ``jobs/detect.py`` builds a
``CheckpointLoader`` here and hands it to the Ray stage, whose actors call
``load(device)``.  ``CheckpointLoader.open`` loads the weights once on the
driver before any actor starts, so a broken checkpoint fails in one line
before the run, not in every actor.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from torchvision.models.detection.retinanet import RetinaNet

from pipeline.detection import ModelInfo
from retinanet.checkpoint import check_dir, load_dir, resolve_checkpoint
from retinanet.errors import CheckpointError


def recommended_overlap(meta: dict[str, Any], source: str) -> int | None:
    """The tile overlap a checkpoint recommends: ``meta.json`` ``largest_object_px`` rounded up.

    Raises:
        CheckpointError: when it is there but not a positive number.
    """
    raw = meta.get("largest_object_px")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw <= 0:
        raise CheckpointError(f"{source}/meta.json: largest_object_px must be a positive number, got {raw!r}")
    return math.ceil(raw)


def calibrated_thresholds(
    meta: dict[str, Any], class_names: tuple[str, ...], source: str
) -> tuple[float, ...] | None:
    """Per-class best-F1 scores from ``meta.json`` (``score_thresholds``), in label-id order.

    Classes the calibration did not see keep every detection (0.0).  None
    when the checkpoint has no calibration.

    Raises:
        CheckpointError: when ``score_thresholds`` is not a mapping of class
            names to numbers in [0, 1].
    """
    from retinanet.checkpoint import check_score_thresholds

    raw = meta.get("score_thresholds")
    if raw is None:
        return None
    raw = check_score_thresholds(raw, class_names, f"{source}/meta.json")  # the one check
    return tuple(float(raw.get(name, 0.0)) for name in class_names)


@dataclass(frozen=True)
class CheckpointLoader:
    """``pipeline.detection.ModelLoader`` for a checkpoint directory.

    Attributes:
        checkpoint_dir: the checkpoint directory (already resolved).
        info: model id, class names and bands from ``meta.json``.
        note: which checkpoint a run directory resolved to, or None.
        backend: what runs the network in each actor (``retinanet.backends``).
    """

    checkpoint_dir: str
    info: ModelInfo
    note: str | None = None
    backend: str = "eager"

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CheckpointLoader:
        """Resolve ``path`` (checkpoint or training run) and check that its weights load.

        Raises:
            retinanet.errors.CheckpointError: saying exactly what is wrong.

        Example:
            >>> loader = CheckpointLoader.open("runs/demo")  # doctest: +SKIP
            >>> loader.note  # doctest: +SKIP
            'using runs/demo/best (best validation AP50)'
        """
        ckpt_dir, note = resolve_checkpoint(path)
        loaded = check_dir(ckpt_dir)  # weights' keys and shapes checked on the driver; no model built
        info = ModelInfo(
            model_id=loaded.checkpoint_id,
            class_names=loaded.config.class_names,
            bands=loaded.config.band_config.bands,
            score_thresholds=calibrated_thresholds(loaded.meta, loaded.config.class_names, str(ckpt_dir)),
            min_overlap_px=recommended_overlap(loaded.meta, str(ckpt_dir)),
            gsd_m=loaded.config.gsd_m,
        )
        return cls(str(ckpt_dir), info, note)

    def load(self, device: str) -> RetinaNet:
        """The checkpoint's RetinaNet on ``device``, in eval mode, its network on ``backend``."""
        from retinanet.backends import apply_backend

        return apply_backend(load_dir(self.checkpoint_dir, device=device).model, self.backend)
