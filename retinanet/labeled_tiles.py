"""Labeled tiles -> one ``(image, target)`` Dataset, whatever the label format.

``read_labels`` reads any mix of label files (``retinanet.label_formats``:
COCO, Pascal VOC, DeepForest CSV; ``retinanet.geo_labels``: GeoParquet /
GeoPackage over GeoTIFF scenes) into one ``LabelSet``.  ``read_train_data``
does that once for a training run, splits off validation and checks that
there is something to train on; the result (``TrainData``) is what the
training workers receive, so label files are read once per run.

Every label format trains the same way: ``TrainingTiles`` cuts training
tiles of ``tile_size_px`` out of any image (random crops that keep objects,
scale jitter, flips, rotations, photometric jitter; an image smaller than a
tile is used whole and padded by the batch), as many per epoch as tiles cover
the image, in an order ``EpochSampler`` draws from (seed, epoch).
Validation uses ``LabeledTiles`` over whole images, or a fixed grid of tiles
of very large ones (``grid_tiles``).

Every sample is an ``(image float32 [C, H, W] raw units, target)`` pair with
``target = {"boxes": float32 [N, 4] xyxy px, "labels": int64 [N]}``, the form
torchvision's detection models train on (the model scales raw band values
itself).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from retinanet.augment import OverheadAugment, choose_crop, crop_boxes, resize
from retinanet.errors import LabelError
from retinanet.label_formats import (
    IMAGE_EXTENSIONS,
    LabeledImage,
    LabelIssue,
    LabelSet,
    read_coco,
    read_csv,
    read_voc,
    split_by_group,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelIssue",
    "LabelSet",
    "LabeledImage",
    "EpochSampler",
    "LabeledTiles",
    "TileSampling",
    "TrainData",
    "TrainingTiles",
    "band_stats",
    "check_bands",
    "collate",
    "epoch_images",
    "grid_tiles",
    "image_size",
    "read_image",
    "read_labels",
    "read_train_data",
    "samples_per_image",
    "split_by_group",
]


def read_labels(
    paths: Sequence[str | Path], class_names: Sequence[str] | None = None, *, tile_size_px: int = 512
) -> LabelSet:
    """Read one or more label files of any supported format into one LabelSet.

    Args:
        paths: label files (or folders of VOC XML).
        class_names: the classes, in id order; labels of other classes are
            issues.  None: every class found, in the order first seen (a later
            file may add classes; ids of earlier files stay valid).
        tile_size_px: tile size that GeoParquet/GeoPackage scenes are cut into.

    Raises:
        LabelError: a file of unknown format, or one that cannot be read.

    Example:
        >>> labels = read_labels(["a.xml", "b.xml"])  # doctest: +SKIP
        >>> labels.class_names, len(labels.images), labels.issues[:1]  # doctest: +SKIP
    """
    from retinanet.geo_labels import read_geo_labels

    images: list[LabeledImage] = []
    issues: list[LabelIssue] = []
    names: list[str] = list(class_names or [])
    for p in paths:
        path = Path(p)
        suffix = path.suffix.lower()
        if suffix == ".json":
            part = read_coco(path, class_names)
        elif suffix == ".xml" or path.is_dir():
            part = read_voc(path, class_names)
        elif suffix == ".csv":
            part = read_csv(path, class_names)
        elif suffix in (".parquet", ".gpkg"):
            part = read_geo_labels(path, class_names, tile_size_px=tile_size_px)
        else:
            raise LabelError(
                f"{path}: unknown label format {suffix!r}; use COCO .json, VOC .xml, DeepForest .csv, "
                ".parquet or .gpkg"
            )
        names += [n for n in part.class_names if n not in names]
        part = part.relabel(names)
        images.extend(part.images)
        issues.extend(part.issues)
    return LabelSet(images, tuple(names), issues)


@dataclass
class TrainData:
    """The labeled images of one training run, split, read once on the driver.

    Attributes:
        train: images to train on.
        val: held-out images (may hold no boxes: then AP cannot be measured).
        class_names: names of the label ids.
        issues: label rows left out, of training and validation files.
    """

    train: list[LabeledImage]
    val: list[LabeledImage]
    class_names: tuple[str, ...]
    issues: list[LabelIssue]

    def relabel(self, class_names: Sequence[str]) -> TrainData:
        """The same data with ids into ``class_names`` (a superset, e.g. a fine-tuned model's)."""
        train = LabelSet(self.train, self.class_names, []).relabel(class_names)
        val = LabelSet(self.val, self.class_names, []).relabel(class_names)
        return TrainData(train.images, val.images, train.class_names, list(self.issues))

    def objects_per_class(self, images: Sequence[LabeledImage]) -> dict[str, int]:
        """Boxes per class name in ``images`` (``self.train`` or ``self.val``)."""
        counts = Counter(int(k) for im in images for k in im.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}


def _files_named(paths: Sequence[str | Path]) -> str:
    first = str(paths[0]) if paths else "labels"
    return first if len(paths) <= 1 else f"{first} (and {len(paths) - 1} more)"


def _check_train_data(
    data: TrainData, labels: Sequence[str | Path], val_labels: Sequence[str | Path]
) -> None:
    """Refuse data that cannot train, naming the files and what to do."""
    files = _files_named(labels)
    first_issue = f"; first row left out: {data.issues[0]}" if data.issues else ""
    num_images = len(data.train) + (0 if val_labels else len(data.val))
    if num_images == 0:
        raise LabelError(
            f"{files}: no labeled image could be used ({len(data.issues)} rows left out{first_issue})"
        )
    if not any(len(im.labels) for im in data.train + ([] if val_labels else data.val)):
        raise LabelError(f"{files}: no usable label box ({len(data.issues)} rows left out{first_issue})")
    if not data.train:
        raise LabelError(
            f"{files}: only {num_images} labeled image ({data.val[0].path}), and it is held out for "
            "validation, so none is left to train on; add images, or give validation labels separately (--val)"
        )
    if val_labels and not data.val:
        raise LabelError(f"{_files_named(val_labels)}: no validation image could be used{first_issue}")


def read_train_data(
    labels: Sequence[str | Path],
    val_labels: Sequence[str | Path] = (),
    class_names: Sequence[str] | None = None,
    *,
    tile_size_px: int = 512,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TrainData:
    """Read the label files of a run once and split off validation.

    Args:
        labels: training label files.
        val_labels: validation label files; empty: hold out whole scenes or
            images (``split_by_group``).
        class_names: the classes in id order; None: those found in ``labels``.
        tile_size_px: tile size that GeoParquet/GeoPackage scenes are cut into.
        val_fraction: share of groups held out without ``val_labels``.
        seed: split seed.

    Raises:
        LabelError: a file cannot be read, or no image/box is left to train on.
    """
    train = read_labels(labels, class_names, tile_size_px=tile_size_px)
    if val_labels:
        val = read_labels(val_labels, train.class_names, tile_size_px=tile_size_px)
        data = TrainData(train.images, val.images, train.class_names, train.issues + val.issues)
    else:
        train_images, val_images = split_by_group(train.images, val_fraction, seed)
        data = TrainData(train_images, val_images, train.class_names, train.issues)
    _check_train_data(data, labels, val_labels)
    return data


def _band_count(path: Path) -> int:
    """Bands of an image as ``read_image`` returns them."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return int(src.count)
    from PIL import Image

    with Image.open(path) as im:
        return {"L": 1, "RGBA": 4}.get(im.mode, 3)


def check_bands(images: Sequence[LabeledImage], bands: Sequence[int]) -> None:
    """Check that every image file has the 1-based ``bands`` (one header read per file).

    Raises:
        LabelError: naming the first image with fewer bands.
    """
    for path in sorted({im.path for im in images}):
        count = _band_count(Path(path))
        if max(bands) > count:
            raise LabelError(f"{path}: has {count} band(s), but bands {list(bands)} were asked for")


def band_stats(
    images: Sequence[LabeledImage], bands: Sequence[int], *, max_images: int = 32, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (raw units) over up to ``max_images`` images (``check_bands`` first)."""
    picks = np.random.default_rng(seed).permutation(len(images))[:max_images]
    pixels = np.concatenate([read_image(images[i], bands).reshape(len(bands), -1) for i in picks], axis=1)
    std = np.maximum(pixels.std(axis=1), 1e-3)
    return tuple(float(v) for v in pixels.mean(axis=1)), tuple(float(v) for v in std)


def image_size(item: LabeledImage) -> tuple[int, int]:
    """(height, width) px of a labeled image (its window's, when set)."""
    if item.size_hw is not None:
        return item.size_hw
    if item.window is not None:
        return item.window[3], item.window[2]
    from retinanet.label_formats import _image_size

    return _image_size(Path(item.path))


# Decoded PNG/JPEG files kept per process: a training tile is a crop of a file,
# and decoding a 2500 px PNG for each crop costs more than the training step.
_DECODED: dict[str, np.ndarray] = {}
_DECODED_MAX_BYTES = 1 << 30


def _decoded(path: Path) -> np.ndarray:
    """All bands of a PNG/JPEG, ``uint8 [C, H, W]``, cached per process."""
    key = str(path)
    if key not in _DECODED:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB", "RGBA") else im)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if sum(a.nbytes for a in _DECODED.values()) + arr.nbytes > _DECODED_MAX_BYTES:
            _DECODED.clear()
        _DECODED[key] = np.ascontiguousarray(arr.transpose(2, 0, 1))  # (H, W, C) -> (C, H, W)
    return _DECODED[key]


def read_image(
    item: LabeledImage, bands: Sequence[int], crop: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Pixels of a labeled image, or of a ``crop`` of it: float32 ``[C, H, W]`` raw units.

    Args:
        item: the labeled image (a file, or a window of a scene).
        bands: 1-based bands in model order.
        crop: (col_off, row_off, width, height) px within the image (its window).
    """
    col, row = (item.window[0], item.window[1]) if item.window else (0, 0)
    if crop is not None:
        window: tuple[int, int, int, int] | None = (col + crop[0], row + crop[1], crop[2], crop[3])
    else:
        window = item.window
    path = Path(item.path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(path) as src:
            return src.read(list(bands), window=Window(*window) if window else None).astype(np.float32)
    arr = _decoded(path)
    if window:
        c, r, w, h = window
        arr = arr[:, r : r + h, c : c + w]
    return arr[[b - 1 for b in bands]].astype(np.float32)


def samples_per_image(size_hw: tuple[int, int], tile_size_px: int) -> int:
    """Training tiles drawn from an image per epoch: as many as tiles cover it (at least 1).

    Example:
        >>> samples_per_image((1035, 1249), 256), samples_per_image((400, 400), 512)
        (25, 1)
    """
    return max(1, math.ceil(size_hw[0] / tile_size_px)) * max(1, math.ceil(size_hw[1] / tile_size_px))


def epoch_images(sizes_hw: Sequence[tuple[int, int]], tile_size_px: int, min_tiles: int = 0) -> np.ndarray:
    """The image index of each training tile of an epoch: ``samples_per_image`` each, at least ``min_tiles`` in all.

    A small data set (one 1249 px image is 25 tiles of 256 px: 7 steps of 4)
    would otherwise validate and checkpoint every few steps; below
    ``min_tiles`` the whole list is repeated and the rest drawn evenly spaced
    along it, so each image keeps its share (each sample is a fresh random
    crop).

    Example:
        >>> epoch_images([(512, 512), (256, 256)], 256, min_tiles=7).tolist()
        [0, 0, 0, 0, 1, 0, 0]
    """
    counts = [samples_per_image(hw, tile_size_px) for hw in sizes_hw]
    images = np.repeat(np.arange(len(counts)), counts)
    if len(images) == 0:
        return images
    repeats, extra = divmod(max(len(images), min_tiles), len(images))
    # the midpoints of ``extra`` equal parts of the list: every image's share, the last one's too
    spread = images[((2 * np.arange(extra) + 1) * len(images)) // (2 * extra)] if extra else images[:0]
    return np.concatenate([np.tile(images, repeats), spread])


def _target(boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
        "labels": torch.from_numpy(np.asarray(labels, np.int64).reshape(-1)),
    }


class LabeledTiles(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Dataset of whole labeled images ``(image, target)``: validation, and plain use.

    Args:
        images: labeled images from ``read_labels`` (or ``grid_tiles``).
        bands: 1-based bands in model order.
    """

    def __init__(self, images: Sequence[LabeledImage], bands: Sequence[int]) -> None:
        self.images = list(images)
        self.bands = tuple(bands)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.images[index]
        return torch.from_numpy(read_image(item, self.bands)), _target(item.boxes_xyxy_px, item.labels)


@dataclass(frozen=True)
class TileSampling:
    """How ``TrainingTiles`` cuts training tiles out of labeled images.

    Attributes:
        tile_size_px: tile edge (images smaller than it are used whole; the
            batch pads them).
        scale_range: scale jitter: a crop of ``tile / s`` px is resized to
            about ``tile`` px, ``s`` uniform in this range ((1, 1): none).
        min_visible: share of a cut box that must remain for it to be kept.
        object_bias: share of crops placed around an object.
    """

    tile_size_px: int = 256
    scale_range: tuple[float, float] = (0.8, 1.25)
    min_visible: float = 0.4
    object_bias: float = 0.8


class TrainingTiles(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Training samples: random tiles of any labeled image, augmented, reproducibly.

    Each image gives ``samples_per_image`` tiles per epoch (a 1249 x 1035 px
    image gives 25 tiles of 256 px; a 400 px chip gives 4, or 1 whole chip at
    512 px).  A sample is a random crop (``augment.choose_crop``: around an
    object mostly, boxes cut by it clipped, small remnants dropped) with
    scale jitter, then flips, 90-degree rotations and photometric jitter.

    The index is ``(epoch, sample)``, as ``EpochSampler`` yields it: every
    random choice comes from a generator seeded by ``(seed, epoch, sample)``,
    so a resumed run sees the same tiles as an uninterrupted one.

    Args:
        images: labeled images with ``size_hw`` (from ``read_labels``).
        bands: 1-based bands in model order.
        sampling: tile size, scale jitter, crop rules.
        augment: flips/rotations/photometric jitter, or None.
        seed: the run's seed.
        min_tiles: tiles per epoch at least (``epoch_images``).
    """

    def __init__(
        self,
        images: Sequence[LabeledImage],
        bands: Sequence[int],
        sampling: TileSampling,
        augment: OverheadAugment | None = None,
        *,
        seed: int = 0,
        min_tiles: int = 0,
    ) -> None:
        self.images = list(images)
        self.bands = tuple(bands)
        self.sampling = sampling
        self.augment = augment
        self.seed = seed
        self.sizes = [image_size(im) for im in self.images]
        self.image_of_sample = epoch_images(self.sizes, sampling.tile_size_px, min_tiles)

    def __len__(self) -> int:
        return len(self.image_of_sample)

    def _crop(self, index: int, gen: np.random.Generator) -> tuple[tuple[int, int, int, int], float]:
        """(crop window in the image, scale) of one sample."""
        s = self.sampling
        scale = float(np.exp(gen.uniform(*np.log(s.scale_range))))
        crop_px = max(8, round(s.tile_size_px / scale))
        item = self.images[index]
        window = choose_crop(self.sizes[index], item.boxes_xyxy_px, crop_px, gen, object_bias=s.object_bias)
        return window, scale

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        epoch, sample = key if isinstance(key, tuple) else (0, key)
        gen = np.random.default_rng([self.seed, epoch, sample])
        index = int(self.image_of_sample[sample])
        item = self.images[index]
        window, scale = self._crop(index, gen)
        boxes, labels = crop_boxes(
            item.boxes_xyxy_px, item.labels, window, min_visible=self.sampling.min_visible
        )
        image = torch.from_numpy(read_image(item, self.bands, window))
        box_t = torch.from_numpy(boxes)
        if scale != 1.0:
            size = (max(8, round(window[3] * scale)), max(8, round(window[2] * scale)))
            image, box_t = resize(image, box_t, size)
        target = {"boxes": box_t, "labels": torch.from_numpy(labels)}
        if self.augment is not None:
            image, target = self.augment(image, target, gen)
        return image, target


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(epoch, sample)`` keys, this worker's share, the same after a restart.

    The order of epoch ``e`` is a permutation seeded by ``(seed, e)``, padded
    to a multiple of ``num_replicas`` and dealt out by rank (as
    ``DistributedSampler`` does), so where a run is in its data is fully
    given by its epoch: a resumed run continues with the same order.

    Args:
        num_samples: samples per epoch (``len(TrainingTiles)``).
        rank: this worker's rank.
        num_replicas: number of workers.
        seed: the run's seed.
    """

    def __init__(self, num_samples: int, *, rank: int = 0, num_replicas: int = 1, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.rank = rank
        self.num_replicas = num_replicas
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order is drawn next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        padded = np.resize(order, len(self) * self.num_replicas)  # repeats the start, as DistributedSampler
        return iter([(self.epoch, int(i)) for i in padded[self.rank :: self.num_replicas]])


def grid_tiles(
    images: Sequence[LabeledImage], tile_size_px: int, *, max_side_px: int = 2048, min_visible: float = 0.5
) -> list[LabeledImage]:
    """Validation images: whole when no side exceeds ``max_side_px``, else a fixed grid of tiles.

    The grid is deterministic (the same tiles every epoch); a box is kept in
    a tile when at least ``min_visible`` of it lies inside, clipped.
    """
    out: list[LabeledImage] = []
    for item in images:
        height, width = image_size(item)
        if max(height, width) <= max_side_px:
            out.append(item if item.size_hw else replace(item, size_hw=(height, width)))
            continue
        col0, row0 = (item.window[0], item.window[1]) if item.window else (0, 0)
        for row in range(0, height, tile_size_px):
            for col in range(0, width, tile_size_px):
                w, h = min(tile_size_px, width - col), min(tile_size_px, height - row)
                boxes, labels = crop_boxes(
                    item.boxes_xyxy_px, item.labels, (col, row, w, h), min_visible=min_visible, min_size_px=1
                )
                out.append(
                    replace(
                        item,
                        window=(col0 + col, row0 + row, w, h),
                        boxes_xyxy_px=boxes,
                        labels=labels,
                        size_hw=(h, w),
                    )
                )
    return out


def collate(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Keep images as a list (tiles may differ in size); torchvision batches them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
