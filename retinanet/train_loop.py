"""Training and evaluation loops: plain torch, no Ray.

``ray_train`` calls ``train_one_epoch`` and ``evaluate_model`` from its Ray
Train workers; tests call them directly.  Images go to the model as float32
tensors in raw scene units: the model scales the bands itself
(``retinanet.model``, from the checkpoint's ``BandConfig``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.detection import reduced_precision
from retinanet.evaluate import ImageBoxes, best_f1_thresholds, evaluate_detections


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: total epochs (a resumed run continues up to this).
        batch_size: tiles per step per worker.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        grad_clip: max gradient norm.
        val_fraction: share of scenes held out when no validation set is given.
        score_threshold: score for precision/recall in the per-epoch evaluation.
        augment: flips, 90-degree rotations and jitter.
        seed: RNG seed.
        max_steps_per_epoch: cap on steps per epoch (None: the whole data set).
        min_steps_per_epoch: an epoch (validation, checkpoint) is at least this
            many steps: a small data set repeats its tiles, each a fresh random
            crop, rather than validate every few steps.
        total_steps: optimizer steps of the whole run (None: ``epochs`` full
            epochs); the last epoch stops when they are done.
        scale_range: scale jitter of the training tiles (``TileSampling``).
        calibration_iou: IoU at which validation picks each class's best-F1
            score threshold (stored in the checkpoint).
        precision: arithmetic of the forward pass (``pipeline.detection.Precision``
            values): ``fp32``, or ``bf16``/``fp16`` autocast with the losses
            computed on float32 head outputs; ``auto`` resolves per device
            (bf16 on CPUs with native bfloat16, fp16 on CUDA).  Gradients
            and weights stay float32.
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 10.0
    val_fraction: float = 0.2
    score_threshold: float = 0.3
    augment: bool = True
    seed: int = 0
    max_steps_per_epoch: int | None = None
    min_steps_per_epoch: int = 25
    total_steps: int | None = None
    scale_range: tuple[float, float] = (0.8, 1.25)
    calibration_iou: float = 0.4
    precision: str = "fp32"
    ema_half_life_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range", tuple(self.scale_range))  # a list after JSON
        if self.ema_half_life_steps is not None and self.ema_half_life_steps < 1:
            raise ValueError(f"ema_half_life_steps must be >= 1 or None, got {self.ema_half_life_steps}")


def min_epoch_tiles(config: TrainConfig, num_workers: int = 1) -> int:
    """Training tiles an epoch holds at least, all workers together (``min_steps_per_epoch`` full steps)."""
    return config.min_steps_per_epoch * config.batch_size * num_workers


def steps_per_epoch(num_samples: int, config: TrainConfig, num_workers: int = 1) -> int:
    """Optimizer steps of one epoch per worker (``max_steps_per_epoch`` applied).

    Example:
        >>> steps_per_epoch(50, TrainConfig(batch_size=4))
        13
    """
    steps = max(1, math.ceil(math.ceil(num_samples / num_workers) / config.batch_size))
    return min(steps, config.max_steps_per_epoch or steps)


def schedule(num_samples: int, config: TrainConfig, num_workers: int = 1) -> tuple[int, int]:
    """(epochs, total optimizer steps) of a run: ``total_steps`` when set, else ``epochs`` epochs."""
    per_epoch = steps_per_epoch(num_samples, config, num_workers)
    total = config.total_steps or per_epoch * config.epochs
    return math.ceil(total / per_epoch), total


def epochs_to_run(start_epoch: int, global_step: int, total_steps: int, per_epoch: int) -> range:
    """The epoch numbers still to run: as many as the steps left need.

    Counted from the steps left, not from ``total_steps / per_epoch``: a
    resumed run whose epochs are now longer or shorter (another batch size,
    worker count or epoch floor) still trains until ``total_steps``.

    Example:
        >>> epochs_to_run(21, 147, 300, 25)  # 7-step epochs before, 25 now: 153 steps left
        range(21, 28)
    """
    return range(start_epoch, start_epoch + math.ceil(max(0, total_steps - global_step) / per_epoch))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters, no weight decay on norms and biases."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )


def ema_decay(half_life_steps: int, num_averaged: int) -> float:
    """Decay of the weight average at its next update, after ``num_averaged`` updates.

    The average is the mean of the weights after every step so far, each
    weighted by ``d ** age`` with ``d = 0.5 ** (1 / half_life_steps)``: a
    step's weight halves every ``half_life_steps`` steps from the first
    update on.  Normalising that sum (an exponential moving average with
    bias correction) gives this decay: ``d (1 - d^n) / (1 - d^(n+1))``,
    close to the plain mean's ``n / (n + 1)`` early on and ``d`` in the long run.

    Example:
        >>> ema_decay(1, 1)  # x0 weighs 1/2, x1 weighs 1: x0 keeps 1/3
        0.3333333333333333
        >>> round(ema_decay(100, 10_000), 5)
        0.99309
    """
    d = 0.5 ** (1.0 / half_life_steps)
    return float(d * (1.0 - d**num_averaged) / (1.0 - d ** (num_averaged + 1)))


def weight_average(model: nn.Module, config: TrainConfig) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (None without ``ema_half_life_steps``).

    ``torch.optim.swa_utils.AveragedModel`` keeps a copy of the model;
    ``train_one_epoch`` updates it after every optimizer step.  Its
    ``.module`` is a plain RetinaNet to evaluate and save.
    """
    half_life = config.ema_half_life_steps
    if half_life is None:
        return None

    def update(
        averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
        current: tuple[torch.Tensor, ...] | list[torch.Tensor],
        num_averaged: torch.Tensor | int,
    ) -> None:
        decay = ema_decay(half_life, int(num_averaged))
        if averaged and torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(list(averaged), list(current), 1.0 - decay)
        else:  # integer buffers (batch norm's num_batches_tracked) follow the model
            torch._foreach_copy_(list(averaged), list(current))

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 5% of ``lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[list[Any], list[dict[str, torch.Tensor]]],
    config: TrainConfig,
    step: int,
    lr: float,
    device: str | torch.device,
) -> dict[str, float]:
    """One optimizer step at learning rate ``lr`` on (raw images, targets); the step's losses."""
    images, targets = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs = [torch.as_tensor(im, dtype=torch.float32).to(device) for im in images]
    tgts = [{k: v.to(device) for k, v in t.items()} for t in targets]
    # the hook that casts the head's outputs back sits on the unwrapped model (DDP wraps it)
    with reduced_precision(getattr(model, "module", model), torch.device(device).type, config.precision):
        losses = model(inputs, tgts)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]],
    config: TrainConfig,
    *,
    start_step: int,
    total_steps: int,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    average: torch.optim.swa_utils.AveragedModel | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean losses and the last step number.

    Args:
        model: a torchvision RetinaNet (possibly DDP-wrapped).
        optimizer: from ``make_optimizer`` (its lr is set each step).
        loader: batches of (raw images, targets), e.g. ``TrainingTiles`` through ``EpochSampler``.
        config: optimisation settings.
        start_step: global step at the start of the epoch (for the lr schedule).
        total_steps: steps in the whole run.
        device: where to train.
        on_step: called after each step with (global step, losses).
        average: ``weight_average(model)``, updated after each step.

    Returns:
        ``{"loss", "classification", "bbox_regression", "steps", "global_step", "seconds"}``.
    """
    model.train()
    sums: dict[str, float] = {"loss": 0.0, "classification": 0.0, "bbox_regression": 0.0}
    steps = 0
    step = start_step
    started = time.time()
    for images, targets in loader:
        if config.max_steps_per_epoch is not None and steps >= config.max_steps_per_epoch:
            break
        if step >= total_steps:  # the run's last, shortened epoch
            break
        values = _train_step(
            model, optimizer, (images, targets), config, step, lr_at(step, total_steps, config), device
        )
        if average is not None:
            average.update_parameters(getattr(model, "module", model))
        for k in sums:
            sums[k] += values.get(k, 0.0)
        steps += 1
        step += 1
        if on_step is not None:
            on_step(step, values)
    out = {k: v / max(1, steps) for k, v in sums.items()}
    out.update(steps=float(steps), global_step=float(step), seconds=time.time() - started)
    return out


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    loader: Iterable[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]],
    class_names: tuple[str, ...],
    *,
    score_threshold: float = 0.3,
    device: str | torch.device = "cpu",
    calibration_iou: float | None = None,
) -> dict[str, Any]:
    """Detect on a labeled loader and compute COCO metrics per tile.

    Args:
        model: a torchvision RetinaNet (unwrapped from DDP).
        loader: batches of (raw images, targets) from ``LabeledTiles``.
        class_names: names of the label ids.
        score_threshold: score for precision/recall.
        device: where to run the model.
        calibration_iou: when set, also the best-F1 score threshold per class
            at this IoU, under the key ``"calibration"``
            (``retinanet.evaluate.best_f1_thresholds``).

    Returns:
        ``retinanet.evaluate.evaluate_detections`` output (``overall`` and per
        class); without images, ``overall`` alone with AP -1 and ``num_gt`` 0.
    """
    was_training = model.training
    model.eval()
    gts, dts = [], []
    for images, targets in loader:
        outputs = model([torch.as_tensor(im, dtype=torch.float32).to(device) for im in images])
        for found, tgt in zip(outputs, targets):
            gts.append(ImageBoxes(tgt["boxes"].numpy(), tgt["labels"].numpy()))
            dts.append(
                ImageBoxes(
                    found["boxes"].cpu().numpy(), found["labels"].cpu().numpy(), found["scores"].cpu().numpy()
                )
            )
    if was_training:
        model.train()
    if not gts:
        return {
            "overall": {"map": -1.0, "ap50": -1.0, "precision": 0.0, "recall": 0.0, "num_gt": 0, "num_det": 0}
        }
    out: dict[str, Any] = dict(evaluate_detections(gts, dts, class_names, score_threshold=score_threshold))
    if calibration_iou is not None:
        out["calibration"] = best_f1_thresholds(gts, dts, class_names, iou=calibration_iou)
    return out


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, numpy, Python ``random``), saved with a checkpoint.

    Training tiles and their augmentation draw from generators seeded by
    (seed, epoch, sample) (``retinanet.labeled_tiles.TrainingTiles``), so the
    data a resumed run sees is fixed by its epoch; these states cover what
    else may draw from the global generators.
    """
    numpy_state: Any = np.random.get_state()  # a tuple: (name, keys, pos, has_gauss, cached)
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state`` (a resumed run continues the generators)."""
    import ast

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(ast.literal_eval(state["python"]))
