"""The training GSD: which one a run trains at, and its labeled images resampled to it.

``training_gsd`` picks the metres per model pixel of a run (issue 21):
``--gsd-m``, else the ``--init`` checkpoint's ``gsd_m``, else the median GSD
of the labeled georeferenced scenes (one per file, from its header through
``pipeline.resolution.pixel_size_m``); ``--native-resolution`` trains at each
image's own pixels as before.  A resumed run keeps its own.

``at_gsd`` then turns each labeled image into a ``ResampledImage`` at that
GSD: its size and boxes scaled to model pixels (per axis, exactly: model px
= native px / scale), its pixels read resampled (``retinanet.label_images``).
Pixel-space labels over plain images (COCO/VOC/CSV without georeferencing)
take ``--label-gsd-m``, or are used as they are (said once).

Example: labels on a 0.15 m and a 0.6 m scene train at their median, 0.375 m;
a car of 30 x 12 px at 0.15 m becomes 12 x 4.8 px.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from retinanet.gsd_images import ResampledImage
from retinanet.label_formats import LabeledImage

if TYPE_CHECKING:
    from retinanet.labeled_tiles import TrainData
    from retinanet.train_spec import TrainSpec


class GsdOptions(Protocol):
    """The options of a training request that set its GSD (``retinanet.train_plan.TrainOptions``)."""

    @property
    def gsd_m(self) -> float | None: ...  # noqa: D102
    @property
    def native_resolution(self) -> bool: ...  # noqa: D102
    @property
    def label_gsd_m(self) -> float | None: ...  # noqa: D102
    @property
    def init_ckpt(self) -> str | None: ...  # noqa: D102
    @property
    def tile_size_px(self) -> int: ...  # noqa: D102


@dataclass(frozen=True)
class GsdChoice:
    """The run's training GSD and where it came from.

    Attributes:
        gsd_m: metres per model pixel; None: each image at its own pixels.
        source: ``--gsd-m``, ``--init``, ``median``, ``resumed`` or ``native``.
    """

    gsd_m: float | None
    source: str


def pixel_sides_m(path: str) -> tuple[float, float] | None:
    """Ground size (x, y) of one pixel of an image file, metres; None for a plain (not georeferenced) image.

    Raises:
        LabelError: the file cannot be opened (naming it, one line).
    """
    from pipeline.reading import read_header
    from pipeline.resolution import pixel_size_m
    from retinanet.label_formats import image_read_config
    from retinanet.label_images import _as_label_error

    with _as_label_error():
        header = read_header(path, image_read_config(Path(path)))
    if header.crs_wkt is None:
        return None
    return pixel_size_m(header.transform, header.crs_wkt, header.width_px, header.height_px)


def _init_gsd_m(init: str | None) -> float | None:
    """``gsd_m`` of the ``--init`` checkpoint (None for an imported model or one that cannot be read here)."""
    if not init:
        return None
    from retinanet.checkpoint import CheckpointError, read_config, resolve_checkpoint

    if Path(init).is_file():  # an imported DeepForest/torchvision file: no GSD
        return None
    try:
        return read_config(resolve_checkpoint(init)[0]).gsd_m
    except CheckpointError:
        return None  # model_config refuses it with its own line


def choose_gsd(
    gsd_m: float | None,
    native: bool,
    init: str | None,
    sides: dict[str, tuple[float, float] | None],
    resuming: bool = False,
    resumed_gsd_m: float | None = None,
) -> GsdChoice:
    """The training GSD: resumed run's, ``--gsd-m``, ``--init``'s, median of the scenes, or native.

    Args:
        gsd_m: ``--gsd-m``.
        native: ``--native-resolution``.
        init: ``--init``.
        sides: pixel sides (m) per image file, None for plain images.
        resuming: a resumed run: it keeps ``resumed_gsd_m`` (None: native).
        resumed_gsd_m: the resumed run's GSD.

    Example:
        >>> choose_gsd(None, False, None, {"a": (0.15, 0.15), "b": (0.6, 0.6), "c": None})
        GsdChoice(gsd_m=0.375, source='median')
    """
    if resuming:
        return GsdChoice(resumed_gsd_m, "resumed" if resumed_gsd_m else "native")
    if native:
        return GsdChoice(None, "native")
    if gsd_m is not None:
        return GsdChoice(gsd_m, "--gsd-m")
    from_init = _init_gsd_m(init)
    if from_init is not None:
        return GsdChoice(from_init, "--init")
    known = [float(np.sqrt(s[0] * s[1])) for s in sides.values() if s is not None]
    return GsdChoice(statistics.median(known), "median") if known else GsdChoice(None, "native")


def resample_image(item: LabeledImage, sides_m: tuple[float, float], gsd_m: float) -> LabeledImage:
    """``item`` at ``gsd_m``: a ``ResampledImage`` (boxes and size in model px), or itself at the same GSD.

    Each axis is scaled on its own: model size ``round(native / (gsd / side))``
    (at least 1 px), the scale then exact (``native / model``), boxes divided by it.
    """
    from retinanet.label_images import image_size

    native_h, native_w = image_size(item)
    model_w = max(1, round(native_w * sides_m[0] / gsd_m))
    model_h = max(1, round(native_h * sides_m[1] / gsd_m))
    if (model_h, model_w) == (native_h, native_w):
        return item if item.size_hw else replace(item, size_hw=(native_h, native_w))
    sx, sy = native_w / model_w, native_h / model_h
    boxes = np.asarray(item.boxes_xyxy_px, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
    return ResampledImage(
        item.path,
        item.window,
        boxes.astype(np.float32),
        item.labels,
        item.group,
        (model_h, model_w),
        scale_xy=(sx, sy),
        native_hw=(native_h, native_w),
    )


def at_gsd(
    images: Sequence[LabeledImage],
    choice: GsdChoice,
    sides: dict[str, tuple[float, float] | None],
    label_gsd_m: float | None,
) -> list[LabeledImage]:
    """``images`` resampled to ``choice.gsd_m`` (plain images at ``label_gsd_m``, else as they are)."""
    if choice.gsd_m is None:
        return list(images)
    out = []
    for item in images:
        side = sides.get(item.path) or ((label_gsd_m, label_gsd_m) if label_gsd_m else None)
        out.append(item if side is None else resample_image(item, side, choice.gsd_m))
    return out


def gsd_lines(
    choice: GsdChoice, sides: dict[str, tuple[float, float] | None], label_gsd_m: float | None
) -> list[str]:
    """What to say about the training GSD (once), plain images without ``--label-gsd-m`` included.

    Nothing at native resolution (``--native-resolution``, or no georeferenced
    image): the run is as it was before runs had a training GSD.
    """
    if choice.gsd_m is None:
        return []
    known = sorted({round(float(np.sqrt(s[0] * s[1])), 6) for s in sides.values() if s is not None})
    lines = [f"training at {choice.gsd_m:g} m/px ({choice.source}; labeled scenes at {known} m)"]
    plain = [p for p, s in sides.items() if s is None]
    if plain and label_gsd_m is None:
        lines.append(
            f"note: {len(plain)} image(s) without georeferencing (e.g. {plain[0]}) are used at their own "
            "pixels; pass --label-gsd-m to resample them"
        )
    return lines


def training_gsd(
    data_images: Sequence[LabeledImage],
    *,
    gsd_m: float | None,
    native: bool,
    init: str | None,
    label_gsd_m: float | None,
    resuming: bool = False,
    resumed_gsd_m: float | None = None,
) -> tuple[GsdChoice, dict[str, tuple[float, float] | None], list[str]]:
    """(the GSD choice, pixel sides per file, the lines to say) for a run's images (train and val)."""
    sides = {path: pixel_sides_m(path) for path in sorted({im.path for im in data_images})}
    choice = choose_gsd(gsd_m, native, init, sides, resuming, resumed_gsd_m)
    return choice, sides, gsd_lines(choice, sides, label_gsd_m)


def at_training_gsd(
    read: Callable[..., TrainData], opts: GsdOptions, resumed: TrainSpec | None
) -> tuple[TrainData, float | None, list[str]]:
    """The run's labeled images (train and val) at its training GSD: (data, the GSD or None, the lines to say).

    GeoParquet/GeoPackage scenes are cut into windows of ``--tile-size-px``
    native px; when a scene is finer than the training GSD its windows would
    shrink below a tile, so the labels are read again with windows that
    many times larger (a 0.15 m scene for 0.3 m: 2 x the tile), every window
    then at least a tile at the training GSD.

    Args:
        read: ``read_train_data`` with the labels, split seed and class map
            bound; called with ``tile_size_px``.
        opts: the request (``TrainOptions``): ``--gsd-m``, ``--native-resolution``,
            ``--label-gsd-m``, ``--init``, ``--tile-size-px``.
        resumed: the resumed run's spec: it keeps its GSD and ``label_gsd_m``.

    Raises:
        LabelError: a label file or an image's header cannot be read (one line naming it).
    """
    from retinanet.labeled_tiles import TrainData

    data = read(tile_size_px=opts.tile_size_px)
    label_gsd_m = opts.label_gsd_m if resumed is None else resumed.label_gsd_m
    choice, sides, lines = training_gsd(
        data.train + data.val,
        gsd_m=opts.gsd_m,
        native=opts.native_resolution,
        init=opts.init_ckpt,
        label_gsd_m=label_gsd_m,
        resuming=resumed is not None,
        resumed_gsd_m=None if resumed is None else resumed.model.gsd_m,
    )
    finer = _window_finer(data.train + data.val, sides, choice.gsd_m)
    if finer > 1.0:
        data = read(tile_size_px=math.ceil(opts.tile_size_px * finer))
    train = at_gsd(data.train, choice, sides, label_gsd_m)
    val = at_gsd(data.val, choice, sides, label_gsd_m)
    return TrainData(train, val, data.class_names, data.issues), choice.gsd_m, lines


def _window_finer(
    images: Sequence[LabeledImage], sides: dict[str, tuple[float, float] | None], gsd_m: float | None
) -> float:
    """How many times finer than ``gsd_m`` the finest scene cut into windows is (1.0: none finer)."""
    if gsd_m is None:
        return 1.0
    paths = {im.path for im in images if im.window is not None and sides.get(im.path) is not None}
    return max([1.0] + [gsd_m / min(side) for p in paths if (side := sides.get(p)) is not None])
