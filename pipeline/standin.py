"""A model stand-in with known outputs: boxes around bright blobs.

``BlobDetector`` has torchvision's detection interface and finds connected
regions whose brightest band is above ``threshold`` (in normalised units):
exactly what a perfect model would report for scenes painted with solid
objects on a dark background, including *truncated* boxes for objects cut by
a tile edge.  The class is the index of the object's brightest band.  Tests
and the merge benchmark use it to check tiling, merging and georeferencing
against hand-computed answers without a trained network.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from retinanet.config import BandConfig

# Stand-in inputs are raw uint8: scale 0..255 to 0..1 so threshold is in [0, 1].
STANDIN_BANDS = BandConfig(bands=(1, 2, 3), mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
STANDIN_CLASSES: tuple[str, ...] = ("red", "green", "blue")
STANDIN_SOURCE = "standin:blobs"


class BlobDetector:
    """Detection-model stand-in: one box per connected bright region.

    Args:
        threshold: a pixel is foreground when its brightest band exceeds this.
        score: the score given to every box.
    """

    def __init__(self, threshold: float = 0.5, score: float = 0.9) -> None:
        self.threshold = threshold
        self.score = score

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Return ``{"boxes", "scores", "labels"}`` per ``Tensor[C, H, W]`` image."""
        return [self._detect(image.detach().float().cpu().numpy()) for image in images]

    def _detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
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
