"""Pixels of labeled images, every one read through ``pipeline.reading``.

Training reads what detect reads: GeoTIFF chips and scenes open as detect
opens scenes (the GTiff driver only, the same GDAL settings), PNG/JPEG chips
with those two drivers named (``label_formats.image_read_config``), never a
VRT; and the no-value rule is detect's (nodata, NaN and masked pixels read
as 0), so a training tile holds the values ``read_tiles`` gives detect for
the same window.

* ``read_image``: float32 ``[C, H, W]`` raw units of an image or a crop of it.
* ``check_bands``: every image has the bands asked for (one header read a file).
* ``band_stats``: per-band mean/std over the pixels that have a value.
* ``image_size``: (height, width) of a labeled image.

A file that cannot be read raises ``LabelError`` naming it, in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retinanet.errors import LabelError
from retinanet.gsd_images import ResampledImage, native_crop
from retinanet.label_formats import TIFF_EXTENSIONS, LabeledImage, _image_size, image_read_config

if TYPE_CHECKING:
    from pipeline.reading import WindowRead

# Decoded PNG/JPEG files kept per process: a training tile is a crop of a file,
# and decoding a 2500 px PNG for each crop costs more than the training step.
_DECODED: dict[str, WindowRead] = {}
_DECODED_MAX_BYTES = 1 << 30


@contextmanager
def _as_label_error() -> Iterator[None]:
    """The reader's errors (they name the file) as ``LabelError``, on one line."""
    from pipeline.errors import PipelineError

    try:
        yield
    except PipelineError as exc:
        raise LabelError(" ".join(str(exc).split())) from None


def _band_count(path: Path) -> int:
    """Bands of an image as ``read_image`` reads them (one header read)."""
    from pipeline.reading import read_header

    with _as_label_error():
        return read_header(str(path), image_read_config(path)).count


def check_bands(images: Sequence[LabeledImage], bands: Sequence[int]) -> None:
    """Check that every image file has the 1-based ``bands`` (one header read per file).

    Raises:
        LabelError: naming the first image with fewer bands, or one that cannot be opened.
    """
    for path in sorted({im.path for im in images}):
        count = _band_count(Path(path))
        if max(bands) > count:
            raise LabelError(f"{path}: has {count} band(s), but bands {list(bands)} were asked for")


def image_size(item: LabeledImage) -> tuple[int, int]:
    """(height, width) px of a labeled image (its window's, when set)."""
    if item.size_hw is not None:
        return item.size_hw
    if item.window is not None:
        return item.window[3], item.window[2]
    with _as_label_error():
        return _image_size(Path(item.path))


def _decoded(path: Path) -> WindowRead:
    """All bands of a PNG/JPEG, read whole through the reader once per process."""
    key = str(path)
    if key not in _DECODED:
        from pipeline.reading import read_header, read_window

        with _as_label_error():
            count = read_header(key, image_read_config(path)).count
            read = read_window(key, None, image_read_config(path, range(1, count + 1)))
        if sum(r.pixels.nbytes for r in _DECODED.values()) + read.pixels.nbytes > _DECODED_MAX_BYTES:
            _DECODED.clear()
        _DECODED[key] = read
    return _DECODED[key]


def _read_resampled(
    item: ResampledImage, bands: Sequence[int], crop: tuple[int, int, int, int] | None
) -> WindowRead:
    """A crop (model px) of an image at the training GSD: its native window read at the crop's shape.

    GeoTIFFs are read by GDAL as detect reads at the model's GSD; a decoded
    PNG/JPEG (``--label-gsd-m``) is resized in memory (area down, bilinear
    up; the valid mask by nearest).
    """
    from pipeline.reading import WindowRead, read_window

    where = native_crop(item, crop)
    path = Path(item.path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        with _as_label_error():
            return read_window(item.path, where, image_read_config(path, bands))
    import torch

    win = where.native.round_offsets().round_lengths()
    whole = read_pixels(LabeledImage(item.path, None, item.boxes_xyxy_px, item.labels, item.group), bands)
    r0, c0 = int(win.row_off), int(win.col_off)
    pixels = whole.pixels[:, r0 : r0 + int(win.height), c0 : c0 + int(win.width)]
    valid = whole.valid[r0 : r0 + int(win.height), c0 : c0 + int(win.width)]
    mode = "area" if where.resampling.name == "average" else "bilinear"
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(pixels.astype(np.float32))[None], size=where.out_shape_hw, mode=mode
    )[0].numpy()
    mask = (
        torch.nn.functional.interpolate(
            torch.from_numpy(valid[None, None].astype(np.float32)), size=where.out_shape_hw, mode="nearest"
        )[0, 0].numpy()
        > 0.5
    )
    resized[:, ~mask] = 0
    return WindowRead(resized.astype(pixels.dtype), mask)


def read_pixels(
    item: LabeledImage, bands: Sequence[int], crop: tuple[int, int, int, int] | None = None
) -> WindowRead:
    """Pixels of a labeled image, or of a ``crop`` of it, as ``pipeline.reading.read_window`` reads them.

    Args:
        item: the labeled image (a file, or a window of a scene).
        bands: 1-based bands in model order.
        crop: (col_off, row_off, width, height) px within the image (its window).

    Returns:
        ``WindowRead``: ``[C, H, W]`` in the file's dtype (no-value pixels 0) and the valid mask.

    Raises:
        LabelError: the file cannot be opened or read, or has fewer bands.
    """
    from pipeline.reading import WindowRead, read_window

    if isinstance(item, ResampledImage):
        return _read_resampled(item, bands, crop)
    col, row = (item.window[0], item.window[1]) if item.window else (0, 0)
    if crop is not None:
        window: tuple[int, int, int, int] | None = (col + crop[0], row + crop[1], crop[2], crop[3])
    else:
        window = item.window
    path = Path(item.path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        with _as_label_error():
            return read_window(item.path, window, image_read_config(path, bands))
    whole = _decoded(path)
    if max(bands) > whole.pixels.shape[0]:
        raise LabelError(
            f"{path}: has {whole.pixels.shape[0]} band(s), but bands {list(bands)} were asked for"
        )
    pixels, valid = whole.pixels, whole.valid
    if window:
        c, r, w, h = window
        pixels, valid = pixels[:, r : r + h, c : c + w], valid[r : r + h, c : c + w]
    return WindowRead(pixels[[b - 1 for b in bands]], valid)


def read_image(
    item: LabeledImage, bands: Sequence[int], crop: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Pixels of a labeled image, or of a ``crop`` of it: float32 ``[C, H, W]`` raw units.

    The values are those detect's ``read_tiles`` gives for the same window
    (nodata, NaN and masked pixels 0), as float32.

    Args:
        item: the labeled image (a file, or a window of a scene).
        bands: 1-based bands in model order.
        crop: (col_off, row_off, width, height) px within the image (its window).

    Raises:
        LabelError: the file cannot be opened or read, or has fewer bands.
    """
    return read_pixels(item, bands, crop).pixels.astype(np.float32)


def band_stats(
    images: Sequence[LabeledImage], bands: Sequence[int], *, max_images: int = 32, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std (raw units) over up to ``max_images`` images (``check_bands`` first).

    Only pixels that have a value count (``pipeline.pixel_stats``): nodata,
    NaN and masked pixels, which the model sees as 0, are left out.  The std
    is at least 1e-3.

    Raises:
        LabelError: an image cannot be read, or no picked image has a pixel with a value.
    """
    from pipeline.pixel_stats import band_statistics

    picks = np.random.default_rng(seed).permutation(len(images))[:max_images]
    stats = band_statistics(read_pixels(images[i], bands) for i in picks)
    if stats.num_pixels == 0:
        where = f"{images[picks[0]].path} (and {len(picks) - 1} more)" if len(picks) else "no image"
        raise LabelError(f"{where}: no pixel with a value (all nodata/NaN/masked): band statistics unknown")
    std = np.maximum(np.asarray(stats.std), 1e-3)
    return tuple(stats.mean), tuple(float(v) for v in std)
