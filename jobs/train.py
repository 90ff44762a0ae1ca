"""``aerialdet train`` / ``python -m jobs.train``: labeled tiles -> checkpoint directory."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from jobs.options import init_ray, ray_address_option

EPILOG = """\b
Examples:
  $ aerialdet synth data/synth --scenes 6 --size-px 1024
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 12 --backbone resnet18
  $ aerialdet train new_labels.csv --out runs/ft --init runs/demo/best --epochs 5
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 20 --resume
  $ ray job submit --working-dir . -- python -m jobs.train labels.parquet --out /shared/runs/a --workers 4 --gpus

Writes OUT/best and OUT/last (checkpoints for `aerialdet detect --model`),
OUT/metrics.jsonl and OUT/training.png.
"""


def _band_stats(
    labels: tuple[str, ...], bands: tuple[int, ...], tile_size_px: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (raw units) over up to 32 training tiles."""
    import numpy as np

    from retinanet.labeled_tiles import read_image, read_labels

    images = read_labels(labels, tile_size_px=tile_size_px).images
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(images))[:32]
    pixels = np.concatenate([read_image(images[i], bands).reshape(len(bands), -1) for i in picks], axis=1)
    std = np.maximum(pixels.std(axis=1), 1e-3)
    return tuple(float(v) for v in pixels.mean(axis=1)), tuple(float(v) for v in std)


@click.command("train", epilog=EPILOG)
@click.argument("labels", nargs=-1, required=True)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint directory root."
)
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Ray Train workers."
)
@click.option("--gpus", is_flag=True, help="One GPU per worker (nccl).")
@click.option(
    "--backbone",
    default="resnet18",
    show_default=True,
    type=click.Choice(["resnet18", "resnet34", "resnet50", "mobilenet_v3_large"]),
)
@click.option(
    "--init",
    "init_ckpt",
    default=None,
    help="Checkpoint to fine-tune from (classes matched by name; new classes added).",
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run in --out and start over.")
@click.option("--val", "val_labels", multiple=True, help="Validation labels (else scenes are held out).")
@click.option("--classes", default=None, help="Comma-separated class names (default: from the labels).")
@click.option("--tile-size-px", default=256, show_default=True, type=click.IntRange(min=32))
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--bands", default="1,2,3", show_default=True, help="1-based bands in model order.")
@click.option(
    "--anchor-sizes-px",
    default="16,32,64,128,256",
    show_default=True,
    help="Base anchor size per level P3..P7 (paper: 32,64,128,256,512).",
)
@click.option("--max-steps-per-epoch", default=None, type=click.IntRange(min=1))
@click.option(
    "--cpus-per-worker", default=None, type=click.IntRange(min=1), help="[default: all CPUs / workers]"
)
@click.option("--max-failures", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=int)
@ray_address_option
def train_command(
    labels: tuple[str, ...],
    out_dir: str,
    epochs: int,
    workers: int,
    gpus: bool,
    backbone: str,
    init_ckpt: str | None,
    resume: bool,
    overwrite: bool,
    val_labels: tuple[str, ...],
    classes: str | None,
    tile_size_px: int,
    batch_size: int,
    lr: float,
    bands: str,
    anchor_sizes_px: str,
    max_steps_per_epoch: int | None,
    cpus_per_worker: int | None,
    max_failures: int,
    seed: int,
    address: str | None,
) -> None:
    """Train RetinaNet on LABELS (COCO .json, VOC .xml, DeepForest .csv, GeoParquet/GPKG)."""
    import os

    from retinanet.checkpoint import CheckpointError, read_meta
    from retinanet.config import BandConfig, ModelConfig
    from retinanet.labeled_tiles import read_labels
    from retinanet.ray_train import RAY_DIR, TrainSpec, run_training
    from retinanet.train_loop import TrainConfig

    out = Path(out_dir)
    if (out / RAY_DIR).exists() and not (resume or overwrite):
        raise click.UsageError(
            f"{out} already holds a training run; pass --resume to continue it or --overwrite to start over"
        )
    if overwrite and out.exists():
        shutil.rmtree(out)
    for p in labels + val_labels:
        if not Path(p).exists():
            raise click.BadParameter(f"{p} does not exist", param_hint="LABELS")
    band_idx = tuple(int(b) for b in bands.split(","))
    try:
        anchors = tuple(int(a) for a in anchor_sizes_px.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected 5 comma-separated integers, got {anchor_sizes_px!r}", param_hint="--anchor-sizes-px"
        ) from None

    if resume and (out / "train_spec.json").exists():
        import json

        from retinanet.ray_train import spec_from_json

        previous = spec_from_json(json.loads((out / "train_spec.json").read_text()))
        model_cfg = previous.model
    else:
        try:
            label_set = read_labels(
                labels, tuple(classes.split(",")) if classes else None, tile_size_px=tile_size_px
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        for issue in label_set.issues[:20]:
            click.echo(f"label row left out: {issue}", err=True)
        if len(label_set.issues) > 20:
            click.echo(f"... and {len(label_set.issues) - 20} more label rows left out", err=True)
        class_names = label_set.class_names
        if init_ckpt:
            try:
                base = ModelConfig.from_json(read_meta(init_ckpt)["config"])
            except CheckpointError as exc:
                raise click.BadParameter(str(exc), param_hint="--init") from None
            names = base.class_names + tuple(n for n in class_names if n not in base.class_names)
            model_cfg = base.replace(class_names=names, tile_size_px=tile_size_px)
            click.echo(f"fine-tuning {init_ckpt}: classes {base.class_names} -> {names}")
        else:
            mean, std = _band_stats(labels, band_idx, tile_size_px)
            try:
                model_cfg = ModelConfig(
                    class_names=class_names,
                    backbone=backbone,
                    anchor_sizes_px=anchors,
                    band_config=BandConfig(bands=band_idx, mean=mean, std=std),
                    tile_size_px=tile_size_px,
                )
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
    ncpu = os.cpu_count() or 1
    spec = TrainSpec(
        labels=tuple(str(Path(p).resolve()) for p in labels),
        out_dir=str(out.resolve()),
        model=model_cfg,
        train=TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_steps_per_epoch=max_steps_per_epoch
        ),
        val_labels=tuple(str(Path(p).resolve()) for p in val_labels),
        init_checkpoint=str(Path(init_ckpt).resolve()) if init_ckpt else None,
        num_workers=workers,
        use_gpu=gpus,
        max_failures=max_failures,
        cpus_per_worker=cpus_per_worker or max(1, ncpu // workers),
    )
    init_ray(address)
    result = run_training(spec)
    if result.error is not None:
        click.echo(f"training failed: {result.error}", err=True)
        sys.exit(1)
    click.echo(
        f"checkpoints: {out / 'best'} (best val AP50), {out / 'last'}; metrics: {out / 'metrics.jsonl'}"
    )


def main() -> None:
    """Entry point of ``python -m jobs.train``."""
    train_command()


if __name__ == "__main__":
    main()
