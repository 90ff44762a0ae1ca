"""The only ``import ray.train``: RetinaNet training on Ray Train (V2).

``run_training(spec, data)`` builds a ``TorchTrainer`` whose workers run
``train_loop_per_worker``; the loop itself is ``retinanet.train_loop``.  The
label files are read once, on the driver (``retinanet.labeled_tiles.
read_train_data``), and the split images reach the workers through Ray's
object store.  Ray touch points are numbered:

# [1] ray.train.get_checkpoint(): resume (re-run / FailureConfig restart)
# [2] prepare_model: DDP (gloo on CPU, nccl on GPU)
# [3] prepare_data_loader: device placement (our ``EpochSampler`` shards the
#     training tiles by rank, in an order drawn from (seed, epoch))
# [4] ray.train.report(metrics, checkpoint) every epoch (checkpoint from rank 0)

Every worker trains on random tiles of ``ModelConfig.tile_size_px`` cut from
the images (``retinanet.labeled_tiles.TrainingTiles``), for
``TrainConfig.total_steps`` optimizer steps (else ``epochs`` epochs).  A
resumed run reproduces an uninterrupted one: the data order and every
augmentation are drawn from (seed, epoch, sample), and the checkpoint holds
the optimizer, the global RNG states, the epoch and the step.

Outputs in ``out_dir``: ``last/`` (every epoch) and ``best/`` (the epoch
with the best validation AP50; written only when the validation images hold
boxes, since AP50 is undefined without them; its ``meta.json`` holds
``score_thresholds``, the best-F1 score per class at
``TrainConfig.calibration_iou``), checkpoint directories that
``aerialdet detect --model`` takes; ``metrics.jsonl`` and ``training.png``
(``retinanet.train_report``); and Ray Train's own run state under
``out_dir/ray/`` (what ``--resume`` and worker restarts continue from).
Workers print nothing: progress is the metrics file, notes go to logging
(Ray's worker log files).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from retinanet.checkpoint import load_dir, load_train_state, save_dir, unwrap
from retinanet.config import ModelConfig
from retinanet.train_loop import TrainConfig
from retinanet.train_report import METRICS_FILE, PLOT_FILE, read_metrics

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from retinanet.labeled_tiles import TrainData

logger = logging.getLogger(__name__)

RAY_DIR = "ray"
RUN_NAME = "train"
# Fault injection for tests: a worker of this rank exits at this global step, once.
FAIL_ENV = "AERIALDET_TEST_FAIL_AT_STEP"
FAIL_RANK_ENV = "AERIALDET_TEST_FAIL_RANK"


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs but the images (JSON-able, sent to every worker).

    Attributes:
        labels: label files the images were read from (recorded in train_spec.json).
        out_dir: checkpoint directory root.
        model: model configuration (class names, bands, backbone, ...).
        train: optimisation settings.
        val_labels: explicit validation label files (else scenes were held out).
        init_checkpoint: checkpoint to fine-tune from.
        num_workers: Ray Train workers.
        use_gpu: one GPU per worker.
        max_failures: worker failures tolerated (restart from last checkpoint).
        cpus_per_worker: CPUs (and torch threads) per worker.
        backbone_weights: a torchvision ResNet state dict (e.g. ImageNet) to
            start the backbone from (from scratch and without ``init_checkpoint``).
        largest_object_px: the largest side of any training box, px; the
            checkpoints record it (``meta.json`` ``largest_object_px``) as the
            overlap detect should use.
    """

    labels: tuple[str, ...]
    out_dir: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    val_labels: tuple[str, ...] = ()
    init_checkpoint: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    max_failures: int = 1
    cpus_per_worker: int = 1
    backbone_weights: str | None = None
    largest_object_px: float | None = None


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


def _plot(metrics_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [r["loss"] for r in rows], "o-", color="tab:red", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [r["val_ap50"] for r in rows], "s-", color="tab:blue", label="val AP50")
    ax2.plot(epochs, [r["val_map"] for r in rows], "^-", color="tab:cyan", label="val mAP")
    ax2.set_ylabel("AP", color="tab:blue")
    ax2.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


@dataclass
class _Start:
    """Where a worker starts: epoch, step, best AP50 so far, optimizer and RNG state."""

    epoch: int = 0
    global_step: int = 0
    best_ap50: float = -1.0
    optimizer_state: dict[str, Any] | None = None
    resumed_from: int | None = None
    rng: dict[str, Any] | None = None
    average: dict[str, Any] | None = None


def _resume_or_init(model: torch.nn.Module, spec: TrainSpec) -> _Start:
    """Load Ray Train's latest checkpoint into ``model`` (resume), else ``--init`` weights."""
    import ray.train

    resume = ray.train.get_checkpoint()  # [1]
    if resume is None:
        if spec.init_checkpoint:
            carried = init_from_checkpoint(model, spec.model, spec.init_checkpoint)
            logger.info("fine-tuning from %s; classes carried over: %s", spec.init_checkpoint, carried)
        elif spec.backbone_weights:
            from retinanet.checkpoint import load_backbone_weights

            load_backbone_weights(model, spec.backbone_weights)
        return _Start()
    with resume.as_directory() as d:
        model.load_state_dict(load_dir(d).model.state_dict())
        state = load_train_state(d) or {}
    epoch = int(state.get("epoch", -1)) + 1
    logger.info("resuming from the checkpoint of epoch %d (step %s)", epoch - 1, state.get("global_step"))
    return _Start(
        epoch=epoch,
        global_step=int(state.get("global_step", 0)),
        best_ap50=float(state.get("best_ap50", -1.0)),
        optimizer_state=state.get("optimizer"),
        resumed_from=epoch - 1,
        rng=state.get("rng"),
        average=state.get("average"),
    )


def _trim_metrics(metrics_path: Path, start_epoch: int) -> None:
    """Drop logged epochs from ``start_epoch`` on.

    A failed attempt may have logged an epoch whose checkpoint was never
    committed; that epoch is now run again.
    """
    if metrics_path.exists():
        kept = [row for row in read_metrics(metrics_path) if row["epoch"] < start_epoch]
        metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))


def _make_loaders(
    spec: TrainSpec, data: TrainData, rank: int, world: int
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Training loader (random tiles of every image, this worker's share, augmented) and validation loader."""
    from ray.train.torch import prepare_data_loader
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
    min_tiles = min_epoch_tiles(spec.train, world)
    tiles = TrainingTiles(data.train, bands, sampling, augment, seed=spec.train.seed, min_tiles=min_tiles)
    sampler = EpochSampler(len(tiles), rank=rank, num_replicas=world, seed=spec.train.seed)
    loader = DataLoader(tiles, batch_size=spec.train.batch_size, sampler=sampler, collate_fn=collate)
    # our sampler shards and orders by (seed, epoch): Ray adds none
    loader = prepare_data_loader(loader, add_dist_sampler=False, move_to_device=False)  # [3]
    val_loader = DataLoader(
        LabeledTiles(grid_tiles(data.val, tile), bands), batch_size=spec.train.batch_size, collate_fn=collate
    )
    return loader, val_loader


def _fault_injector(out_dir: Path, rank: int) -> Callable[[int, dict[str, float]], None]:
    """An ``on_step`` hook that kills one worker once, for tests of worker-failure recovery.

    The worker of rank ``$AERIALDET_TEST_FAIL_RANK`` exits at global step
    ``$AERIALDET_TEST_FAIL_AT_STEP``; without those variables it does nothing.
    """
    fail_at = int(os.environ.get(FAIL_ENV, "-1"))
    fail_rank = int(os.environ.get(FAIL_RANK_ENV, "1"))
    marker = out_dir / ".fault_injected"

    def on_step(step: int, values: dict[str, float]) -> None:
        if step == fail_at and rank == fail_rank and not marker.exists():
            marker.write_text(str(step))
            # let the controller register the last reported checkpoint first: a
            # worker dying right after report() can restart from the one before
            # (seen here; ray-project/ray#41700)
            time.sleep(5)
            logger.warning("fault injection: worker %d exits at step %d", rank, step)
            os._exit(1)

    return on_step


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the per-class tables (what ``report`` and ``meta.json`` carry)."""
    return {k: v for k, v in metrics.items() if k not in ("val_per_class", "score_thresholds", "calibration")}


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

    Writes ``last/``; ``best/`` when validation AP50 improved (never when it
    is -1: no validation boxes), with the best-F1 ``score_thresholds`` per
    class in its ``meta.json``; a line of ``metrics.jsonl``; the plot.
    ``best/`` and ``last/`` hold ``evaluated`` (the weight average of
    ``TrainConfig.ema_half_life_steps``) when given, else ``model``.

    Returns:
        (checkpoint directory of this epoch under ``tmp``, with ``model``'s
        weights and ``train_state`` to resume from; best AP50 so far).
    """
    improved = metrics["val_ap50"] > train_state["best_ap50"]
    train_state = {**train_state, "best_ap50": max(train_state["best_ap50"], metrics["val_ap50"])}
    extra = {**(run_meta or {}), "epoch": metrics["epoch"], "metrics": _scalars(metrics)}
    if "score_thresholds" in metrics:
        extra.update(score_thresholds=metrics["score_thresholds"], calibration=metrics.get("calibration"))
    ckpt_dir = save_dir(tmp / "ckpt", model, config, train_state=train_state, extra_meta=extra)
    # last/'s train_state is for reading (epoch, step, RNG, the optimizer of the trained weights);
    # resuming reads Ray's checkpoint, whose weights are the trained ones
    last_state = {k: v for k, v in train_state.items() if k != "average"}
    kept = model if evaluated is None else evaluated
    save_dir(out_dir / "last", kept, config, train_state=last_state, extra_meta=extra)
    if improved:
        save_dir(out_dir / "best", kept, config, extra_meta=extra)
    with (out_dir / METRICS_FILE).open("a") as f:
        f.write(json.dumps({**metrics, "best_saved": improved, "time": time.time()}) + "\n")
    _plot(out_dir / METRICS_FILE, out_dir / PLOT_FILE)
    return ckpt_dir, train_state["best_ap50"]


def _run_meta(spec: TrainSpec) -> dict[str, Any]:
    """What every checkpoint of the run records besides its epoch: detect's overlap hint, the weight average."""
    meta: dict[str, Any] = {}
    if spec.largest_object_px:
        meta["largest_object_px"] = spec.largest_object_px
    if spec.train.ema_half_life_steps is not None:
        meta["weights"] = f"moving average, half-life {spec.train.ema_half_life_steps} steps"
    return meta


def _close_epoch(
    trainees: tuple[torch.nn.Module, torch.optim.Optimizer, Any],
    val_loader: Any,
    spec: TrainSpec,
    metrics: dict[str, Any],
    best: float,
    tmp: Path,
    device: Any,
) -> tuple[Path, float]:
    """Rank 0 at the end of an epoch: validate (the weight average, if kept) and ``write_epoch``.

    ``trainees`` is (model, optimizer, weight average or None); validation's
    figures are added to the epoch's ``metrics``; ``best`` is the best
    validation AP50 before this epoch.  Returns ``write_epoch``'s (checkpoint
    directory to report, best AP50 so far).
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
    out_dir = Path(spec.out_dir)
    return write_epoch(
        out_dir, unwrap(model), spec.model, metrics, state, tmp, _run_meta(spec), evaluated=evaluated
    )


def _train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loaders: tuple[Any, Any],
    spec: TrainSpec,
    start: _Start,
    rank: int,
    device: Any,
) -> None:
    """Epochs ``start.epoch`` .. ``spec.train.epochs - 1``: train, evaluate, checkpoint, report.

    Rank 0 keeps the weight average when the run asks for one
    (``train_loop.weight_average``): it is what validation measures and
    ``best/``/``last/`` hold; Ray's checkpoint keeps it beside the trained
    weights, so a resumed run continues it.
    """
    import ray.train
    from ray.train import Checkpoint

    from retinanet.train_loop import epochs_to_run, train_one_epoch, weight_average

    loader, val_loader = loaders
    average = weight_average(unwrap(model), spec.train) if rank == 0 else None
    if average is not None and start.average is not None:
        average.load_state_dict(start.average)
    cap = spec.train.max_steps_per_epoch
    per_epoch = max(1, len(loader) if cap is None else min(len(loader), cap))
    total_steps = spec.train.total_steps or per_epoch * spec.train.epochs
    on_step = _fault_injector(Path(spec.out_dir), rank)
    global_step, best = start.global_step, start.best_ap50
    for epoch in epochs_to_run(start.epoch, start.global_step, total_steps, per_epoch):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        result = train_one_epoch(
            model,
            optimizer,
            loader,
            spec.train,
            start_step=global_step,
            total_steps=total_steps,
            device=device,
            on_step=on_step,
            average=average,
        )
        global_step = int(result["global_step"])
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "global_step": global_step,
            **{k: result[k] for k in ("loss", "classification", "bbox_regression")},
            "epoch_seconds": result["seconds"],
            "resumed_from_epoch": start.resumed_from,
        }
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                ckpt_dir, best = _close_epoch(
                    (model, optimizer, average), val_loader, spec, metrics, best, Path(tmp), device
                )
                checkpoint = Checkpoint.from_directory(str(ckpt_dir))
            ray.train.report(_scalars(metrics), checkpoint=checkpoint)  # [4]


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """Ray Train worker body: build, resume, train, evaluate, report.

    Args:
        payload: ``{"spec": spec_to_json(spec), "data": ObjectRef[TrainData]}``.
    """
    import ray
    import ray.train
    from ray.train.torch import get_device, prepare_model

    from retinanet.model import build_model
    from retinanet.train_loop import make_optimizer, seed_everything, set_rng_state

    spec = spec_from_json(payload["spec"])
    data = ray.get(payload["data"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, spec.cpus_per_worker))
    seed_everything(spec.train.seed + rank)
    model = build_model(spec.model)
    start = _resume_or_init(model, spec)  # [1]
    if rank == 0:
        _trim_metrics(Path(spec.out_dir) / METRICS_FILE, start.epoch)
    device = get_device()
    model = prepare_model(model)  # [2]
    optimizer = make_optimizer(model, spec.train)
    if start.optimizer_state is not None:
        optimizer.load_state_dict(start.optimizer_state)
    if start.rng is not None and rank == 0:
        set_rng_state(start.rng)
    loaders = _make_loaders(spec, data, rank, world)  # [3]
    _train_epochs(model, optimizer, loaders, spec, start, rank, device)


def spec_to_json(spec: TrainSpec) -> dict[str, Any]:
    """JSON form of a TrainSpec (sent to workers, saved as train_spec.json)."""
    out = asdict(spec)
    out["model"] = spec.model.to_json()
    return out


def spec_from_json(data: dict[str, Any]) -> TrainSpec:
    """Inverse of ``spec_to_json``."""
    return TrainSpec(
        labels=tuple(data["labels"]),
        out_dir=data["out_dir"],
        model=ModelConfig.from_json(data["model"]),
        train=TrainConfig(**data["train"]),
        val_labels=tuple(data["val_labels"]),
        init_checkpoint=data["init_checkpoint"],
        num_workers=data["num_workers"],
        use_gpu=data["use_gpu"],
        max_failures=data["max_failures"],
        cpus_per_worker=data["cpus_per_worker"],
        backbone_weights=data.get("backbone_weights"),
        largest_object_px=data.get("largest_object_px"),
    )


def run_training(spec: TrainSpec, data: TrainData) -> Any:
    """Run (or resume) training on the connected Ray cluster.

    Re-running with the same ``out_dir`` resumes from Ray Train's latest
    checkpoint (Ray Train V2 restores a run by its ``RunConfig(name,
    storage_path)``).  ``FailureConfig(max_failures)`` restarts the workers
    from the last checkpoint when one dies.

    Args:
        spec: the run's settings.
        data: the images, read once on the driver (``read_train_data``),
            with ids into ``spec.model.class_names``.

    Returns:
        Ray Train's ``Result``.

    Raises:
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out_dir = Path(spec.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = TrainSpec(**{**spec.__dict__, "out_dir": str(out_dir)})
    (out_dir / "train_spec.json").write_text(json.dumps(spec_to_json(spec), indent=2))
    trainer = TorchTrainer(
        train_loop_per_worker,
        # the images travel through the object store, not inside the config Ray Train logs
        train_loop_config={"spec": spec_to_json(spec), "data": ray.put(data)},
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.num_workers,
            use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(out_dir / RAY_DIR),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()
