"""A training request -> the run to do: model config, schedule, ``TrainSpec``, what to tell the user.

``plan_training(TrainOptions)`` does, before anything is written or Ray is
started: check the run directory (a run to resume gives its
``train_spec.json``); read the label files once (``read_train_data``: it
also splits off validation and refuses data that cannot train); build the
model config (band statistics of the training images, or the ``--init``
checkpoint's with its classes merged by name, or an imported
DeepForest/torchvision file's); plan the epochs and tiles; build the
``TrainSpec``; and say what will run (images, tiles, objects per class,
steps) with warnings when it is too little.  ``start_run`` then clears an
overwritten run and writes the label issues and an imported ``--init``
model.  Plain code: no click, no Ray (and importing it loads no torch);
refusals are ``TrainPlanError``.

Schedule: every label format is cut into training tiles of
``tile_size_px`` (``retinanet.labeled_tiles.TrainingTiles``: an image gives
as many tiles per epoch as cover it, and an epoch is at least 25 steps).  The
run is ``steps`` optimizer steps (epochs follow), or ``epochs`` epochs; with
neither, 12 epochs but at least ``MIN_STEPS`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retinanet.config import Backbone, BoxLoss
from retinanet.label_formats import largest_object_px as largest_object_px  # re-exported: jobs.train

if TYPE_CHECKING:
    from retinanet.config import ModelConfig
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_loop import TrainConfig
    from retinanet.train_spec import TrainSpec

DEFAULT_BANDS = (1, 2, 3)
DEFAULT_EPOCHS = 12
# From scratch, fewer optimizer steps than this leave RetinaNet's classifier at
# its prior (scores ~0.01-0.1): the default schedule runs at least this many.
MIN_STEPS = 300
# Fewer training objects than this rarely train a usable detector from scratch.
MIN_OBJECTS = 100
IMPORTED_INIT_DIR = "init"


class TrainPlanError(ValueError):
    """A training request that cannot run, said in one line.

    Attributes:
        option: the command-line option (or argument) at fault, e.g. ``--init``;
            None when the problem is the run directory or the labels.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class TrainOptions:
    """A training request, one field per ``aerialdet train`` option (``jobs.train`` parses them)."""

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
    class_map: tuple[tuple[str, str], ...] = ()
    single_class: str | None = None
    gsd_m: float | None = None  # retinanet.train_gsd: the GSD to train at, and plain images' GSD
    native_resolution: bool = False
    label_gsd_m: float | None = None

    @property
    def out(self) -> Path:
        """The run directory."""
        return Path(self.out_dir)


@dataclass(frozen=True)
class Init:
    """Where the weights start: nothing, a checkpoint directory, or an imported model to write first.

    Attributes:
        checkpoint: the checkpoint directory the workers fine-tune from.
        imported: (model, its ModelConfig) imported from a weights file, to be
            written to ``checkpoint`` by ``start_run``.
    """

    checkpoint: str | None = None
    imported: Any = None


@dataclass(frozen=True)
class TrainPlan:
    """The run ``plan_training`` settled on.

    Attributes:
        out: the run directory, as given.
        spec: what the workers get.
        data: the images, with ids into ``spec.model.class_names``.
        init: the starting weights (an imported model is written by ``start_run``).
        init_source: the ``--init`` value the imported model came from.
        lines: what the run will do and the warnings (``warning: ...``), to print up front.
        overwrite: ``start_run`` deletes the old run first.
    """

    out: Path
    spec: TrainSpec
    data: TrainData
    init: Init
    init_source: str | None
    lines: list[str]
    overwrite: bool


def _check_writable(out: Path) -> None:
    """Refuse a run directory that cannot be created, without creating anything."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TrainPlanError(f"--out {out}: {existing} is a file, not a directory; choose another --out")
    if not os.access(existing, os.W_OK):
        raise TrainPlanError(f"--out {out}: {existing} is not writable; choose another --out")


def resumed_spec(opts: TrainOptions) -> TrainSpec | None:
    """Check the run directory against resume/overwrite; the TrainSpec of the run to resume, if any."""
    from retinanet.ray_train import RAY_DIR
    from retinanet.train_spec import SPEC_FILE, spec_from_json

    if (opts.out / RAY_DIR).exists() and not (opts.resume or opts.overwrite):
        raise TrainPlanError(
            f"{opts.out} already holds a training run; pass --resume to continue it or --overwrite to start over"
        )
    _check_writable(opts.out)
    spec_file = opts.out / SPEC_FILE
    if not (opts.resume and spec_file.is_file()):
        return None
    try:
        return spec_from_json(json.loads(spec_file.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainPlanError(f"{spec_file}: cannot be read ({exc}); start over with --overwrite") from None


def keep_weight_average(opts: TrainOptions, resumed: TrainSpec | None) -> TrainOptions:
    """``ema`` of a resumed run: its own unless given, and no other (the average in its checkpoint).

    A new run without ``ema`` keeps no average (0).
    """
    own = 0 if resumed is None else (resumed.train.ema_half_life_steps or 0)
    if opts.ema is None:
        return dataclasses.replace(opts, ema=own)
    if resumed is not None and opts.ema != own:
        raise TrainPlanError(
            f"--ema {opts.ema}: the run in {opts.out} was started with --ema {own}; "
            f"resume it with --ema {own} or leave --ema out"
        )
    return opts


def _read_data(opts: TrainOptions, resumed: TrainSpec | None) -> tuple[TrainData, float | None, list[str]]:
    """The run's labels read through its class map, at its GSD (``train_gsd``: data, GSD, lines); one-line errors."""
    from retinanet.class_map import ClassMap
    from retinanet.errors import LabelError
    from retinanet.labeled_tiles import read_train_data
    from retinanet.train_gsd import at_training_gsd

    classes = opts.classes if resumed is None else resumed.model.class_names
    rename, single = opts.class_map, opts.single_class
    try:
        class_map = ClassMap(classes=classes, rename=rename, single_class=single)
    except ValueError as exc:
        raise TrainPlanError(str(exc), option="--single-class" if single else "--map") from None
    try:
        read = partial(read_train_data, opts.labels, opts.val_labels, seed=opts.seed, class_map=class_map)
        return at_training_gsd(read, opts, resumed)
    except LabelError as exc:
        raise TrainPlanError(str(exc)) from None


def is_import(init: str) -> bool:
    """Whether ``--init`` names a DeepForest/torchvision weights file rather than a checkpoint or run."""
    path = Path(init)
    if path.is_file():
        return True
    from retinanet.checkpoint import META_FILE, SAFETENSORS_FILE

    return path.is_dir() and (path / SAFETENSORS_FILE).is_file() and not (path / META_FILE).is_file()


def _quiet(line: str) -> None:
    """A ``say`` that says nothing."""


def init_checkpoint(
    init: str, data: TrainData, say: Callable[[str], None] = _quiet
) -> tuple[ModelConfig, str, Any]:
    """The ``--init`` ModelConfig, its checkpoint directory, and the imported model if it needs writing.

    A checkpoint or run directory is used as it is (a run gives best/, else
    last/); a DeepForest release or torchvision state dict is imported
    (``retinanet.checkpoint.import_model``) and written to ``OUT/init``.
    ``say`` gets a line about what was imported or chosen.
    """
    from retinanet.checkpoint import CheckpointError, import_model, read_config, resolve_checkpoint

    try:
        if is_import(init):
            names = data.class_names if len(data.class_names) > 1 else None
            try:
                model, config = import_model(init)
            except CheckpointError:
                if names is None:
                    raise
                model, config = import_model(init, class_names=names)
            say(f"--init: imported {init} (ResNet-50 FPN RetinaNet, classes {list(config.class_names)})")
            return config, IMPORTED_INIT_DIR, model
        ckpt, note = resolve_checkpoint(init)
        if note:
            say(f"--init: {note}")
        return read_config(ckpt), str(Path(ckpt).resolve()), None
    except CheckpointError as exc:
        raise TrainPlanError(str(exc), option="--init") from None


def _check_bands(data: TrainData, bands: tuple[int, ...], option: str) -> None:
    """Every training and validation image has ``bands``, else a one-line error about ``option``."""
    from retinanet.errors import LabelError
    from retinanet.labeled_tiles import check_bands

    try:
        check_bands(data.train + data.val, bands)
    except LabelError as exc:
        raise TrainPlanError(str(exc), option=option) from None


def new_model_config(opts: TrainOptions, data: TrainData) -> ModelConfig:
    """A from-scratch ModelConfig: band mean/std measured on the training images."""
    from retinanet.config import BandConfig, ModelConfig
    from retinanet.labeled_tiles import band_stats

    bands = opts.bands or DEFAULT_BANDS
    _check_bands(data, bands, "--bands")
    mean, std = band_stats(data.train, bands)
    return ModelConfig(
        class_names=data.class_names,
        backbone=Backbone(opts.backbone),
        anchor_sizes_px=opts.anchor_sizes_px,
        box_loss=BoxLoss(opts.box_loss) if opts.box_loss else BoxLoss.L1,
        band_config=BandConfig(bands=bands, mean=mean, std=std),
        tile_size_px=opts.tile_size_px,
    )


def model_config(
    opts: TrainOptions, data: TrainData, previous: ModelConfig | None, say: Callable[[str], None] = _quiet
) -> tuple[ModelConfig, TrainData, Init]:
    """(ModelConfig, data with ids into its classes, starting weights): resumed, fine-tuned or new.

    Fine-tuning keeps the ``--init`` checkpoint's classes in their order and
    appends the labels' new ones (``say`` gets the merged list).
    """
    if previous is not None:
        _check_bands(data, previous.band_config.bands, "LABELS")
        return previous, data, Init()  # the labels were read with its class names
    if not opts.init_ckpt:
        return new_model_config(opts, data), data, Init()
    base, init_dir, imported = init_checkpoint(opts.init_ckpt, data, say)
    if imported is not None:
        init_dir = str((opts.out / IMPORTED_INIT_DIR).resolve())
    _check_bands(data, base.band_config.bands, "--init")
    names = base.class_names + tuple(n for n in data.class_names if n not in base.class_names)
    say(f"fine-tuning {opts.init_ckpt}: classes {list(base.class_names)} -> {list(names)}")
    box_loss = opts.box_loss or base.box_loss
    config = base.replace(class_names=names, tile_size_px=opts.tile_size_px, box_loss=box_loss)
    return config, data.relabel(names), Init(init_dir, None if imported is None else (imported, base))


def _check_backbone_weights(path: str, config: ModelConfig) -> None:
    """Load ``--backbone-weights`` into a model once on the driver: a bad file is one line, not a worker traceback."""
    from retinanet.checkpoint import CheckpointError, load_backbone_weights
    from retinanet.model import build_model

    try:
        load_backbone_weights(build_model(config), path)
    except CheckpointError as exc:
        raise TrainPlanError(str(exc), option="--backbone-weights") from None


def epoch_tiles(data: TrainData, tile_size_px: int, min_tiles: int) -> tuple[int, int]:
    """(tiles that cover the training images, tiles per epoch: ``TrainingTiles``'s, at least ``min_tiles``)."""
    from retinanet.labeled_tiles import epoch_images, image_size

    sizes = [image_size(im) for im in data.train]
    return len(epoch_images(sizes, tile_size_px)), len(epoch_images(sizes, tile_size_px, min_tiles))


def _min_tiles(opts: TrainOptions) -> int:
    """Tiles of the shortest epoch (``TrainConfig.min_steps_per_epoch`` steps of every worker)."""
    from retinanet.train_loop import TrainConfig, min_epoch_tiles

    return min_epoch_tiles(TrainConfig(batch_size=opts.batch_size), opts.workers)


def train_config(opts: TrainOptions, num_tiles: int) -> TrainConfig:
    """TrainConfig with the schedule: ``steps``, else ``epochs``, else 12 epochs and >= MIN_STEPS steps."""
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


def recorded_input(data: TrainData, config: ModelConfig) -> dict[str, Any]:
    """``meta.json``'s ``input``: the dtype/range of the training images (``retinanet.checkpoint_input``)."""
    from retinanet.checkpoint_input import image_kinds, input_meta, training_input
    from retinanet.errors import LabelError

    try:
        kinds = image_kinds([im.path for im in data.train])
    except LabelError as exc:
        raise TrainPlanError(str(exc)) from None
    return input_meta(training_input(kinds, config.band_config))


def _spec(
    opts: TrainOptions, model_cfg: ModelConfig, init: Init, num_tiles: int, data: TrainData
) -> TrainSpec:
    """The TrainSpec the workers get."""
    from retinanet.train_spec import TrainSpec

    return TrainSpec(
        labels=tuple(str(Path(p).resolve()) for p in opts.labels),
        out_dir=str(opts.out.resolve()),
        model=model_cfg,
        train=train_config(opts, num_tiles),
        val_labels=tuple(str(Path(p).resolve()) for p in opts.val_labels),
        init_checkpoint=init.checkpoint,
        num_workers=opts.workers,
        use_gpu=opts.gpus,
        max_failures=opts.max_failures,
        cpus_per_worker=opts.cpus_per_worker or max(1, (os.cpu_count() or 1) // opts.workers),
        backbone_weights=str(Path(opts.backbone_weights).resolve()) if opts.backbone_weights else None,
        largest_object_px=largest_object_px(data.train),
        input_kind=recorded_input(data, model_cfg),
        class_map=opts.class_map,
        single_class=opts.single_class,
        label_gsd_m=opts.label_gsd_m,
    )


def plan_training(opts: TrainOptions, say: Callable[[str], None] = _quiet) -> TrainPlan:
    """Settle the run ``opts`` asks for, writing nothing: resumed, fine-tuned or new.

    Args:
        opts: the request.
        say: gets the ``--init`` notes as they happen (what was imported, the merged classes).

    Returns:
        the plan: ``TrainPlan.lines`` say what will run, with its warnings.

    Raises:
        TrainPlanError: the run directory, the labels, ``--init``, ``--bands``,
            ``--backbone-weights`` or ``--ema`` cannot serve the run (one line).
    """
    from retinanet.train_report import describe
    from retinanet.val_split import unvalidated_warning

    resumed = resumed_spec(opts)
    opts = keep_weight_average(opts, resumed)
    if resumed is not None and not (opts.class_map or opts.single_class):  # the map it was started with
        opts = dataclasses.replace(opts, class_map=resumed.class_map, single_class=resumed.single_class)
    previous = None if resumed is None else resumed.model
    data, gsd_m, said = _read_data(opts, resumed)
    model_cfg, data, init = model_config(opts, data, previous, say)
    if opts.backbone_weights and previous is None:
        _check_backbone_weights(opts.backbone_weights, model_cfg)
    tiles = epoch_tiles(data, model_cfg.tile_size_px, _min_tiles(opts))
    spec = _spec(opts, model_cfg.replace(gsd_m=gsd_m), init, tiles[1], data)
    resuming = previous is not None
    lines = describe(spec, data, tiles, resuming=resuming, min_steps=MIN_STEPS, min_objects=MIN_OBJECTS)
    lines += unvalidated_warning(data.train, data.val, data.class_names) + said
    return TrainPlan(opts.out, spec, data, init, opts.init_ckpt, lines, opts.overwrite)


def start_run(plan: TrainPlan) -> None:
    """Inputs are valid: clear the old run (overwrite), write the label issues and an imported ``--init`` model."""
    from retinanet.train_report import ISSUES_FILE

    out = plan.out
    if plan.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if plan.data.issues:
        (out / ISSUES_FILE).write_text("".join(f"{issue}\n" for issue in plan.data.issues))
    if plan.init.imported is not None:
        from retinanet.checkpoint import save_dir

        model, config = plan.init.imported
        save_dir(out / IMPORTED_INIT_DIR, model, config, extra_meta={"imported_from": plan.init_source})
