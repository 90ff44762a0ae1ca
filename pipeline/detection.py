"""Model + raw tiles ``[B, C, H, W]`` -> ``list[TileDetections]`` (torch, no Ray).

The model is any callable with torchvision's detection interface: it takes a
list of ``Tensor[C, H, W]`` and returns per tile ``{"boxes": Tensor[N, 4]
xyxy tile px, "scores": Tensor[N], "labels": Tensor[N]}``.  Tiles are
normalised with the checkpoint's ``BandConfig`` here, so detect and train
scale bands the same way.  Boxes are clipped to the tile's valid area (the
part inside the scene) and boxes left empty by the clip are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.types import TileDetections, TileSpec
from retinanet.config import BandConfig
from retinanet.normalize import normalize_tiles

DetectionModel = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


def detect_tiles(
    model: DetectionModel,
    images: np.ndarray,
    tiles: Sequence[TileSpec],
    band_config: BandConfig,
    *,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> list[TileDetections]:
    """Run the model on a batch of tiles.

    Args:
        model: torchvision-style detection model in eval mode.
        images: ``[B, C, H, W]`` raw scene units (any numeric dtype).
        tiles: B tile specs, in the order of ``images``.
        band_config: per-channel scaling from the checkpoint.
        device: where to run.
        amp: use float16 autocast (CUDA only).

    Returns:
        B ``TileDetections`` in tile pixels.
    """
    if len(images) != len(tiles):
        raise ValueError(f"got {len(images)} images for {len(tiles)} tiles")
    if len(tiles) == 0:
        return []
    batch = normalize_tiles(images, band_config).to(device)
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
    boxes = np.array(boxes_xyxy_px, dtype=np.float32).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, tile.valid_width_px)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, tile.valid_height_px)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return TileDetections(
        tile,
        boxes[keep],
        np.asarray(scores).reshape(-1)[keep],
        np.asarray(labels, np.int64).reshape(-1)[keep],
    )


class ModelHandle:
    """A detection model with what the pipeline needs to know of it.

    Attributes:
        model: torchvision-style detection callable (eval mode).
        band_config: band order and scaling of its input.
        class_names: names of its label ids.
        model_id: written to each detection's ``model`` column.
        tile_size_px: the tile size it was trained at.
    """

    def __init__(
        self,
        model: DetectionModel,
        band_config: BandConfig,
        class_names: tuple[str, ...],
        model_id: str,
        tile_size_px: int | None = None,
    ) -> None:
        self.model = model
        self.band_config = band_config
        self.class_names = class_names
        self.model_id = model_id
        self.tile_size_px = tile_size_px


def load_model(source: str, *, device: str | torch.device = "cpu") -> ModelHandle:
    """Load a detection model from a checkpoint directory (or the test stand-in).

    Args:
        source: a checkpoint directory written by ``aerialdet train``, or
            ``standin:blobs`` for ``pipeline.standin.BlobDetector``.
        device: where to put the model.

    Raises:
        retinanet.checkpoint.CheckpointError: if the checkpoint cannot be loaded.
    """
    from pipeline import standin

    if source == standin.STANDIN_SOURCE:
        return ModelHandle(standin.BlobDetector(), standin.STANDIN_BANDS, standin.STANDIN_CLASSES, source)
    from retinanet.checkpoint import load_dir

    ckpt = load_dir(source, device=device)
    return ModelHandle(
        ckpt.model,
        ckpt.config.band_config,
        ckpt.config.class_names,
        ckpt.checkpoint_id,
        ckpt.config.tile_size_px,
    )


def describe_model(source: str) -> ModelHandle:
    """Like ``load_model`` but without weights (``model`` is None): for the driver."""
    from pipeline import standin

    if source == standin.STANDIN_SOURCE:
        return ModelHandle(None, standin.STANDIN_BANDS, standin.STANDIN_CLASSES, source)  # type: ignore[arg-type]
    from pathlib import Path

    from retinanet.checkpoint import ModelConfig, _checkpoint_id, _weights_path, read_meta

    path = Path(source)
    meta = read_meta(path)
    config = ModelConfig.from_json(meta["config"])
    return ModelHandle(
        None,  # type: ignore[arg-type]
        config.band_config,
        config.class_names,
        _checkpoint_id(path, _weights_path(path)),
        config.tile_size_px,
    )
