"""Labeled images at the training GSD: what a resampled image is, and the native window under a crop of it.

A ``ResampledImage`` is a ``LabeledImage`` whose boxes, ``size_hw`` and
crops are in model pixels (the training GSD), while ``window`` stays the
native window of the file it is read from.  ``native_crop`` turns a crop in
model pixels into the native (float) window GDAL reads into the crop's
shape, with detect's resampling rule (``pipeline.resolution.ResampledTile``:
``average`` when downsampling, ``bilinear`` up), so a training tile holds the
pixels detect reads at the model's GSD.  Plain geometry: no file is opened.

Example: a 400 x 400 px chip at 0.15 m trained at 0.3 m is a 200 x 200 px
``ResampledImage`` with ``scale_xy == (2.0, 2.0)``; its crop (10, 20, 50, 50)
reads the native window (20, 40, 100, 100) into 50 x 50 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rasterio.enums import Resampling
from rasterio.windows import Window

from retinanet.label_formats import LabeledImage


@dataclass(frozen=True)
class ResampledImage(LabeledImage):
    """A labeled image read at the training GSD: boxes, ``size_hw`` and crops in model pixels.

    Attributes:
        scale_xy: native px per model px along columns and rows.
        offset_px: (col, row) model px of this image's corner within the
            resampled file (window); validation grid tiles of a large image
            move it.
        native_hw: (height, width) native px of the file (window) it is read from.
    """

    scale_xy: tuple[float, float] = (1.0, 1.0)
    offset_px: tuple[int, int] = (0, 0)
    native_hw: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class NativeCrop:
    """A crop in model pixels and the native window under it (what ``pipeline.reading.read_window`` reads).

    Attributes:
        native: the native window, float offsets, in the file's pixels.
        out_shape_hw: (height, width) model px of the read.
        resampling: ``average`` down, ``bilinear`` up.
    """

    native: Window
    out_shape_hw: tuple[int, int]
    resampling: Resampling

    def window(self) -> Window:
        """The native window (the ``ResampledTile`` interface ``pipeline.resampled_read`` reads)."""
        return self.native


def native_crop(item: ResampledImage, crop: tuple[int, int, int, int] | None) -> NativeCrop:
    """The native window under ``crop`` (col, row, width, height model px of ``item``; None: all of it).

    The window is clamped to the native file (window) edges; the read keeps
    the crop's shape.

    Example:
        >>> im = ResampledImage("a.tif", None, None, None, "a", (200, 200), scale_xy=(2.0, 2.0),
        ...                     native_hw=(400, 400))
        >>> native_crop(im, (10, 20, 50, 50)).native
        Window(col_off=20.0, row_off=40.0, width=100.0, height=100.0)
    """
    height, width = item.size_hw or (0, 0)
    col, row, w, h = crop if crop is not None else (0, 0, width, height)
    sx, sy = item.scale_xy
    col0, row0 = (item.window[0], item.window[1]) if item.window else (0, 0)
    x0 = (item.offset_px[0] + col) * sx
    y0 = (item.offset_px[1] + row) * sy
    x1 = min(float(item.native_hw[1]), x0 + w * sx)
    y1 = min(float(item.native_hw[0]), y0 + h * sy)
    resampling = Resampling.average if sx * sy >= 1.0 else Resampling.bilinear
    return NativeCrop(Window(col0 + x0, row0 + y0, x1 - x0, y1 - y0), (h, w), resampling)


def sub_image(item: LabeledImage, crop: tuple[int, int, int, int], **changes: Any) -> LabeledImage:
    """``item`` cut to ``crop`` (col, row, width, height px of it): a validation grid tile.

    A ``ResampledImage`` moves its model-pixel offset; another image its
    native window.  ``changes`` (boxes, labels) are applied too.
    """
    from dataclasses import replace

    col, row, w, h = crop
    if isinstance(item, ResampledImage):
        offset = (item.offset_px[0] + col, item.offset_px[1] + row)
        return replace(item, offset_px=offset, size_hw=(h, w), **changes)
    col0, row0 = (item.window[0], item.window[1]) if item.window else (0, 0)
    return replace(item, window=(col0 + col, row0 + row, w, h), size_hw=(h, w), **changes)
