"""Scenes as Web Mercator XYZ PNG tiles for ``aerialdet review``.

``display_range`` picks each band's stretch once per scene (the 2nd and
98th percentiles of the pixels that have a value, from an overview read;
uint8 scenes keep 0..255), and ``render_tile`` reads one XYZ tile
(``pipeline.reading.read_xyz_tile``, rio-tiler) and stretches it to an RGBA
PNG whose alpha is the no-value mask.  One band is drawn grey, two as the
first band grey, three or more as RGB of the first three.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import rio_tiler.io  # noqa: F401  (imported here, once: the server's threads would race to import it)

from pipeline.reading import ReadConfig, read_overview, read_xyz_tile

OVERVIEW_PX = 512
"""Edge of the overview a scene's stretch is computed from (px)."""


def display_range(uri: str, config: ReadConfig) -> tuple[tuple[float, float], ...]:
    """Per band (lo, hi) that map to 0 and 255: 0..255 for uint8, else the 2nd/98th percentiles.

    Raises:
        InvalidSceneError: the scene does not open or has too few bands.
        TileReadError: its pixels cannot be read.
    """
    read = read_overview(uri, (OVERVIEW_PX, OVERVIEW_PX), config)
    if read.pixels.dtype == np.uint8:
        return tuple((0.0, 255.0) for _ in config.bands)
    ranges = []
    for band in read.pixels.astype(np.float64):
        values = band[read.valid & np.isfinite(band)]
        lo, hi = (float(v) for v in np.percentile(values, (2, 98))) if values.size else (0.0, 1.0)
        ranges.append((lo, hi if hi > lo else lo + 1.0))
    return tuple(ranges)


def stretch_rgba(pixels: np.ndarray, valid: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Raw ``[C, H, W]`` pixels -> uint8 ``[H, W, 4]`` RGBA, each band stretched by its (lo, hi).

    Example:
        >>> px = np.array([[[0, 50, 100]]], np.uint16)
        >>> rgba = stretch_rgba(px, np.array([[True, True, False]]), [(0, 100)])
        >>> rgba[0, :, 0].tolist(), rgba[0, :, 3].tolist()  # grey value, alpha
        ([0, 127, 0], [255, 255, 0])
    """
    bands = pixels[:3] if len(pixels) >= 3 else pixels[:1]
    out = np.zeros((*pixels.shape[1:], 4), np.uint8)
    for i, band in enumerate(bands.astype(np.float64)):
        lo, hi = ranges[i]
        scaled = np.nan_to_num((band - lo) / (hi - lo) * 255.0, nan=0.0)
        out[..., i] = np.clip(scaled, 0, 255).astype(np.uint8)
    if len(bands) == 1:
        out[..., 1] = out[..., 2] = out[..., 0]
    out[..., :3][~valid] = 0
    out[..., 3] = np.where(valid, 255, 0)
    return out


def render_tile(
    uri: str, x: int, y: int, z: int, config: ReadConfig, ranges: Sequence[tuple[float, float]]
) -> bytes:
    """The PNG of XYZ tile ``z/x/y`` of a scene (transparent where the scene has no pixels).

    Raises:
        InvalidSceneError: the scene does not open or has too few bands.
        TileReadError: its pixels cannot be read.
    """
    from PIL import Image

    read = read_xyz_tile(uri, x, y, z, config)
    sink = io.BytesIO()
    Image.fromarray(stretch_rgba(read.pixels, read.valid, ranges), "RGBA").save(sink, format="PNG")
    return sink.getvalue()
