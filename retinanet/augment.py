"""Augmentation for overhead imagery, boxes transformed with the image.

Overhead scenes have no "up": horizontal/vertical flips and 90-degree
rotations are label-preserving.  Scale jitter (a crop of ``tile / s`` px
resized to ``tile`` px, ``s`` in ``scale_range``) covers flying heights and
ground sample distances; brightness, contrast and hue jitter cover sensors,
sun angle and season.  Random crops that keep objects (``choose_crop``,
``crop_boxes``) are how ``retinanet.labeled_tiles.TrainingTiles`` cuts any
image into training tiles.  The geometric ops are torchvision's
``transforms.v2`` functionals on ``tv_tensors.Image`` and
``tv_tensors.BoundingBoxes`` (XYXY), remnants dropped by
``SanitizeBoundingBoxes``; the photometric jitter is our own, in raw units.

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
from torchvision import tv_tensors
from torchvision.transforms.v2 import SanitizeBoundingBoxes
from torchvision.transforms.v2 import functional as F

Target = dict[str, torch.Tensor]


def _as_tv(
    image: torch.Tensor, boxes: torch.Tensor, clamping_mode: str | None = None
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    """The image and its xyxy px boxes as torchvision tv_tensors (no clamping unless asked)."""
    canvas_hw = (int(image.shape[-2]), int(image.shape[-1]))
    bbox = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas_hw, clamping_mode=clamping_mode)
    return tv_tensors.Image(image), bbox


def _plain(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Back to plain tensors: callers (and the collate function) see no tv_tensors."""
    return image.as_subclass(torch.Tensor), boxes.as_subclass(torch.Tensor)


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right: x -> W - x (``transforms.v2.functional.horizontal_flip``)."""
    return _plain(*(F.horizontal_flip(t) for t in _as_tv(image, boxes)))


def vflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror top-bottom: y -> H - y (``transforms.v2.functional.vertical_flip``)."""
    return _plain(*(F.vertical_flip(t) for t in _as_tv(image, boxes)))


def rot90(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate 90 degrees counter-clockwise: (x, y) -> (y, W - x), size (W, H).

    ``transforms.v2.functional.rotate(..., 90, expand=True)``, which rotates
    the pixels with ``torch.rot90`` (no resampling).
    """
    return _plain(*(F.rotate(t, 90.0, expand=True) for t in _as_tv(image, boxes)))


def resize(
    image: torch.Tensor, boxes: torch.Tensor, size_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (antialiased) resize to ``size_hw``, boxes scaled by the same factors per axis."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size_hw):
        return image, boxes
    size = [int(size_hw[0]), int(size_hw[1])]
    return _plain(*(F.resize(t, size, antialias=True) for t in _as_tv(image, boxes)))


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
    # float64 as before, so the thresholds see the same areas; the canvas is only a label here
    original = torch.from_numpy(np.asarray(boxes, np.float64).reshape(-1, 4).copy())
    canvas_hw = (row + height, col + width)
    image_boxes = tv_tensors.BoundingBoxes(original, format="XYXY", canvas_size=canvas_hw, clamping_mode=None)
    shifted = F.crop(image_boxes, row, col, height, width)  # shifted into the window, not clamped
    clipped = F.clamp_bounding_boxes(shifted, clamping_mode="hard")
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    visible = (w * h >= min_visible * area).numpy()
    sample = {
        "boxes": tv_tensors.wrap(clipped[visible], like=clipped),
        "labels": torch.from_numpy(np.asarray(labels, np.int64).reshape(-1)[visible]),
    }
    # SanitizeBoundingBoxes drops sides under min_size_px (its area floor follows from the sides)
    kept = SanitizeBoundingBoxes(min_size=min_size_px, min_area=min_size_px**2)(sample)
    return kept["boxes"].numpy().astype(np.float32), kept["labels"].numpy()
