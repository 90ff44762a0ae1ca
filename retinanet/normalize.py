"""Raw band values -> model input, from the checkpoint's ``BandConfig``.

Detect and train call the same function, so a model sees the same scaling in
both.  Input is in the scene's own units (uint8, uint16 or float); output is
float32 ``(raw - mean) / std`` per channel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from retinanet.config import BandConfig


def normalize_tiles(images: np.ndarray | Tensor, band_config: BandConfig) -> Tensor:
    """Scale raw tiles to model input.

    Args:
        images: ``[B, C, H, W]`` or ``[C, H, W]``, any numeric dtype, raw scene
            units, channels already in ``band_config.bands`` order.
        band_config: per-channel mean and std in raw units.

    Returns:
        float32 tensor of the same shape.

    Raises:
        ValueError: if the channel count does not match ``band_config``.
    """
    tensor = torch.as_tensor(images).to(torch.float32)
    channel_dim = 0 if tensor.dim() == 3 else 1
    if tensor.dim() not in (3, 4) or tensor.shape[channel_dim] != band_config.num_channels:
        raise ValueError(
            f"expected tiles [B, C, H, W] or [C, H, W] with C={band_config.num_channels} "
            f"(bands {band_config.bands}), got shape {tuple(tensor.shape)}"
        )
    shape = (-1, 1, 1) if channel_dim == 0 else (1, -1, 1, 1)
    mean = torch.tensor(band_config.mean, dtype=torch.float32).reshape(shape)
    std = torch.tensor(band_config.std, dtype=torch.float32).reshape(shape)
    return (tensor - mean) / std
