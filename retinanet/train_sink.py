"""The run directory a training run writes: ``last/``, ``best/``, ``metrics.jsonl``, ``training.png``.

``CheckpointSink`` is what the plain loop (``retinanet.fit``) writes its
epochs through on rank 0; ``RunDirectory`` is the one it uses, over
``TrainSpec.out_dir``.  ``write_epoch`` also returns the epoch's checkpoint
to report (under a temporary directory): the trained weights with the
optimizer, RNG and epoch state that resuming reads.  Plain torch, no Ray.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from retinanet.checkpoint import save_dir
from retinanet.train_report import METRICS_FILE, NO_BEST_FILE, PLOT_FILE, plot_metrics, read_metrics

if TYPE_CHECKING:
    import torch

    from retinanet.config import ModelConfig
    from retinanet.train_spec import TrainSpec


class CheckpointSink(Protocol):
    """Where rank 0 writes the epochs a user reads: ``last/``, ``best/``, ``metrics.jsonl``."""

    def trim(self, start_epoch: int) -> None:
        """Forget epochs logged from ``start_epoch`` on (their checkpoints were never committed)."""

    def write_epoch(
        self,
        model: torch.nn.Module,
        metrics: dict[str, Any],
        train_state: dict[str, Any],
        tmp: Path,
        *,
        evaluated: torch.nn.Module | None = None,
    ) -> tuple[Path, float]:
        """Write an evaluated epoch; (checkpoint directory under ``tmp`` to report, best AP50 so far)."""


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the per-class tables (what ``report`` and ``meta.json`` carry)."""
    return {k: v for k, v in metrics.items() if k not in ("val_per_class", "score_thresholds", "calibration")}


def write_epoch(
    out_dir: Path,
    model: torch.nn.Module,
    config: ModelConfig,
    metrics: dict[str, Any],
    train_state: dict[str, Any],
    tmp: Path,
    run_meta: dict[str, Any] | None = None,
    *,
    evaluated: torch.nn.Module | None = None,
) -> tuple[Path, float]:
    """Rank 0's files of an evaluated epoch (plain torch, no Ray).

    Writes ``last/``; ``best/`` when validation AP50 improved on every epoch
    before and is above 0 (AP50 -1: no validation boxes, 0: nothing found,
    cannot rank epochs), with the best-F1 ``score_thresholds`` per class in
    its ``meta.json``; while there is no ``best/``, ``NO_BEST_FILE`` saying
    why; a line of ``metrics.jsonl``; the plot.
    ``best/`` and ``last/`` hold ``evaluated`` (the weight average of
    ``TrainConfig.ema_half_life_steps``) when given, else ``model``.

    Returns:
        (checkpoint directory of this epoch under ``tmp``, with ``model``'s
        weights and ``train_state`` to resume from; best AP50 so far).
    """
    # AP50 0 (nothing of the trained classes found) or -1 (no validation boxes) cannot rank epochs
    improved = metrics["val_ap50"] > max(0.0, train_state["best_ap50"])
    train_state = {**train_state, "best_ap50": max(train_state["best_ap50"], metrics["val_ap50"])}
    extra = {**(run_meta or {}), "epoch": metrics["epoch"], "metrics": scalars(metrics)}
    if "score_thresholds" in metrics:
        extra.update(score_thresholds=metrics["score_thresholds"], calibration=metrics.get("calibration"))
    ckpt_dir = save_dir(tmp / "ckpt", model, config, train_state=train_state, extra_meta=extra)
    # last/'s train_state is for reading (epoch, step, RNG, the optimizer of the trained weights);
    # resuming reads the reported checkpoint, whose weights are the trained ones
    last_state = {k: v for k, v in train_state.items() if k != "average"}
    kept = model if evaluated is None else evaluated
    save_dir(out_dir / "last", kept, config, train_state=last_state, extra_meta=extra)
    if improved:
        save_dir(out_dir / "best", kept, config, extra_meta=extra)
    _note_no_best(out_dir, metrics)
    with (out_dir / METRICS_FILE).open("a") as f:
        f.write(json.dumps({**metrics, "best_saved": improved, "time": time.time()}) + "\n")
    plot_metrics(out_dir / METRICS_FILE, out_dir / PLOT_FILE)
    return ckpt_dir, train_state["best_ap50"]


def _note_no_best(out_dir: Path, metrics: dict[str, Any]) -> None:
    """Say in ``NO_BEST_FILE`` why there is no ``best/`` yet (detect then uses ``last/``); drop it once there is."""
    note = out_dir / NO_BEST_FILE
    if (out_dir / "best").is_dir():
        note.unlink(missing_ok=True)
    elif metrics.get("val_num_gt", 0) == 0 or metrics["val_ap50"] < 0:
        note.write_text(
            "the validation images hold no boxes of the trained classes, so AP50 was never measured; "
            "give validation labels with --val to keep the best epoch\n"
        )
    else:
        note.write_text(
            f"validation AP50 was 0.000 at every epoch ({metrics['val_num_gt']} validation boxes, none "
            "found), so it could not rank the epochs; check that the validation labels name the trained "
            "classes (--map, --classes)\n"
        )


def _run_meta(spec: TrainSpec) -> dict[str, Any]:
    """What every checkpoint of the run records besides its epoch: detect's overlap hint, the weight average."""
    meta: dict[str, Any] = {}
    if spec.largest_object_px:
        meta["largest_object_px"] = spec.largest_object_px
    meta.update(spec.input_kind)  # the pixel kind detect checks scenes against
    if spec.train.ema_half_life_steps is not None:
        meta["weights"] = f"moving average, half-life {spec.train.ema_half_life_steps} steps"
    return meta


class RunDirectory:
    """The ``CheckpointSink`` of a run directory (``spec.out_dir``): ``write_epoch`` and the metrics trim.

    Args:
        spec: the run; its ``out_dir`` receives the files, its model config
            and run metadata go into every checkpoint.
    """

    def __init__(self, spec: TrainSpec) -> None:
        self.out_dir = Path(spec.out_dir)
        self.config = spec.model
        self.run_meta = _run_meta(spec)

    def trim(self, start_epoch: int) -> None:
        """Drop logged epochs from ``start_epoch`` on.

        A failed attempt may have logged an epoch whose checkpoint was never
        committed; that epoch is now run again.
        """
        metrics_path = self.out_dir / METRICS_FILE
        if metrics_path.exists():
            kept = [row for row in read_metrics(metrics_path) if row["epoch"] < start_epoch]
            metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def write_epoch(
        self,
        model: torch.nn.Module,
        metrics: dict[str, Any],
        train_state: dict[str, Any],
        tmp: Path,
        *,
        evaluated: torch.nn.Module | None = None,
    ) -> tuple[Path, float]:
        """``write_epoch`` into this run directory."""
        return write_epoch(
            self.out_dir, model, self.config, metrics, train_state, tmp, self.run_meta, evaluated=evaluated
        )
