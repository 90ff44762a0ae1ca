"""The only ``import ray.train``: RetinaNet training on Ray Train (V2).

``run_training(spec)`` builds a ``TorchTrainer`` whose workers run
``train_loop_per_worker``; the loop itself is ``retinanet.train_loop``.  Ray
touch points are numbered:

# [1] ray.train.get_checkpoint(): resume (re-run / FailureConfig restart)
# [2] prepare_model: DDP (gloo on CPU, nccl on GPU)
# [3] prepare_data_loader: DistributedSampler + device placement
# [4] ray.train.report(metrics, checkpoint) every epoch (checkpoint from rank 0)

Outputs in ``out_dir``: ``last/`` and ``best/`` (checkpoint directories that
``aerialdet detect --model`` takes), ``metrics.jsonl``, ``training.png``, and
Ray Train's own run state under ``out_dir/ray/`` (what ``--resume`` and
worker restarts continue from).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from retinanet.checkpoint import load_dir, load_train_state, save_dir, unwrap
from retinanet.config import ModelConfig
from retinanet.train_loop import TrainConfig

RAY_DIR = "ray"
RUN_NAME = "train"
# Fault injection for tests: a worker of this rank exits at this global step, once.
FAIL_ENV = "AERIALDET_TEST_FAIL_AT_STEP"
FAIL_RANK_ENV = "AERIALDET_TEST_FAIL_RANK"


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs (JSON-able, sent to every worker).

    Attributes:
        labels: label files (any format ``read_labels`` takes).
        out_dir: checkpoint directory root.
        model: model configuration (class names, bands, backbone, ...).
        train: optimisation settings.
        val_labels: explicit validation labels (else scenes are held out).
        init_checkpoint: checkpoint to fine-tune from.
        num_workers: Ray Train workers.
        use_gpu: one GPU per worker.
        max_failures: worker failures tolerated (restart from last checkpoint).
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


def _load_data(spec: TrainSpec) -> tuple[Any, Any, list[str]]:
    from retinanet.labeled_tiles import read_labels, split_by_group

    labels = read_labels(spec.labels, spec.model.class_names, tile_size_px=spec.model.tile_size_px)
    issues = [str(i) for i in labels.issues]
    if spec.val_labels:
        val = read_labels(spec.val_labels, spec.model.class_names, tile_size_px=spec.model.tile_size_px)
        issues += [str(i) for i in val.issues]
        return labels.images, val.images, issues
    train_images, val_images = split_by_group(labels.images, spec.train.val_fraction, spec.train.seed)
    return train_images, val_images, issues


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

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
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


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """Ray Train worker body: build, resume, train, evaluate, report."""
    import ray.train
    from ray.train import Checkpoint
    from ray.train.torch import prepare_data_loader, prepare_model
    from torch.utils.data import DataLoader

    from retinanet.augment import OverheadAugment
    from retinanet.labeled_tiles import LabeledTiles, collate
    from retinanet.model import build_model
    from retinanet.train_loop import (
        evaluate_model,
        make_optimizer,
        seed_everything,
        train_one_epoch,
    )

    spec = spec_from_json(payload)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, spec.cpus_per_worker))
    seed_everything(spec.train.seed + rank)
    out_dir = Path(spec.out_dir)
    model = build_model(spec.model)
    optimizer_state, start_epoch, global_step, best = None, 0, 0, -1.0

    resume = ray.train.get_checkpoint()  # [1]
    if resume is not None:
        with resume.as_directory() as d:
            loaded = load_dir(d)
            model.load_state_dict(loaded.model.state_dict())
            state = load_train_state(d) or {}
            optimizer_state = state.get("optimizer")
            start_epoch = int(state.get("epoch", -1)) + 1
            global_step = int(state.get("global_step", 0))
            best = float(state.get("best_ap50", -1.0))
        if rank == 0:
            print(f"resuming from checkpoint after epoch {start_epoch - 1} (step {global_step})", flush=True)
    elif spec.init_checkpoint:
        carried = init_from_checkpoint(model, spec.model, spec.init_checkpoint)
        if rank == 0:
            print(f"fine-tuning from {spec.init_checkpoint}; classes carried over: {carried}", flush=True)

    resumed_from = start_epoch - 1 if resume is not None else None
    metrics_path = out_dir / "metrics.jsonl"
    if rank == 0 and metrics_path.exists():
        # drop lines of epochs whose checkpoint was never committed (a failed
        # attempt may have logged an epoch that is now re-run)
        kept = [
            line
            for line in metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line)["epoch"] < start_epoch
        ]
        metrics_path.write_text("".join(line + "\n" for line in kept))

    device = ray.train.torch.get_device()
    model = prepare_model(model)  # [2]
    optimizer = make_optimizer(model, spec.train)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    train_images, val_images, issues = _load_data(spec)
    if rank == 0 and issues:
        print(f"{len(issues)} label row(s) left out:\n  " + "\n  ".join(issues[:20]), flush=True)
    bands = spec.model.band_config
    train_ds = LabeledTiles(train_images, bands.bands, OverheadAugment() if spec.train.augment else None)
    loader = DataLoader(
        train_ds, batch_size=spec.train.batch_size, shuffle=True, collate_fn=collate, num_workers=0
    )
    loader = prepare_data_loader(loader, move_to_device=False)  # [3]
    val_loader = DataLoader(
        LabeledTiles(val_images, bands.bands), batch_size=spec.train.batch_size, collate_fn=collate
    )
    steps_per_epoch = (
        len(loader)
        if spec.train.max_steps_per_epoch is None
        else min(len(loader), spec.train.max_steps_per_epoch)
    )
    total_steps = max(1, steps_per_epoch * spec.train.epochs)

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
            print(f"fault injection: worker {rank} exits at step {step}", flush=True)
            os._exit(1)

    for epoch in range(start_epoch, spec.train.epochs):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        result = train_one_epoch(
            model,
            optimizer,
            loader,
            bands,
            spec.train,
            start_step=global_step,
            total_steps=total_steps,
            device=device,
            on_step=on_step,
        )
        global_step = int(result["global_step"])
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "global_step": global_step,
            "loss": result["loss"],
            "classification": result["classification"],
            "bbox_regression": result["bbox_regression"],
            "epoch_seconds": result["seconds"],
            "resumed_from_epoch": resumed_from,
        }
        checkpoint = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                ev = evaluate_model(
                    unwrap(model),
                    val_loader,
                    bands,
                    spec.model.class_names,
                    score_threshold=spec.train.score_threshold,
                    device=device,
                )
                overall = ev["overall"]
                metrics.update(
                    val_map=overall["map"],
                    val_ap50=overall["ap50"],
                    val_precision=overall["precision"],
                    val_recall=overall["recall"],
                    val_per_class={k: v for k, v in ev.items() if k != "overall"},
                )
                improved = overall["ap50"] > best
                best = max(best, overall["ap50"])
                train_state = {
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "global_step": global_step,
                    "best_ap50": best,
                }
                extra = {
                    "epoch": epoch,
                    "metrics": {k: v for k, v in metrics.items() if k != "val_per_class"},
                }
                ckpt_dir = save_dir(
                    Path(tmp) / "ckpt", model, spec.model, train_state=train_state, extra_meta=extra
                )
                save_dir(out_dir / "last", model, spec.model, train_state=train_state, extra_meta=extra)
                if improved:
                    save_dir(out_dir / "best", model, spec.model, extra_meta=extra)
                with metrics_path.open("a") as f:
                    f.write(json.dumps({**metrics, "time": time.time()}) + "\n")
                _plot(out_dir / "metrics.jsonl", out_dir / "training.png")
                print(
                    f"epoch {epoch}: loss {metrics['loss']:.3f}  val AP50 {overall['ap50']:.3f}  mAP {overall['map']:.3f}",
                    flush=True,
                )
                checkpoint = Checkpoint.from_directory(str(ckpt_dir))
            ray.train.report(
                {k: v for k, v in metrics.items() if k != "val_per_class"}, checkpoint=checkpoint
            )  # [4]


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
    )


def run_training(spec: TrainSpec) -> Any:
    """Run (or resume) training on the connected Ray cluster.

    Re-running with the same ``out_dir`` resumes from Ray Train's latest
    checkpoint (Ray Train V2 restores a run by its ``RunConfig(name,
    storage_path)``).  ``FailureConfig(max_failures)`` restarts the workers
    from the last checkpoint when one dies.

    Returns:
        Ray Train's ``Result``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out_dir = Path(spec.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = TrainSpec(**{**spec.__dict__, "out_dir": str(out_dir)})
    (out_dir / "train_spec.json").write_text(json.dumps(spec_to_json(spec), indent=2))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=spec_to_json(spec),
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
