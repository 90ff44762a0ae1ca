"""``aerialdet train`` / ``python -m jobs.train``: labeled tiles -> checkpoint directory.

Steps: check ``--out``; read the label files once (``read_train_data``: it
also splits off validation and refuses data that cannot train) before
anything is written or Ray is started; build the model config (band
statistics of the training images, or the ``--init`` checkpoint's); train on
Ray with one progress bar fed by ``OUT/metrics.jsonl``; print one summary
that names only the checkpoints that were written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobs.options import (
    LOG_DIR,
    UserError,
    address_option,
    bands_option,
    finite_float_range,
    overwrite_option,
    progress_option,
    ray_session,
    run_standalone,
    tile_size_option,
    verbose_option,
)
from retinanet.config import BACKBONES

EPILOG = """\b
Examples:
  $ aerialdet synth data/synth --scenes 6 --size-px 1024
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 12 --backbone resnet18
  $ aerialdet train new_labels.csv --out runs/ft --init runs/demo --epochs 5
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 20 --resume
  $ ray job submit --working-dir . -- python -m jobs.train labels.parquet --out /shared/runs/a --workers 4 --gpus

Writes OUT/last (every epoch) and OUT/best (best validation AP50; needs
validation boxes), checkpoints for `aerialdet detect --model`,
OUT/metrics.jsonl, OUT/training.png, and Ray's logs under OUT/_logs.
"""

if TYPE_CHECKING:
    from retinanet.config import ModelConfig
    from retinanet.labeled_tiles import LabelIssue, TrainData
    from retinanet.ray_train import TrainSpec

DEFAULT_BANDS = (1, 2, 3)


def _parse_anchors(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """``16,32,64,128,256`` -> five positive ints (click callback)."""
    try:
        sizes = tuple(int(a) for a in value.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 5 or min(sizes) < 1:
        raise click.BadParameter(f"expected 5 comma-separated positive integers, got {value!r}", param=param)
    return sizes


def _parse_classes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """``car,tree`` -> class names in id order (click callback)."""
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise click.BadParameter(f"expected distinct comma-separated class names, got {value!r}", param=param)
    return names


def _check_writable(out: Path) -> None:
    """Refuse an ``--out`` that cannot be created, without creating anything."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a directory; choose another --out")
    if not os.access(existing, os.W_OK):
        raise UserError(f"--out {out}: {existing} is not writable; choose another --out")


@dataclass(frozen=True)
class TrainOptions:
    """The command line of ``aerialdet train``, parsed (one field per option)."""

    labels: tuple[str, ...]
    out_dir: str
    epochs: int
    workers: int
    gpus: bool
    backbone: str
    init_ckpt: str | None
    resume: bool
    overwrite: bool
    val_labels: tuple[str, ...]
    classes: tuple[str, ...] | None
    tile_size_px: int
    batch_size: int
    lr: float
    bands: tuple[int, ...] | None
    anchor_sizes_px: tuple[int, ...]
    max_steps_per_epoch: int | None
    cpus_per_worker: int | None
    max_failures: int
    seed: int
    no_progress: bool
    address: str | None
    verbose: bool

    @property
    def out(self) -> Path:
        """The run directory."""
        return Path(self.out_dir)


def _check_out(opts: TrainOptions) -> ModelConfig | None:
    """Check ``--out`` against the flags; the ModelConfig of the run to resume, if any."""
    from retinanet.ray_train import RAY_DIR, spec_from_json

    if opts.resume and opts.overwrite:
        raise click.UsageError(
            "--resume continues the run in --out, --overwrite deletes it: pass one of them"
        )
    if (opts.out / RAY_DIR).exists() and not (opts.resume or opts.overwrite):
        raise UserError(
            f"{opts.out} already holds a training run; pass --resume to continue it or --overwrite to start over"
        )
    _check_writable(opts.out)
    spec_file = opts.out / "train_spec.json"
    if not (opts.resume and spec_file.is_file()):
        return None
    try:
        return spec_from_json(json.loads(spec_file.read_text())).model
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{spec_file}: cannot be read ({exc}); start over with --overwrite") from None


def _read_data(opts: TrainOptions, class_names: tuple[str, ...] | None) -> TrainData:
    """The run's labels, read once, with label-file problems as one-line user errors."""
    from retinanet.errors import LabelError
    from retinanet.labeled_tiles import read_train_data

    try:
        return read_train_data(
            opts.labels, opts.val_labels, class_names, tile_size_px=opts.tile_size_px, seed=opts.seed
        )
    except LabelError as exc:
        raise UserError(str(exc)) from None


def _init_checkpoint(init: str) -> tuple[ModelConfig, str]:
    """The ``--init`` checkpoint's ModelConfig and directory (a run directory gives best/, else last/)."""
    from retinanet.checkpoint import CheckpointError, read_config, resolve_checkpoint

    try:
        ckpt, note = resolve_checkpoint(init)
        if note:
            click.echo(f"--init: {note}")
        return read_config(ckpt), str(Path(ckpt).resolve())
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--init") from None


def _check_bands(data: TrainData, bands: tuple[int, ...], hint: str) -> None:
    """Every training and validation image has ``bands``, else a one-line error about ``hint``."""
    from retinanet.errors import LabelError
    from retinanet.labeled_tiles import check_bands

    try:
        check_bands(data.train + data.val, bands)
    except LabelError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _new_model_config(opts: TrainOptions, data: TrainData) -> ModelConfig:
    """A from-scratch ModelConfig: band mean/std measured on the training images."""
    from retinanet.config import BandConfig, ModelConfig
    from retinanet.labeled_tiles import band_stats

    bands = opts.bands or DEFAULT_BANDS
    _check_bands(data, bands, "--bands")
    mean, std = band_stats(data.train, bands)
    return ModelConfig(
        class_names=data.class_names,
        backbone=opts.backbone,
        anchor_sizes_px=opts.anchor_sizes_px,
        band_config=BandConfig(bands=bands, mean=mean, std=std),
        tile_size_px=opts.tile_size_px,
    )


def _model_config(
    opts: TrainOptions, data: TrainData, previous: ModelConfig | None
) -> tuple[ModelConfig, TrainData, str | None]:
    """(ModelConfig, data with ids into its classes, checkpoint to fine-tune from): resumed, fine-tuned or new."""
    if previous is not None:
        _check_bands(data, previous.band_config.bands, "LABELS")
        return previous, data, None  # the labels were read with its class names
    if not opts.init_ckpt:
        return _new_model_config(opts, data), data, None
    base, init_dir = _init_checkpoint(opts.init_ckpt)
    _check_bands(data, base.band_config.bands, "--init")
    names = base.class_names + tuple(n for n in data.class_names if n not in base.class_names)
    click.echo(f"fine-tuning {init_dir}: classes {list(base.class_names)} -> {list(names)}")
    return base.replace(class_names=names, tile_size_px=opts.tile_size_px), data.relabel(names), init_dir


def _spec(opts: TrainOptions, model_cfg: ModelConfig, init_dir: str | None) -> TrainSpec:
    """The TrainSpec the workers get."""
    from retinanet.ray_train import TrainSpec
    from retinanet.train_loop import TrainConfig

    return TrainSpec(
        labels=tuple(str(Path(p).resolve()) for p in opts.labels),
        out_dir=str(opts.out.resolve()),
        model=model_cfg,
        train=TrainConfig(
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            seed=opts.seed,
            max_steps_per_epoch=opts.max_steps_per_epoch,
        ),
        val_labels=tuple(str(Path(p).resolve()) for p in opts.val_labels),
        init_checkpoint=init_dir,
        num_workers=opts.workers,
        use_gpu=opts.gpus,
        max_failures=opts.max_failures,
        cpus_per_worker=opts.cpus_per_worker or max(1, (os.cpu_count() or 1) // opts.workers),
    )


def _describe(spec: TrainSpec, data: TrainData, *, resuming: bool) -> list[str]:
    """What the run will do, said up front (images, objects per class, steps), and the warnings."""
    from retinanet.train_report import ISSUES_FILE, METRICS_FILE, read_metrics

    out = Path(spec.out_dir)
    train_objects = data.objects_per_class(data.train)
    val_objects = sum(data.objects_per_class(data.val).values())
    steps = math.ceil(math.ceil(len(data.train) / spec.num_workers) / spec.train.batch_size)
    steps = min(steps, spec.train.max_steps_per_epoch or steps)
    per_class = ", ".join(f"{name} {n}" for name, n in train_objects.items())
    lines = [
        f"training on {len(data.train)} image(s) with {sum(train_objects.values())} objects ({per_class}); "
        f"validating on {len(data.val)} image(s) with {val_objects} objects; {spec.train.epochs} epochs "
        f"x {steps} step(s) of {spec.train.batch_size} per worker, {spec.num_workers} worker(s)"
    ]
    if resuming:
        lines.insert(0, f"resuming the run in {out}: {len(read_metrics(out / METRICS_FILE))} epoch(s) done")
    untrained = [name for name, n in train_objects.items() if n == 0]
    if untrained:
        lines.append(
            f"warning: no training boxes of class(es) {', '.join(untrained)}: the model cannot learn them"
        )
    if data.issues:
        lines.append(
            f"warning: {len(data.issues)} label row(s) left out, all listed in {out / ISSUES_FILE}; "
            f"first: {data.issues[0]}"
        )
    if val_objects == 0:
        lines.append(
            "warning: the validation images hold no boxes: AP50 cannot be measured, only last/ is written"
        )
    return lines


def _start_run(out: Path, *, overwrite: bool, issues: list[LabelIssue]) -> None:
    """Inputs are valid: clear the old run (``--overwrite``), write the label issues."""
    from retinanet.train_report import ISSUES_FILE

    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if issues:
        (out / ISSUES_FILE).write_text("".join(f"{issue}\n" for issue in issues))


def _fit(spec: TrainSpec, data: TrainData, *, progress: bool) -> None:
    """Train with one progress bar; a run that fails exits 1 with one line."""
    from ray.train import TrainingFailedError

    from retinanet.ray_train import run_training
    from retinanet.train_report import METRICS_FILE, EpochProgress

    out = Path(spec.out_dir)
    try:
        with EpochProgress(out / METRICS_FILE, spec.train.epochs, enabled=progress):
            run_training(spec, data)
    except TrainingFailedError as exc:
        # the message ends with the worker's (or controller's) exception line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        click.echo(
            f"error: training failed: {lines[-1] if lines else type(exc).__name__}\n"
            f"Ray's logs: {out / LOG_DIR}; rerun with --resume to continue from the last checkpoint",
            err=True,
        )
        sys.exit(1)


@click.command("train", epilog=EPILOG)
@click.argument("labels", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Ray Train workers."
)
@click.option("--gpus", is_flag=True, help="One GPU per worker (nccl).")
@click.option(
    "--backbone",
    default="resnet18",
    show_default=True,
    type=click.Choice(BACKBONES),
)
@click.option(
    "--init", "init_ckpt", default=None, help="Checkpoint or run to fine-tune from (classes matched by name)."
)
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@overwrite_option
@click.option(
    "--val",
    "val_labels",
    multiple=True,
    type=click.Path(exists=True),
    help="Validation labels (else whole scenes/images are held out).",
)
@click.option(
    "--classes",
    default=None,
    callback=_parse_classes,
    help="Comma-separated class names [default: from the labels].",
)
@tile_size_option(256, "Tile edge that GeoParquet/GeoPackage scenes are cut into.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--lr", default=1e-3, show_default=True, type=finite_float_range(1e-8, 1.0), help="Peak learning rate."
)
@bands_option("1,2,3")
@click.option(
    "--anchor-sizes-px",
    default="16,32,64,128,256",
    show_default=True,
    callback=_parse_anchors,
    help="Base anchor size per level P3..P7 (paper: 32,64,128,256,512).",
)
@click.option("--max-steps-per-epoch", default=None, type=click.IntRange(min=1))
@click.option(
    "--cpus-per-worker", default=None, type=click.IntRange(min=1), help="[default: all CPUs / workers]"
)
@click.option("--max-failures", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=int)
@progress_option
@address_option
@verbose_option
def train_command(**options: Any) -> None:
    """Train RetinaNet on LABELS (COCO .json, VOC .xml, DeepForest .csv, GeoParquet/GPKG)."""
    from retinanet.train_report import summary_lines

    opts = TrainOptions(**options)
    previous = _check_out(opts)
    data = _read_data(opts, previous.class_names if previous is not None else opts.classes)
    model_cfg, data, init_dir = _model_config(opts, data, previous)
    spec = _spec(opts, model_cfg, init_dir)
    for line in _describe(spec, data, resuming=previous is not None):
        click.echo(line, err=line.startswith("warning"))
    _start_run(opts.out, overwrite=opts.overwrite, issues=data.issues)
    with ray_session(opts.address, opts.out / LOG_DIR, verbose=opts.verbose):
        _fit(spec, data, progress=not opts.no_progress)
    click.echo("\n".join(summary_lines(opts.out)))


def main() -> None:
    """Entry point of ``python -m jobs.train`` (``aerialdet train`` with the same error handling)."""
    run_standalone(train_command)


if __name__ == "__main__":
    main()
