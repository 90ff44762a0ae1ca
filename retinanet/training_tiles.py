"""Training and validation samples: tiles cut out of labeled images, and the order they are drawn in.

``TrainingTiles`` cuts training tiles of ``tile_size_px`` out of any image
(random crops that keep objects, scale jitter, flips, rotations, photometric
jitter; an image smaller than a tile is used whole and padded by the batch),
as many per epoch as tiles cover the image, in an order ``EpochSampler``
draws from (seed, epoch).  Validation uses ``LabeledTiles`` over whole
images, or a fixed grid of tiles of very large ones (``grid_tiles``).

Every sample is an ``(image float32 [C, H, W] raw units, target)`` pair with
``target = {"boxes": float32 [N, 4] xyxy px, "labels": int64 [N]}``, the form
torchvision's detection models train on (the model scales raw band values
itself).  Pixels come from ``retinanet.label_images.read_image``, which reads
through ``pipeline.reading`` as detect does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from retinanet.augment import OverheadAugment, choose_crop, crop_boxes, resize
from retinanet.gsd_images import sub_image
from retinanet.label_formats import LabeledImage
from retinanet.label_images import image_size, read_image

__all__ = [
    "EpochSampler",
    "LabeledTiles",
    "TileSampling",
    "TrainingTiles",
    "collate",
    "epoch_images",
    "grid_tiles",
    "samples_per_image",
]


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
        for row in range(0, height, tile_size_px):
            for col in range(0, width, tile_size_px):
                w, h = min(tile_size_px, width - col), min(tile_size_px, height - row)
                boxes, labels = crop_boxes(
                    item.boxes_xyxy_px, item.labels, (col, row, w, h), min_visible=min_visible, min_size_px=1
                )
                out.append(sub_image(item, (col, row, w, h), boxes_xyxy_px=boxes, labels=labels))
    return out


def collate(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Keep images as a list (tiles may differ in size); torchvision batches them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
