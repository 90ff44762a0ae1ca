"""A model stand-in with known outputs: boxes around bright blobs.

``BlobDetector`` has torchvision's detection interface and finds connected
regions whose brightest band is above ``threshold`` (raw uint8 values scaled
to 0..1 by the stand-in itself, as a real model scales its own input):
exactly what a perfect model would report for scenes painted with solid
objects on a dark background, including *truncated* boxes for objects cut by
a tile edge.  The class is the index of the object's brightest band.  Tests
and the merge benchmark use it to check tiling, merging and georeferencing
against hand-computed answers without a trained network; ``aerialdet detect
--model standin:blobs`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.detection import ModelInfo

STANDIN_SOURCE = "standin:blobs"
STANDIN_CLASSES: tuple[str, ...] = ("red", "green", "blue")
STANDIN_INFO = ModelInfo(model_id=STANDIN_SOURCE, class_names=STANDIN_CLASSES, bands=(1, 2, 3))


class BlobDetector:
    """Detection-model stand-in: one box per connected bright region.

    Args:
        threshold: a pixel is foreground when its brightest band / 255 exceeds this.
        score: the score given to every box.
    """

    def __init__(self, threshold: float = 0.5, score: float = 0.9) -> None:
        self.threshold = threshold
        self.score = score

    def __call__(self, images: list[Any]) -> list[dict[str, Any]]:
        """Return ``{"boxes", "scores", "labels"}`` per raw ``Tensor[C, H, W]`` image."""
        return [self._detect(image.detach().float().cpu().numpy() / 255.0) for image in images]

    def _detect(self, image: np.ndarray) -> dict[str, Any]:
        import torch

        mask = image.max(axis=0) > self.threshold
        components, _ = ndimage.label(mask)
        boxes, labels = [], []
        for idx, region in enumerate(ndimage.find_objects(components), start=1):
            if region is None:
                continue
            rows, cols = region
            inside = components[region] == idx
            mean_per_band = image[:, rows, cols][:, inside].mean(axis=1)
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            labels.append(int(np.argmax(mean_per_band)))
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.full((len(boxes),), self.score),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }


@dataclass(frozen=True)
class StandinLoader:
    """``ModelLoader`` of the stand-in (``--model standin:blobs``)."""

    info: ModelInfo = field(default=STANDIN_INFO)

    def load(self, device: str) -> BlobDetector:
        """The stand-in runs on the CPU whatever ``device`` says."""
        return BlobDetector()
