"""``aerialdet train`` / ``python -m jobs.train``: labeled tiles -> checkpoint directory.

The command parses its options into ``retinanet.train_plan.TrainOptions``,
asks ``plan_training`` for the run (it checks ``--out``, reads the label
files once, builds the model config and the ``TrainSpec``, and says what
will run, all before anything is written or Ray is started), prints that,
trains on Ray (``retinanet.ray_train.run_training``) with one progress bar
fed by ``OUT/metrics.jsonl``, and prints one summary that names only the
checkpoints that were written.  The library's ``TrainPlanError`` becomes a
one-line error naming the option at fault.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobs.options import (
    LOG_DIR,
    UserError,
    address_option,
    bands_option,
    class_map_option,
    finite_float_range,
    gsd_option,
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
from retinanet.config import BACKBONES, BOX_LOSSES
from retinanet.train_plan import (
    DEFAULT_EPOCHS,
    MIN_STEPS,
    TrainOptions,
    TrainPlanError,
    largest_object_px,
    plan_training,
    start_run,
)
from retinanet.train_plan import init_checkpoint as _init_checkpoint
from retinanet.train_plan import is_import as _is_import

if TYPE_CHECKING:
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_spec import TrainSpec

# kept importable from here for tests/unit/retinanet/test_overlap.py and test_import.py
__all__ = ["TrainOptions", "_init_checkpoint", "_is_import", "largest_object_px", "main", "train_command"]
SESSION_OPTIONS = ("address", "verbose", "no_progress")  # how to run, not what: not in TrainOptions

EPILOG = """\b
Examples:
  $ aerialdet synth data/synth --scenes 6 --size-px 1024
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 12 --backbone resnet18
  $ aerialdet train new_labels.csv --out runs/ft --init runs/demo --epochs 5
  $ aerialdet train trees/*.xml --out runs/trees --init NEON.pt --steps 500
  $ aerialdet train trees/*.xml --out runs/trees --backbone resnet50 --backbone-weights resnet50-0676ba61.pth
  $ aerialdet train data/synth/labels.parquet --out runs/demo --epochs 20 --resume
  $ aerialdet train neon/*.csv --out runs/trees --classes Tree --map Alive=Tree,Dead=Tree
  $ ray job submit --working-dir . -- python -m jobs.train labels.parquet --out /shared/runs/a --workers 4 --gpus

Every label format is cut into random training tiles of --tile-size-px
(a 1249 px image gives 25 tiles of 256 px per epoch; an epoch is at least
25 steps, a small data set repeating its tiles as fresh random crops, so it
is not validated and checkpointed every few steps). Without --val, whole
images (scenes) are held out so that training and validation both hold
boxes of every class (a class labelled in one image only is refused: map
or leave it out). Writes OUT/last (every epoch) and OUT/best (best
validation AP50 above 0, needs validation boxes; its meta.json holds the
best-F1 score threshold per class at IoU 0.4; without it OUT/no_best.txt
says why, and `detect --model OUT` uses last/), checkpoints for
`aerialdet detect --model`,
OUT/metrics.jsonl, OUT/training.png, and Ray's logs under OUT/_logs.
"""


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


def train_options(params: dict[str, Any]) -> TrainOptions:
    """``train_command``'s parsed options -> the training request (the session options left out)."""
    return TrainOptions(**{k: v for k, v in params.items() if k not in SESSION_OPTIONS})


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """``TrainPlanError`` -> click's one-line error: invalid ``--option`` (exit 2), else the message (exit 2)."""
    try:
        yield
    except TrainPlanError as exc:
        if exc.option is not None:
            raise click.BadParameter(str(exc), param_hint=exc.option) from None
        raise UserError(str(exc)) from None


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
    help="Comma-separated classes to train, in id order (after --map); labels of other classes are left "
    "out, each a label issue [default: every class of the labels].",
)
@class_map_option(
    "Rename label classes before anything else, e.g. Alive=Tree,Dead=Tree to train one Tree class from "
    "files that label trees Tree, Alive or Dead (each name must occur in the labels)."
)
@click.option(
    "--single-class",
    default=None,
    metavar="NAME",
    help="Train one class NAME: every label, whatever its class, becomes NAME.",
)
@gsd_option(
    "Train at this many metres per pixel: labeled scenes are read resampled to it [default: the --init "
    "checkpoint's gsd_m, else the median GSD of the labeled georeferenced scenes]."
)
@click.option(
    "--native-resolution",
    is_flag=True,
    help="Train on every image pixel for pixel, whatever its GSD (the behaviour before training at one GSD).",
)
@click.option(
    "--label-gsd-m",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Metres per pixel of plain images (COCO/VOC/CSV without georeferencing), to resample them too "
    "[default: used as they are].",
)
@tile_size_option(
    256,
    "Training tile edge, in model pixels (at --gsd-m): images of every label format are cut into random "
    "tiles of this size.",
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

    opts = train_options(options)
    if opts.init_ckpt and opts.backbone_weights:
        raise click.UsageError(
            "--init gives the whole network's weights, --backbone-weights the backbone's: pass one"
        )
    if opts.native_resolution and opts.gsd_m:
        raise click.UsageError(
            "--native-resolution trains at each image's own pixels, --gsd-m at one GSD: pass one"
        )
    if opts.resume and opts.overwrite:
        raise click.UsageError(
            "--resume continues the run in --out, --overwrite deletes it: pass one of them"
        )
    with _one_line_errors():
        plan = plan_training(opts, say=click.echo)
    for line in plan.lines:
        click.echo(line, err=line.startswith("warning"))
    start_run(plan)
    with ray_session(options["address"], opts.out / LOG_DIR, verbose=options["verbose"]):
        _fit(plan.spec, plan.data, progress=not options["no_progress"])
    click.echo("\n".join(summary_lines(opts.out)))


def main() -> None:
    """Entry point of ``python -m jobs.train`` (``aerialdet train`` with the same error handling)."""
    run_standalone(train_command)


if __name__ == "__main__":
    main()
