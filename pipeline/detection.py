"""Model + raw tiles ``[B, C, H, W]`` -> ``list[TileDetections]`` (torch, no Ray).

The model is any callable with torchvision's detection interface: it takes a
list of float32 ``Tensor[C, H, W]`` in the scene's raw units and returns per
tile ``{"boxes": Tensor[N, 4] xyxy tile px, "scores": Tensor[N], "labels":
Tensor[N]}``.  The model scales its input itself (torchvision's
``image_mean``/``image_std``), so the pipeline knows nothing of a model's
normalisation and never imports one: a ``ModelLoader`` (built in ``jobs/``)
says what the model is and loads it where it runs.  Boxes are clipped to the
tile's valid area (the part inside the scene) and boxes left empty by the
clip are dropped.

Importing this module loads no torch; ``detect_tiles`` imports it on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.georef import clip_boxes_px
from pipeline.types import TileDetections, TileSpec

if TYPE_CHECKING:
    import torch

DetectionModel = Callable[[list["torch.Tensor"]], list[dict[str, "torch.Tensor"]]]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the pipeline needs to know of a model, without its weights.

    Attributes:
        model_id: written to each detection's ``model`` column.
        class_names: name of each label id.
        bands: 1-based scene bands the model takes, in channel order (the
            default of ``--bands``).
    """

    model_id: str
    class_names: tuple[str, ...]
    bands: tuple[int, ...]


class ModelLoader(Protocol):
    """A picklable recipe for a model: sent to every model actor, loaded there.

    ``retinanet.predictor.CheckpointLoader`` loads a checkpoint directory;
    ``pipeline.standin.StandinLoader`` is the test stand-in.
    """

    @property
    def info(self) -> ModelInfo:
        """What the model is (no weights needed)."""
        ...

    def load(self, device: str) -> DetectionModel:
        """Build the model on ``device`` in eval mode."""
        ...


def detect_tiles(
    model: DetectionModel,
    images: np.ndarray,
    tiles: Sequence[TileSpec],
    *,
    device: str = "cpu",
    amp: bool = False,
) -> list[TileDetections]:
    """Run the model on a batch of tiles.

    Args:
        model: torchvision-style detection model in eval mode, on ``device``.
        images: ``[B, C, H, W]`` raw scene units (any numeric dtype).
        tiles: B tile specs, in the order of ``images``.
        device: where to run.
        amp: use float16 autocast (CUDA only).

    Returns:
        B ``TileDetections`` in tile pixels, clipped to each tile's valid area.

    Example:
        >>> from pipeline.standin import StandinLoader
        >>> from pipeline.tiling import TilingConfig, tile_scene
        >>> tiles = list(tile_scene("s.tif", 64, 64, TilingConfig(tile_size_px=64, overlap_px=0)))
        >>> images = np.zeros((1, 3, 64, 64), np.uint8)
        >>> images[0, 0, 8:16, 8:16] = 255
        >>> detect_tiles(StandinLoader().load("cpu"), images, tiles)[0].boxes_xyxy_px.tolist()
        [[8.0, 8.0, 16.0, 16.0]]
    """
    import torch

    if len(images) != len(tiles):
        raise ValueError(f"got {len(images)} images for {len(tiles)} tiles")
    if len(tiles) == 0:
        return []
    batch = torch.as_tensor(np.asarray(images)).to(device=device, dtype=torch.float32)
    use_amp = amp and torch.device(device).type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
        outputs = model(list(batch))
    return [_to_tile_detections(tile, out) for tile, out in zip(tiles, outputs)]


def _to_tile_detections(tile: TileSpec, out: dict[str, Any]) -> TileDetections:
    return clip_to_tile(
        tile,
        out["boxes"].detach().float().cpu().numpy(),
        out["scores"].detach().float().cpu().numpy(),
        out["labels"].detach().cpu().numpy(),
    )


def clip_to_tile(
    tile: TileSpec, boxes_xyxy_px: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> TileDetections:
    """Clip tile-pixel boxes to the part of the tile inside the scene; drop boxes left empty.

    Padding past the scene's edge holds no objects, so no box may reach into it.
    """
    boxes, keep = clip_boxes_px(
        np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4), tile.valid_width_px, tile.valid_height_px
    )
    return TileDetections(
        tile,
        boxes[keep],
        np.asarray(scores).reshape(-1)[keep],
        np.asarray(labels, np.int64).reshape(-1)[keep],
    )
