"""``aerialdet train`` / ``python -m jobs.train``: labeled tiles -> checkpoint directory.

Steps: check ``--out``; read the label files once (``read_train_data``: it
also splits off validation and refuses data that cannot train) before
anything is written or Ray is started; build the model config (band
statistics of the training images, or the ``--init`` checkpoint's, or an
imported DeepForest/torchvision file's); say what will run (images, tiles,
objects per class, steps) and warn when it is too little; train on Ray with
one progress bar fed by ``OUT/metrics.jsonl``; print one summary that names
only the checkpoints that were written.

Schedule: every label format is cut into training tiles of
``--tile-size-px`` (``retinanet.labeled_tiles.TrainingTiles``: an image gives
as many tiles per epoch as cover it, and an epoch is at least 25 steps).  The run is ``--steps`` optimizer steps
(epochs follow), or ``--epochs`` epochs; with neither, 12 epochs but at least
``MIN_STEPS`` steps.
"""

from __future__ import annotations

import dataclasses
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
    out_option,
    overwrite_option,
    precision_option,
    progress_option,
    run_standalone,
    seed_option,
    tile_size_option,
    verbose_option,
)
from jobs.ray_session import ray_session
from retinanet.config import BACKBONES, BOX_LOSSES, BoxLoss

EPILOG = """\b
Examples:
  $ aerialdet synth data/synth --scenes 6 --size-px 1024
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 12 --backbone resnet18
  $ aerialdet train new_labels.csv --out runs/ft --init runs/demo --epochs 5
  $ aerialdet train trees/*.xml --out runs/trees --init NEON.pt --steps 500
  $ aerialdet train trees/*.xml --out runs/trees --backbone resnet50 --backbone-weights resnet50-0676ba61.pth
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 20 --resume
  $ ray job submit --working-dir . -- python -m jobs.train labels.parquet --out /shared/runs/a --workers 4 --gpus

Every label format is cut into random training tiles of --tile-size-px
(a 1249 px image gives 25 tiles of 256 px per epoch; an epoch is at least
25 steps, a small data set repeating its tiles as fresh random crops, so it
is not validated and checkpointed every few steps). Writes OUT/last
(every epoch) and OUT/best (best validation AP50, needs validation boxes;
its meta.json holds the best-F1 score threshold per class at IoU 0.4),
checkpoints for `aerialdet detect --model`,
OUT/metrics.jsonl, OUT/training.png, and Ray's logs under OUT/_logs.
"""

if TYPE_CHECKING:
    from retinanet.config import ModelConfig
    from retinanet.labeled_tiles import LabelIssue, TrainData
    from retinanet.ray_train import TrainSpec

DEFAULT_BANDS = (1, 2, 3)
DEFAULT_EPOCHS = 12
# From scratch, fewer optimizer steps than this leave RetinaNet's classifier at
# its prior (scores ~0.01-0.1): the default schedule runs at least this many.
MIN_STEPS = 300
# Fewer training objects than this rarely train a usable detector from scratch.
MIN_OBJECTS = 100
IMPORTED_INIT_DIR = "init"


def _parse_anchors(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """``16,32,64,128,256`` -> five positive ints (click callback)."""
    try:
        sizes = tuple(int(a) for a in value.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 5 or min(sizes) < 1:
        raise click.BadParameter(f"expected 5 comma-separated positive integers, got {value!r}", param=param)
    return sizes


def _parse_scale_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    """``0.8,1.25`` -> (low, high) scale jitter factors, 0.1 <= low <= high <= 10 (click callback)."""
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        low = high = math.nan
    if not (0.1 <= low <= high <= 10.0):
        raise click.BadParameter(
            f"expected LOW,HIGH with 0.1 <= LOW <= HIGH <= 10, got {value!r}", param=param
        )
    return low, high


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
    epochs: int | None
    steps: int | None
    workers: int
    gpus: bool
    backbone: str
    init_ckpt: str | None
    backbone_weights: str | None
    resume: bool
    overwrite: bool
    val_labels: tuple[str, ...]
    classes: tuple[str, ...] | None
    tile_size_px: int
    batch_size: int
    lr: float
    augment: bool
    scale_range: tuple[float, float]
    precision: str
    bands: tuple[int, ...] | None
    anchor_sizes_px: tuple[int, ...]
    box_loss: str | None
    ema: int | None
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


def _check_out(opts: TrainOptions) -> TrainSpec | None:
    """Check ``--out`` against the flags; the TrainSpec of the run to resume, if any."""
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
        return spec_from_json(json.loads(spec_file.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{spec_file}: cannot be read ({exc}); start over with --overwrite") from None


def _keep_weight_average(opts: TrainOptions, resumed: TrainSpec | None) -> TrainOptions:
    """``--ema`` of a resumed run: its own unless given, and no other (the average in its checkpoint).

    A new run without ``--ema`` keeps no average (0).
    """
    own = 0 if resumed is None else (resumed.train.ema_half_life_steps or 0)
    if opts.ema is None:
        return dataclasses.replace(opts, ema=own)
    if resumed is not None and opts.ema != own:
        raise UserError(
            f"--ema {opts.ema}: the run in {opts.out} was started with --ema {own}; "
            f"resume it with --ema {own} or leave --ema out"
        )
    return opts


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


def _is_import(init: str) -> bool:
    """Whether ``--init`` names a DeepForest/torchvision weights file rather than a checkpoint or run."""
    path = Path(init)
    if path.is_file():
        return True
    from retinanet.checkpoint import META_FILE, SAFETENSORS_FILE

    return path.is_dir() and (path / SAFETENSORS_FILE).is_file() and not (path / META_FILE).is_file()


def _init_checkpoint(init: str, data: TrainData) -> tuple[ModelConfig, str, Any]:
    """The ``--init`` ModelConfig, its checkpoint directory, and the imported model if it needs writing.

    A checkpoint or run directory is used as it is (a run gives best/, else
    last/); a DeepForest release or torchvision state dict is imported
    (``retinanet.checkpoint.import_model``) and written to ``OUT/init``.
    """
    from retinanet.checkpoint import CheckpointError, import_model, read_config, resolve_checkpoint

    try:
        if _is_import(init):
            names = data.class_names if len(data.class_names) > 1 else None
            try:
                model, config = import_model(init)
            except CheckpointError:
                if names is None:
                    raise
                model, config = import_model(init, class_names=names)
            click.echo(
                f"--init: imported {init} (ResNet-50 FPN RetinaNet, classes {list(config.class_names)})"
            )
            return config, IMPORTED_INIT_DIR, model
        ckpt, note = resolve_checkpoint(init)
        if note:
            click.echo(f"--init: {note}")
        return read_config(ckpt), str(Path(ckpt).resolve()), None
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
        box_loss=opts.box_loss or BoxLoss.L1,
        band_config=BandConfig(bands=bands, mean=mean, std=std),
        tile_size_px=opts.tile_size_px,
    )


@dataclass(frozen=True)
class _Init:
    """Where the weights start: nothing, a checkpoint directory, or an imported model to write first."""

    checkpoint: str | None = None
    imported: Any = None


def _model_config(
    opts: TrainOptions, data: TrainData, previous: ModelConfig | None
) -> tuple[ModelConfig, TrainData, _Init]:
    """(ModelConfig, data with ids into its classes, starting weights): resumed, fine-tuned or new."""
    if previous is not None:
        _check_bands(data, previous.band_config.bands, "LABELS")
        return previous, data, _Init()  # the labels were read with its class names
    if not opts.init_ckpt:
        return _new_model_config(opts, data), data, _Init()
    base, init_dir, imported = _init_checkpoint(opts.init_ckpt, data)
    if imported is not None:
        init_dir = str((opts.out / IMPORTED_INIT_DIR).resolve())
    _check_bands(data, base.band_config.bands, "--init")
    names = base.class_names + tuple(n for n in data.class_names if n not in base.class_names)
    click.echo(f"fine-tuning {opts.init_ckpt}: classes {list(base.class_names)} -> {list(names)}")
    box_loss = opts.box_loss or base.box_loss
    config = base.replace(class_names=names, tile_size_px=opts.tile_size_px, box_loss=box_loss)
    return config, data.relabel(names), _Init(init_dir, None if imported is None else (imported, base))


def _check_backbone_weights(path: str, config: ModelConfig) -> None:
    """Load ``--backbone-weights`` into a model once on the driver: a bad file is one line, not a worker traceback."""
    from retinanet.checkpoint import CheckpointError, load_backbone_weights
    from retinanet.model import build_model

    try:
        load_backbone_weights(build_model(config), path)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--backbone-weights") from None


def _epoch_tiles(data: TrainData, tile_size_px: int, min_tiles: int) -> tuple[int, int]:
    """(tiles that cover the training images, tiles per epoch: ``TrainingTiles``'s, at least ``min_tiles``)."""
    from retinanet.labeled_tiles import epoch_images, image_size

    sizes = [image_size(im) for im in data.train]
    return len(epoch_images(sizes, tile_size_px)), len(epoch_images(sizes, tile_size_px, min_tiles))


def _min_tiles(opts: TrainOptions) -> int:
    """Tiles of the shortest epoch (``TrainConfig.min_steps_per_epoch`` steps of every worker)."""
    from retinanet.train_loop import TrainConfig, min_epoch_tiles

    return min_epoch_tiles(TrainConfig(batch_size=opts.batch_size), opts.workers)


def _train_config(opts: TrainOptions, num_tiles: int) -> Any:
    """TrainConfig with the schedule: ``--steps``, else ``--epochs``, else 12 epochs and >= MIN_STEPS steps."""
    from retinanet.train_loop import TrainConfig, schedule

    config = TrainConfig(
        epochs=opts.epochs or DEFAULT_EPOCHS,
        batch_size=opts.batch_size,
        lr=opts.lr,
        precision=opts.precision,
        seed=opts.seed,
        max_steps_per_epoch=opts.max_steps_per_epoch,
        augment=opts.augment,
        # --no-augment: no scale jitter either, every tile at the labels' own scale
        scale_range=opts.scale_range if opts.augment else (1.0, 1.0),
        ema_half_life_steps=opts.ema or None,
    )
    _, total = schedule(num_tiles, config, opts.workers)
    if opts.steps:
        total = opts.steps
    elif opts.epochs is None:
        total = max(total, MIN_STEPS)
    epochs, total = schedule(num_tiles, dataclasses.replace(config, total_steps=total), opts.workers)
    return dataclasses.replace(config, epochs=epochs, total_steps=total)


def _spec(
    opts: TrainOptions, model_cfg: ModelConfig, init: _Init, num_tiles: int, data: TrainData
) -> TrainSpec:
    """The TrainSpec the workers get."""
    from retinanet.ray_train import TrainSpec

    return TrainSpec(
        labels=tuple(str(Path(p).resolve()) for p in opts.labels),
        out_dir=str(opts.out.resolve()),
        model=model_cfg,
        train=_train_config(opts, num_tiles),
        val_labels=tuple(str(Path(p).resolve()) for p in opts.val_labels),
        init_checkpoint=init.checkpoint,
        num_workers=opts.workers,
        use_gpu=opts.gpus,
        max_failures=opts.max_failures,
        cpus_per_worker=opts.cpus_per_worker or max(1, (os.cpu_count() or 1) // opts.workers),
        backbone_weights=str(Path(opts.backbone_weights).resolve()) if opts.backbone_weights else None,
        largest_object_px=largest_object_px(data.train),
    )


def largest_object_px(images: Any) -> float | None:
    """The largest side of any box in ``images`` (``LabeledImage``), px; None without boxes."""
    import numpy as np

    sides = [
        float(np.max(im.boxes_xyxy_px[:, 2:] - im.boxes_xyxy_px[:, :2]))
        for im in images
        if len(im.boxes_xyxy_px)
    ]
    return max(sides) if sides else None


def _tiles_said(tile_size_px: int, covering: int, num_tiles: int) -> str:
    """``N tile(s) of P px per epoch``, saying when the epoch floor repeats them."""
    repeated = f", repeated to {num_tiles}" if num_tiles > covering else ""
    return f"{covering} tile(s) of {tile_size_px} px{repeated} per epoch"


def _describe(spec: TrainSpec, data: TrainData, tiles: tuple[int, int], *, resuming: bool) -> list[str]:
    """What the run will do, said up front (images, tiles, objects per class, steps), and the warnings.

    ``tiles``: (tiles that cover the training images, tiles per epoch) from ``_epoch_tiles``.
    """
    from retinanet.train_loop import steps_per_epoch

    out = Path(spec.out_dir)
    train_objects = data.objects_per_class(data.train)
    val_objects = sum(data.objects_per_class(data.val).values())
    per_epoch = steps_per_epoch(tiles[1], spec.train, spec.num_workers)
    total = spec.train.total_steps or per_epoch * spec.train.epochs
    per_class = ", ".join(f"{name} {n}" for name, n in train_objects.items())
    lines = [
        f"training on {len(data.train)} image(s) with {sum(train_objects.values())} objects ({per_class}); "
        f"validating on {len(data.val)} image(s) with {val_objects} objects; "
        f"{_tiles_said(spec.model.tile_size_px, *tiles)}; {total} step(s) of {spec.train.batch_size} tile(s) per "
        f"worker = {spec.train.epochs} epoch(s) x {per_epoch} step(s), {spec.num_workers} worker(s)"
    ]
    if resuming:
        from retinanet.train_report import METRICS_FILE, read_metrics

        lines.insert(0, f"resuming the run in {out}: {len(read_metrics(out / METRICS_FILE))} epoch(s) done")
    return lines + _warnings(spec, data, train_objects, total, val_objects)


def _warnings(
    spec: TrainSpec, data: TrainData, train_objects: dict[str, int], total_steps: int, val_objects: int
) -> list[str]:
    """Warnings: classes without boxes, too little data or too few steps, rows left out, no validation boxes."""
    from retinanet.train_report import ISSUES_FILE

    out = Path(spec.out_dir)
    lines = []
    untrained = [name for name, n in train_objects.items() if n == 0]
    if untrained:
        lines.append(
            f"warning: no training boxes of class(es) {', '.join(untrained)}: the model cannot learn them"
        )
    from_scratch = spec.init_checkpoint is None
    if from_scratch and sum(train_objects.values()) < MIN_OBJECTS:
        lines.append(
            f"warning: {sum(train_objects.values())} training objects is little to learn from scratch "
            f"(aim for {MIN_OBJECTS}+), or fine-tune a trained model with --init"
        )
    if from_scratch and total_steps < MIN_STEPS:
        lines.append(
            f"warning: {total_steps} optimizer steps is too few to train from scratch; use --steps {MIN_STEPS} or more"
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
@out_option("Run directory.")
@click.option(
    "--epochs",
    default=None,
    type=click.IntRange(min=1),
    help=f"Epochs (passes over the training tiles) [default: {DEFAULT_EPOCHS}, at least {MIN_STEPS} steps].",
)
@click.option(
    "--steps",
    default=None,
    type=click.IntRange(min=1),
    help="Optimizer steps of the whole run (epochs follow from it; overrides --epochs).",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Ray Train workers."
)
@click.option("--gpus", is_flag=True, help="One GPU per worker (nccl).")
@click.option(
    "--backbone",
    default="resnet18",
    show_default=True,
    type=click.Choice(BACKBONES),
    help="ResNet depth under the FPN (--backbone-weights must be of the same depth).",
)
@click.option(
    "--init",
    "init_ckpt",
    default=None,
    help="Checkpoint or run to fine-tune from (classes matched by name), or a DeepForest release "
    "(.pt, Lightning .ckpt, model.safetensors) or torchvision RetinaNet state dict to import.",
)
@click.option(
    "--backbone-weights",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="torchvision ResNet state dict (e.g. ImageNet resnet50-*.pth) to start the backbone from.",
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
@tile_size_option(
    256, "Training tile edge: images of every label format are cut into random tiles of this size."
)
@click.option(
    "--batch-size",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Tiles per step per worker.",
)
@click.option(
    "--lr", default=1e-3, show_default=True, type=finite_float_range(1e-8, 1.0), help="Peak learning rate."
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Flips, 90-degree rotations, brightness/contrast/hue and scale jitter of training tiles.",
)
@click.option(
    "--scale-range",
    default="0.8,1.25",
    show_default=True,
    callback=_parse_scale_range,
    help="Scale jitter LOW,HIGH: a crop of tile/s px is resized to the tile, s between them "
    "(0.5,1.5 also teaches objects at half and 1.5x their labeled size; ignored with --no-augment).",
)
@precision_option(
    "fp32",
    "Forward-pass arithmetic (autocast; weights, gradients and losses stay float32); auto: "
    "fp16 on GPU, bf16 on CPUs with native bfloat16 (1.7x faster steps measured on AVX-512 BF16).",
)
@bands_option("1,2,3")
@click.option(
    "--anchor-sizes-px",
    default="16,32,64,128,256",
    show_default=True,
    callback=_parse_anchors,
    help="Base anchor size per level P3..P7 (paper: 32,64,128,256,512).",
)
@click.option(
    "--box-loss",
    type=click.Choice(BOX_LOSSES),
    default=None,
    help="Box regression loss: l1 on anchor offsets (torchvision's RetinaNet) or giou on the boxes "
    "(RetinaNet v2), which rewards overlap with the labeled box directly [default: l1; with --init "
    "the checkpoint's; a resumed run keeps its own].",
)
@click.option(
    "--ema",
    default=None,
    type=click.IntRange(min=0),
    metavar="STEPS",
    help="Validate and checkpoint an exponential moving average of the weights with a half-life of STEPS "
    "optimizer steps (e.g. a tenth of the run; about 7% slower steps on a CPU). 0: the weights as trained "
    "[default: 0; a resumed run keeps its own].",
)
@click.option(
    "--max-steps-per-epoch",
    default=None,
    type=click.IntRange(min=1),
    help="Cap on an epoch's steps (for quick runs).",
)
@click.option(
    "--cpus-per-worker",
    default=None,
    type=click.IntRange(min=1),
    help="CPUs (and torch threads) per worker [default: this machine's CPUs / --workers].",
)
@click.option(
    "--max-failures",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),
    help="Worker failures tolerated; each restarts the workers from the last checkpoint.",
)
@seed_option
@progress_option
@address_option
@verbose_option
def train_command(**options: Any) -> None:
    """Train RetinaNet on LABELS (COCO .json, VOC .xml, DeepForest .csv, GeoParquet/GPKG)."""
    from retinanet.train_report import summary_lines

    opts = TrainOptions(**options)
    if opts.init_ckpt and opts.backbone_weights:
        raise click.UsageError(
            "--init gives the whole network's weights, --backbone-weights the backbone's: pass one"
        )
    resumed = _check_out(opts)
    opts = _keep_weight_average(opts, resumed)
    previous = None if resumed is None else resumed.model
    data = _read_data(opts, previous.class_names if previous is not None else opts.classes)
    model_cfg, data, init = _model_config(opts, data, previous)
    if opts.backbone_weights and previous is None:
        _check_backbone_weights(opts.backbone_weights, model_cfg)
    tiles = _epoch_tiles(data, model_cfg.tile_size_px, _min_tiles(opts))
    spec = _spec(opts, model_cfg, init, tiles[1], data)
    for line in _describe(spec, data, tiles, resuming=previous is not None):
        click.echo(line, err=line.startswith("warning"))
    _start_run(opts.out, overwrite=opts.overwrite, issues=data.issues)
    if init.imported is not None:
        from retinanet.checkpoint import save_dir

        model, config = init.imported
        save_dir(opts.out / IMPORTED_INIT_DIR, model, config, extra_meta={"imported_from": opts.init_ckpt})
    with ray_session(opts.address, opts.out / LOG_DIR, verbose=opts.verbose):
        _fit(spec, data, progress=not opts.no_progress)
    click.echo("\n".join(summary_lines(opts.out)))


def main() -> None:
    """Entry point of ``python -m jobs.train`` (``aerialdet train`` with the same error handling)."""
    run_standalone(train_command)


if __name__ == "__main__":
    main()
