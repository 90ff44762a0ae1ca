"""A ``ResampledTile``'s pixels: its native window read by GDAL at the model's GSD.

``pipeline.reading.read_tile`` hands a ``pipeline.resolution.ResampledTile``
here.  GDAL reads the native (float) window straight into a buffer of the
tile's model-pixel shape (``out_shape``): ``Resampling.average`` when
downsampling, ``bilinear`` when upsampling; when downsampling GDAL reads the
overview nearest the target resolution (the cheap path on a COG) instead of
every native pixel.  GDAL's averaging and bilinear kernels leave nodata pixels
out of the values they blend.  A paletted scene (one band, colour table) is
read with ``nearest`` whichever way: its values are colour-table indexes,
and GDAL's ``average`` of a paletted band averages the colours and takes the
table's nearest entry, a colour neither pixel has (red and blue came out
purple).  The palette is expanded after the read (``pipeline.pixel_kinds``).

The no-value rule is the reader's (``_valid_pixels``: nodata, all-band NaN,
masks), applied to the resampled values, and, for a scene with a nodata
value, the scene's mask resampled with ``nearest``: a model pixel whose
nearest native pixel has no value has none either, so nodata never bleeds
into valid pixels and an all-nodata tile is still skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from pipeline.resolution import ResampledTile

ValidRule = Callable[[rasterio.io.DatasetReader, np.ndarray, Window, tuple[int, int]], np.ndarray]


def read_resampled(
    src: rasterio.io.DatasetReader, tile: ResampledTile, bands: Sequence[int], valid_rule: ValidRule
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` of ``tile``'s native window at its model-pixel shape, with the no-value rule applied.

    Args:
        src: the open scene.
        tile: a tile in model pixels (its ``window()`` is native, float).
        bands: 1-based bands, in model order.
        valid_rule: the reader's no-value rule (``pipeline.reading._valid_pixels``).

    Returns:
        ``(data, valid)``: ``[C, h, w]`` in the scene's dtype (no-value pixels
        0) and bool ``[h, w]``, ``(h, w) = tile.out_shape_hw``.
    """
    window = tile.window()
    out_hw = tile.out_shape_hw
    paletted = src.count == 1 and src.colorinterp[0] is ColorInterp.palette  # indexes: never blended
    resampling = Resampling.nearest if paletted else tile.resampling
    data = src.read(list(bands), window=window, out_shape=(len(bands), *out_hw), resampling=resampling)
    valid = valid_rule(src, data, window, out_hw)
    if src.nodata is not None:
        nearest = src.dataset_mask(window=window, out_shape=out_hw, resampling=Resampling.nearest) != 0
        valid &= nearest
        data[:, ~valid] = 0
    return data, valid
