"""Augmentation for overhead imagery, boxes transformed with the image.

Overhead scenes have no "up": horizontal/vertical flips and 90-degree
rotations are label-preserving.  Light photometric jitter (brightness and
contrast per tile) covers sensor and illumination changes.  Built on
torchvision's v2 transforms with ``tv_tensors.BoundingBoxes``.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class RandomRotate90(torch.nn.Module):
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}, boxes included."""

    def forward(
        self, image: torch.Tensor, target: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Apply the rotation (v2 ``rotate`` with ``expand=True`` keeps every pixel)."""
        k = int(torch.randint(0, 4, ()).item())
        if k == 0:
            return image, target
        out = v2.functional.rotate(image, 90.0 * k, expand=True)
        boxes = v2.functional.rotate(target["boxes"], 90.0 * k, expand=True)
        return out, {**target, "boxes": boxes}


class Jitter(torch.nn.Module):
    """Per-tile brightness/contrast jitter in raw units (any dtype range)."""

    def __init__(self, strength: float = 0.1) -> None:
        super().__init__()
        self.strength = strength

    def forward(
        self, image: torch.Tensor, target: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scale contrast around the tile mean and shift brightness."""
        mean = image.mean()
        contrast = 1.0 + (torch.rand(()) * 2 - 1) * self.strength
        brightness = 1.0 + (torch.rand(()) * 2 - 1) * self.strength
        return ((image - mean) * contrast + mean) * brightness, target


class OverheadAugment:
    """Flips, 90-degree rotations and photometric jitter for ``(image, target)``."""

    def __init__(self, jitter: float = 0.1) -> None:
        self.geometric = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)])
        self.rotate = RandomRotate90()
        self.jitter = Jitter(jitter)

    def __call__(
        self, image: torch.Tensor, target: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Augment one sample; boxes stay ``float32 [N, 4]`` xyxy px."""
        h, w = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        img = tv_tensors.Image(image)
        img, boxes = self.geometric(img, boxes)
        img, t = self.rotate(img, {**target, "boxes": boxes})
        img, t = self.jitter(img.as_subclass(torch.Tensor), t)
        return img, {**t, "boxes": t["boxes"].as_subclass(torch.Tensor).to(torch.float32)}
