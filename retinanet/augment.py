"""Augmentation for overhead imagery, boxes transformed with the image.

Overhead scenes have no "up": horizontal/vertical flips and 90-degree
rotations are label-preserving.  Scale jitter (a crop of ``tile / s`` px
resized to ``tile`` px, ``s`` in ``scale_range``) covers flying heights and
ground sample distances; brightness, contrast and hue jitter cover sensors,
sun angle and season.  Random crops that keep objects (``choose_crop``,
``crop_boxes``) are how ``retinanet.labeled_tiles.TrainingTiles`` cuts any
image into training tiles.

Every random choice is drawn from a generator the caller passes, seeded per
(run seed, epoch, sample): the same sample of the same epoch is augmented the
same way in an uninterrupted and in a resumed run.  Images are float32
``[C, H, W]`` in raw scene units; boxes float32 ``[N, 4]`` xyxy px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

Target = dict[str, torch.Tensor]


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: x -> W - x."""
    width = image.shape[-1]
    return image.flip(-1), torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
    )


def vflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror top-bottom: y -> H - y."""
    height = image.shape[-2]
    return image.flip(-2), torch.stack(
        [boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], dim=1
    )


def rot90(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate 90 degrees counter-clockwise (``torch.rot90``): (x, y) -> (y, W - x), size (W, H)."""
    width = image.shape[-1]
    out = torch.rot90(image, 1, dims=(-2, -1))
    return out, torch.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], dim=1)


def resize(
    image: torch.Tensor, boxes: torch.Tensor, size_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize to ``size_hw``, boxes scaled by the same factors per axis."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size_hw):
        return image, boxes
    out = torch.nn.functional.interpolate(
        image[None], size=size_hw, mode="bilinear", align_corners=False, antialias=True
    )[0]
    sx, sy = size_hw[1] / width, size_hw[0] / height
    return out, boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)


def _hue_matrix(angle: float) -> torch.Tensor:
    """3x3 rotation by ``angle`` radians about the grey axis (1, 1, 1): a hue shift in linear units."""
    c, s = math.cos(angle), math.sin(angle)
    k = (1 - c) / 3
    r = s / math.sqrt(3)
    return torch.tensor(
        [[c + k, k - r, k + r], [k + r, c + k, k - r], [k - r, k + r, c + k]], dtype=torch.float32
    )


def photometric(
    image: torch.Tensor, gen: np.random.Generator, *, strength: float = 0.1, hue_deg: float = 10.0
) -> torch.Tensor:
    """Brightness and contrast jitter (any band count), hue rotation (3 bands), in raw units.

    Contrast scales around the tile mean and brightness multiplies by factors
    uniform in ``1 +- strength``; hue rotates each pixel's colour about the
    grey axis by up to ``hue_deg`` degrees (grey pixels are unchanged).
    """
    if strength <= 0 and hue_deg <= 0:
        return image
    mean = image.mean()
    contrast, brightness = 1.0 + gen.uniform(-strength, strength, 2)
    out = ((image - mean) * float(contrast) + mean) * float(brightness)
    if image.shape[0] == 3 and hue_deg > 0:
        matrix = _hue_matrix(math.radians(float(gen.uniform(-hue_deg, hue_deg))))
        out = torch.einsum("ij,jhw->ihw", matrix, out)  # (3, 3) x (3, H, W) -> (3, H, W)
    return out


@dataclass(frozen=True)
class OverheadAugment:
    """Flips, 90-degree rotations and photometric jitter for ``(image, target)``.

    Attributes:
        jitter: brightness/contrast strength (0: none).
        hue_deg: largest hue rotation in degrees (3-band images; 0: none).

    Example:
        >>> aug = OverheadAugment()
        >>> image, target = aug(torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4)}, np.random.default_rng(0))
    """

    jitter: float = 0.1
    hue_deg: float = 10.0

    def __call__(
        self, image: torch.Tensor, target: Target, gen: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, Target]:
        """Augment one sample; boxes stay ``float32 [N, 4]`` xyxy px, inside the image."""
        gen = gen if gen is not None else np.random.default_rng()
        boxes = target["boxes"].to(torch.float32).reshape(-1, 4)
        flip_h, flip_v, quarter = gen.random() < 0.5, gen.random() < 0.5, gen.random() < 0.5
        if flip_h:
            image, boxes = hflip(image, boxes)
        if flip_v:
            image, boxes = vflip(image, boxes)
        if quarter:  # with both flips, 0/90/180/270 degrees are all reached
            image, boxes = rot90(image, boxes)
        image = photometric(image, gen, strength=self.jitter, hue_deg=self.hue_deg)
        return image, {**target, "boxes": boxes}


def choose_crop(
    size_hw: tuple[int, int],
    boxes: np.ndarray,
    crop_px: int,
    gen: np.random.Generator,
    *,
    object_bias: float = 0.8,
) -> tuple[int, int, int, int]:
    """A random crop window ``(col_off, row_off, width, height)`` px of an image.

    Along an axis shorter than ``crop_px`` the whole axis is taken (the tile
    is padded at batching).  With probability ``object_bias`` (and boxes) the
    crop holds one randomly chosen box whole, where it fits; otherwise it is
    uniform, so background is seen too.

    Args:
        size_hw: (height, width) of the image.
        boxes: float ``[N, 4]`` xyxy px of the image.
        crop_px: crop edge.
        gen: random generator.
        object_bias: share of crops placed around an object.
    """
    height, width = size_hw
    crop_w, crop_h = min(crop_px, width), min(crop_px, height)
    lo = np.zeros(2)
    hi = np.array([width - crop_w, height - crop_h], float)
    if len(boxes) and gen.random() < object_bias:
        x1, y1, x2, y2 = boxes[int(gen.integers(len(boxes)))]
        lo = np.maximum(lo, [x2 - crop_w, y2 - crop_h])
        hi = np.minimum(hi, [x1, y1])
        if (lo > hi).any():  # the box is larger than the crop: any crop over part of it
            lo, hi = np.zeros(2), np.array([width - crop_w, height - crop_h], float)
    col = int(math.floor(gen.uniform(math.ceil(lo[0]), math.floor(hi[0]) + 1)))
    row = int(math.floor(gen.uniform(math.ceil(lo[1]), math.floor(hi[1]) + 1)))
    return min(col, width - crop_w), min(row, height - crop_h), crop_w, crop_h


def crop_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    window: tuple[int, int, int, int],
    *,
    min_visible: float = 0.4,
    min_size_px: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of an image seen through ``window``: shifted, clipped, remnants dropped.

    A box cut by the window is clipped to it; it is kept when at least
    ``min_visible`` of its area and ``min_size_px`` of each side remain.

    Args:
        boxes: float ``[N, 4]`` xyxy px of the image.
        labels: int ``[N]``.
        window: (col_off, row_off, width, height) px.
        min_visible: share of a box's area that must remain.
        min_size_px: smallest side kept.

    Returns:
        (float32 ``[M, 4]`` xyxy window px, int64 ``[M]``).

    Example:
        >>> b, l = crop_boxes(np.array([[5.0, 5, 15, 15]]), np.array([0]), (10, 0, 20, 20), min_visible=0.4)
        >>> b.tolist(), l.tolist()
        ([[0.0, 5.0, 5.0, 15.0]], [0])
    """
    col, row, width, height = window
    b = np.asarray(boxes, np.float64).reshape(-1, 4) - np.array([col, row, col, row], np.float64)
    clipped = np.clip(b, 0, [width, height, width, height])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = (w >= min_size_px) & (h >= min_size_px) & (w * h >= min_visible * area)
    return clipped[keep].astype(np.float32), np.asarray(labels, np.int64).reshape(-1)[keep]
