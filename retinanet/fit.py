"""The training run of one worker as a plain loop: resume or init, epochs, validate, checkpoint.

``fit(spec, data, reporter)`` is what every Ray Train worker runs
(``retinanet.ray_train`` only adapts it) and what a test runs in-process:

1. seed, build the model, and start from the checkpoint to resume
   (``resume``: a directory or anything with ``as_directory()``, e.g. a
   ``ray.train.Checkpoint``), else from ``--init`` weights or the backbone
   weights (``resume_or_init``);
2. ``Worker.prepare_model`` / ``Worker.prepare_loader`` place the model and
   the training loader (Ray Train's DDP and device placement; unchanged in-process);
3. every epoch: ``train_loop.train_one_epoch``; rank 0 validates and writes
   the epoch through a ``CheckpointSink`` (``RunDirectory``: ``last/``,
   ``best/``, ``metrics.jsonl``, ``training.png``) and every rank calls
   ``Reporter.report`` with the epoch's metrics (rank 0 with the checkpoint
   directory to commit, which resuming continues from).

No ``ray`` import here.  A resumed run reproduces an uninterrupted one: the
data order and every augmentation are drawn from (seed, epoch, sample), and
the checkpoint holds the optimizer, the global RNG states, the epoch, the
step and the weight average.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from retinanet.checkpoint import load_dir, load_train_state, unwrap
from retinanet.config import ModelConfig
from retinanet.train_sink import CheckpointSink, RunDirectory, scalars
from retinanet.train_spec import TrainSpec

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from retinanet.labeled_tiles import TrainData

logger = logging.getLogger(__name__)


class Reporter(Protocol):
    """Told about every epoch, on every rank (Ray Train: ``ray.train.report``)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Called once per epoch with its scalar metrics.

        Args:
            metrics: the epoch's scalars (no per-class tables).
            checkpoint_dir: on rank 0, the epoch's checkpoint to commit (model,
                optimizer, RNG and epoch state: what ``resume`` reads); None on
                the other ranks.  It is deleted when ``report`` returns.
        """


class Resumable(Protocol):
    """A checkpoint that can be opened as a local directory (``ray.train.Checkpoint`` is one)."""

    def as_directory(self) -> contextlib.AbstractContextManager[str]:
        """A context whose value is the checkpoint's local directory."""


def _unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Worker:
    """Which worker runs the loop, and how its model and training loader are placed.

    Attributes:
        rank: this worker's rank (rank 0 validates and writes the checkpoints).
        world_size: number of workers (the training tiles are sharded by rank).
        device: where to train and validate.
        prepare_model: wraps the model (Ray Train: ``prepare_model``, DDP).
        prepare_loader: wraps the training loader (Ray Train: ``prepare_data_loader``).
    """

    rank: int = 0
    world_size: int = 1
    device: Any = "cpu"
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = _unchanged
    prepare_loader: Callable[[DataLoader[Any]], DataLoader[Any]] = _unchanged


def init_from_checkpoint(model: torch.nn.Module, config: ModelConfig, ckpt_dir: str) -> list[str]:
    """Load ``ckpt_dir`` weights into ``model`` for fine-tuning.

    Classes are matched by name: rows of the classification layer for
    classes the checkpoint knows are copied, new classes keep their prior
    initialisation.  Returns the class names carried over.
    """
    old = load_dir(ckpt_dir)
    state = old.model.state_dict()
    own = model.state_dict()
    key_w, key_b = "head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"
    num_anchors = config.num_anchors_per_location
    old_k, new_k = old.config.num_classes, config.num_classes
    carried = [n for n in config.class_names if n in old.config.class_names]
    w_new, b_new = own[key_w].clone(), own[key_b].clone()
    w_old, b_old = state[key_w], state[key_b]
    for name in carried:
        i_new, i_old = config.class_names.index(name), old.config.class_names.index(name)
        for a in range(num_anchors):  # layout: (anchor, class) flattened as a * K + k
            w_new[a * new_k + i_new] = w_old[a * old_k + i_old]
            b_new[a * new_k + i_new] = b_old[a * old_k + i_old]
    state = {**state, key_w: w_new, key_b: b_new}
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        from retinanet.checkpoint import CheckpointError

        raise CheckpointError(
            f"{ckpt_dir}: cannot fine-tune from it, its network differs beyond the class list ({missing[:3]}); "
            "use the same --backbone and band count"
        )
    model.load_state_dict(state)
    return carried


@dataclass
class Start:
    """Where a worker starts: epoch, step, best AP50 so far, optimizer and RNG state."""

    epoch: int = 0
    global_step: int = 0
    best_ap50: float = -1.0
    optimizer_state: dict[str, Any] | None = None
    resumed_from: int | None = None
    rng: dict[str, Any] | None = None
    average: dict[str, Any] | None = None


def _opened(resume: Resumable | str | os.PathLike[str]) -> contextlib.AbstractContextManager[str]:
    # as_directory first: ray.train.Checkpoint defines __fspath__ (to raise), so it passes for os.PathLike
    if hasattr(resume, "as_directory"):
        return resume.as_directory()
    return contextlib.nullcontext(os.fspath(resume))


def resume_or_init(
    model: torch.nn.Module, spec: TrainSpec, resume: Resumable | str | os.PathLike[str] | None
) -> Start:
    """Load the checkpoint to ``resume`` into ``model``, else the ``--init`` (or backbone) weights."""
    if resume is None:
        if spec.init_checkpoint:
            carried = init_from_checkpoint(model, spec.model, spec.init_checkpoint)
            logger.info("fine-tuning from %s; classes carried over: %s", spec.init_checkpoint, carried)
        elif spec.backbone_weights:
            from retinanet.checkpoint import load_backbone_weights

            load_backbone_weights(model, spec.backbone_weights)
        return Start()
    with _opened(resume) as d:
        model.load_state_dict(load_dir(d).model.state_dict())
        state = load_train_state(d) or {}
    epoch = int(state.get("epoch", -1)) + 1
    logger.info("resuming from the checkpoint of epoch %d (step %s)", epoch - 1, state.get("global_step"))
    return Start(
        epoch=epoch,
        global_step=int(state.get("global_step", 0)),
        best_ap50=float(state.get("best_ap50", -1.0)),
        optimizer_state=state.get("optimizer"),
        resumed_from=epoch - 1,
        rng=state.get("rng"),
        average=state.get("average"),
    )


def make_loaders(
    spec: TrainSpec, data: TrainData, rank: int = 0, world_size: int = 1
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Training loader (random tiles of every image, this worker's share, augmented) and validation loader."""
    from torch.utils.data import DataLoader

    from retinanet.augment import OverheadAugment
    from retinanet.labeled_tiles import (
        EpochSampler,
        LabeledTiles,
        TileSampling,
        TrainingTiles,
        collate,
        grid_tiles,
    )
    from retinanet.train_loop import min_epoch_tiles

    bands = spec.model.band_config.bands
    tile = spec.model.tile_size_px
    sampling = TileSampling(tile_size_px=tile, scale_range=spec.train.scale_range)
    augment = OverheadAugment() if spec.train.augment else None
    min_tiles = min_epoch_tiles(spec.train, world_size)
    tiles = TrainingTiles(data.train, bands, sampling, augment, seed=spec.train.seed, min_tiles=min_tiles)
    sampler = EpochSampler(len(tiles), rank=rank, num_replicas=world_size, seed=spec.train.seed)
    loader = DataLoader(tiles, batch_size=spec.train.batch_size, sampler=sampler, collate_fn=collate)
    val_loader = DataLoader(
        LabeledTiles(grid_tiles(data.val, tile), bands), batch_size=spec.train.batch_size, collate_fn=collate
    )
    return loader, val_loader


def _evaluate(model: torch.nn.Module, val_loader: Any, spec: TrainSpec, device: Any) -> dict[str, Any]:
    """Validation metrics of the epoch (AP50 -1 when the validation images hold no boxes)."""
    from retinanet.train_loop import evaluate_model

    ev = evaluate_model(
        unwrap(model),
        val_loader,
        spec.model.class_names,
        score_threshold=spec.train.score_threshold,
        device=device,
        calibration_iou=spec.train.calibration_iou,
    )
    calibration = ev.pop("calibration")
    overall = ev["overall"]
    return {
        "score_thresholds": {name: c["score_threshold"] for name, c in calibration.items()},
        "calibration": {"iou": spec.train.calibration_iou, "per_class": calibration},
        "val_map": overall["map"],
        "val_ap50": overall["ap50"],
        "val_precision": overall["precision"],
        "val_recall": overall["recall"],
        "val_num_gt": int(overall.get("num_gt", 0)),
        "val_per_class": {k: v for k, v in ev.items() if k != "overall"},
    }


def close_epoch(
    trainees: tuple[torch.nn.Module, torch.optim.Optimizer, Any],
    val_loader: Any,
    spec: TrainSpec,
    metrics: dict[str, Any],
    best: float,
    tmp: Path,
    device: Any,
    sink: CheckpointSink | None = None,
) -> tuple[Path, float]:
    """Rank 0 at the end of an epoch: validate (the weight average, if kept) and write the epoch.

    ``trainees`` is (model, optimizer, weight average or None); validation's
    figures are added to the epoch's ``metrics``; ``best`` is the best
    validation AP50 before this epoch; ``sink`` defaults to the run
    directory.  Returns the sink's (checkpoint directory to report, best AP50
    so far).
    """
    from retinanet.train_loop import rng_state

    model, optimizer, average = trainees
    evaluated = None if average is None else average.module
    metrics.update(_evaluate(model if evaluated is None else evaluated, val_loader, spec, device))
    state = {
        "optimizer": optimizer.state_dict(),
        "epoch": metrics["epoch"],
        "global_step": metrics["global_step"],
        "best_ap50": best,
        "rng": rng_state(),
        "average": None if average is None else average.state_dict(),
    }
    sink = RunDirectory(spec) if sink is None else sink
    return sink.write_epoch(unwrap(model), metrics, state, tmp, evaluated=evaluated)


def _epoch_metrics(epoch: int, result: dict[str, float], start: Start) -> dict[str, Any]:
    """The epoch's line of ``metrics.jsonl`` before validation adds its figures."""
    return {
        "epoch": epoch,
        "global_step": int(result["global_step"]),
        **{k: result[k] for k in ("loss", "classification", "bbox_regression")},
        "epoch_seconds": result["seconds"],
        "resumed_from_epoch": start.resumed_from,
    }


def _loader_epochs(loader: Any, spec: TrainSpec, start: Start) -> Iterator[tuple[int, int]]:
    """(epoch, total steps) of each epoch still to run; the sampler is set to the epoch first."""
    from retinanet.train_loop import epochs_to_run

    cap = spec.train.max_steps_per_epoch
    per_epoch = max(1, len(loader) if cap is None else min(len(loader), cap))
    total_steps = spec.train.total_steps or per_epoch * spec.train.epochs
    for epoch in epochs_to_run(start.epoch, start.global_step, total_steps, per_epoch):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield epoch, total_steps


def train_epochs(
    trainees: tuple[torch.nn.Module, torch.optim.Optimizer],
    loaders: tuple[Any, Any],
    spec: TrainSpec,
    start: Start,
    worker: Worker,
    reporter: Reporter,
    sink: CheckpointSink | None,
) -> None:
    """Epochs ``start.epoch`` .. the last: train, validate and write (rank 0), report.

    Rank 0 keeps the weight average when the run asks for one
    (``train_loop.weight_average``): it is what validation measures and
    ``best/``/``last/`` hold; the reported checkpoint keeps it beside the
    trained weights, so a resumed run continues it.  ``sink`` is rank 0's.
    """
    from retinanet.train_loop import train_one_epoch, weight_average

    model, optimizer = trainees
    loader, val_loader = loaders
    average = weight_average(unwrap(model), spec.train) if worker.rank == 0 else None
    if average is not None and start.average is not None:
        average.load_state_dict(start.average)
    global_step, best = start.global_step, start.best_ap50
    for epoch, total_steps in _loader_epochs(loader, spec, start):
        result = train_one_epoch(
            model,
            optimizer,
            loader,
            spec.train,
            start_step=global_step,
            total_steps=total_steps,
            device=worker.device,
            average=average,
        )
        global_step = int(result["global_step"])
        metrics = _epoch_metrics(epoch, result, start)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint_dir = None
            if sink is not None:
                checkpoint_dir, best = close_epoch(
                    (model, optimizer, average),
                    val_loader,
                    spec,
                    metrics,
                    best,
                    Path(tmp),
                    worker.device,
                    sink,
                )
            reporter.report(scalars(metrics), checkpoint_dir)


def fit(
    spec: TrainSpec,
    data: TrainData,
    reporter: Reporter,
    *,
    resume: Resumable | str | os.PathLike[str] | None = None,
    worker: Worker | None = None,
    sink: CheckpointSink | None = None,
) -> None:
    """Train one worker's share of the run: resume or init, every epoch to the last, report each.

    Args:
        spec: the run's settings.
        data: the images, with ids into ``spec.model.class_names``.
        reporter: told about every epoch (rank 0: with the checkpoint to commit).
        resume: the committed checkpoint to continue from (a directory, or a
            ``ray.train.Checkpoint``); None: a new run.
        worker: rank, device and placement hooks (default: one worker, CPU, no wrapping).
        sink: where rank 0 writes the epochs (default: ``RunDirectory(spec)``).

    Example:
        >>> fit(spec, data, reporter)  # doctest: +SKIP
    """
    from retinanet.model import build_model
    from retinanet.train_loop import make_optimizer, seed_everything, set_rng_state

    worker = Worker() if worker is None else worker
    seed_everything(spec.train.seed + worker.rank)
    model = build_model(spec.model)
    start = resume_or_init(model, spec, resume)
    if worker.rank == 0:
        sink = RunDirectory(spec) if sink is None else sink
        sink.trim(start.epoch)
    else:
        sink = None
    model = worker.prepare_model(model)
    optimizer = make_optimizer(model, spec.train)
    if start.optimizer_state is not None:
        optimizer.load_state_dict(start.optimizer_state)
    if start.rng is not None and worker.rank == 0:
        set_rng_state(start.rng)
    loader, val_loader = make_loaders(spec, data, worker.rank, worker.world_size)
    loader = worker.prepare_loader(loader)
    train_epochs((model, optimizer), (loader, val_loader), spec, start, worker, reporter, sink)
