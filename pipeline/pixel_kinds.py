"""What kind of pixels a scene holds, and how they become the pixels its model was trained on.

A model learns the raw values of the imagery it was trained on (uint8 DN
0..255, uint16 DN, float reflectance, ...).  Another kind given to it is
read as if it were that kind: a uint16 scene through a uint8 normalisation
gave 20 boxes at score 1.0 on 10 x 10 px, palette indexes read as
brightness gave 1285 detections.  So, at the header, before any tile:

* complex scenes (SAR, ``complex_int16`` included) are refused in one line;
* a paletted scene (one band, colour table) is expanded to RGB(A) through
  its colour table when the model takes three or four bands, to grey when
  the model takes one and the table is grey (GDAL gives 1-bit data a
  black/white table: 0/1 become 0/255), and refused otherwise (its values
  are indexes, not brightness);
* a scene whose kind (``PixelRange``: dtype, and for integers the range its
  bits hold, ``NBITS`` included: 1-bit data hold 0..1, not 0..255) differs
  from the model's (``ReadConfig.model_input``) is refused naming both kinds
  and ``--rescale``; with ``--rescale minmax`` or ``percentile`` it is
  stretched linearly, one scale for all bands (colours keep their balance),
  from its minimum/maximum (or its 2nd/98th percentile, clipped) over the
  pixels that have a value in a decimated read of at most
  ``SAMPLE_SIZE_PX`` on the long side, to the model's range;
* a TIFF of several images is read from its first image only, and says so.

``plan_pixels`` decides (``PixelPlan``, with the note the scene's report line
carries); ``apply_plan`` turns the raw pixels of a read into model pixels.
The decision is a function of the file alone (the same decimated read in
every task), so every tile of a scene, and every re-run, gets the same
scale (a process measures a scene once: its later read tasks reuse the
limits).  Without ``ReadConfig.model_input`` (training, label images, the
stand-in model) kinds are not compared.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from rasterio.enums import ColorInterp

from pipeline.errors import InvalidSceneError
from pipeline.types import PixelRange

if TYPE_CHECKING:
    import rasterio

    from pipeline.gdal_config import ReadConfig

RESCALE_MODES: tuple[str, ...] = ("refuse", "minmax", "percentile")
PERCENTILES: tuple[float, float] = (2.0, 98.0)
SAMPLE_SIZE_PX = 1024  # long side of the decimated read the rescale statistics come from


class _Read(Protocol):
    @property
    def pixels(self) -> np.ndarray: ...  # [C, H, W]

    @property
    def valid(self) -> np.ndarray: ...  # [H, W] bool


# the reader's read (src, uri, bands, window, (height, width)) -> WindowRead, by its no-value rule
Sample = Callable[..., _Read]


@dataclass(frozen=True, slots=True)
class PixelPlan:
    """How the pixels of one scene become model input.

    Attributes:
        read_bands: 1-based bands read from the file (the paletted band alone
            when ``palette`` is set).
        palette: ``[N, C]`` lookup of each palette index to the model's
            channels (in ``ReadConfig.bands`` order), or None.
        scale: multiply raw values by this (after the palette), or None: as read.
        offset: then add this.
        out_dtype: the dtype rescaled pixels are rounded and clipped to.
        out_range: (min, max) rescaled pixels are clipped to.
        note: what was done, for the scene's report line; None: nothing.
    """

    read_bands: tuple[int, ...]
    palette: np.ndarray | None = None
    scale: float | None = None
    offset: float = 0.0
    out_dtype: str = "float32"
    out_range: tuple[float, float] = (0.0, 0.0)
    note: str | None = None


def nominal_range(src: rasterio.io.DatasetReader) -> PixelRange:
    """The kind of a raster's first band: its dtype and, for integers, the range its bits hold.

    ``NBITS`` (1-, 2-, 4-, 12-bit data) narrows an integer dtype's range;
    floats have no range a header can tell (None, None).
    """
    dtype = np.dtype(src.dtypes[0])
    if not np.issubdtype(dtype, np.integer):
        return PixelRange(dtype.name, None, None)
    info = np.iinfo(dtype)
    nbits = src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    if nbits and nbits.isdigit() and 0 < int(nbits) < info.bits:
        if info.min < 0:
            return PixelRange(dtype.name, float(-(2 ** (int(nbits) - 1))), float(2 ** (int(nbits) - 1) - 1))
        return PixelRange(dtype.name, 0.0, float(2 ** int(nbits) - 1))
    return PixelRange(dtype.name, float(info.min), float(info.max))


def refuse_complex(src: rasterio.io.DatasetReader, uri: str) -> None:
    """Refuse complex pixels (SAR ``complex_int16``, ``complex64``...) in one line.

    Raises:
        InvalidSceneError: naming the file, its dtype and what to convert it to.
    """
    dtype = str(src.dtypes[0])
    if dtype.startswith("complex"):
        raise InvalidSceneError(
            f"{uri}: pixels are complex ({dtype}, e.g. SAR), which a detection model cannot take; "
            "convert them to amplitude first (e.g. gdal_translate -ot Float32 on a VRT with "
            "PixelFunctionType=mod, or gdal_calc.py --calc='abs(A)')"
        )


def _paletted(src: rasterio.io.DatasetReader) -> bool:
    return src.count == 1 and src.colorinterp[0] is ColorInterp.palette


def _palette_lookup(src: rasterio.io.DatasetReader, uri: str, bands: tuple[int, ...]) -> np.ndarray:
    """``[N, C]`` uint8: palette index -> the asked channels of its RGBA entry (its grey for a grey table)."""
    colormap = src.colormap(1)
    size = 256 if src.dtypes[0] == "uint8" else 65536
    rgba = np.zeros((size, 4), np.uint8)
    for index, entry in colormap.items():
        if 0 <= index < size:
            rgba[index] = entry
    grey = all(r == g == b for r, g, b, _ in colormap.values())  # e.g. GDAL's black/white of 1-bit data
    if grey and bands == (1,):
        return rgba[:, :1]
    if len(bands) not in (3, 4) or max(bands) > 4:
        raise InvalidSceneError(
            f"{uri}: a paletted scene (its values are colour-table indexes, not brightness) but the model "
            f"takes bands {bands}; it is expanded to RGB(A) only for a model of 3 or 4 bands (1..4): "
            "expand it yourself (gdal_translate -expand gray|rgb) into what the model was trained on"
        )
    return rgba[:, [b - 1 for b in bands]]


def _stretch(lo: float, hi: float, target: PixelRange) -> tuple[float, float]:
    """(scale, offset) taking ``lo..hi`` to the target range (constant scenes to its minimum)."""
    assert target.min_value is not None and target.max_value is not None
    if hi <= lo:
        return 0.0, target.min_value
    scale = (target.max_value - target.min_value) / (hi - lo)
    return scale, target.min_value - lo * scale


# (uri, size, bands, mode) -> (low, high): a worker's read tasks of one scene sample it once
_LIMITS: dict[tuple[object, ...], tuple[float, float]] = {}
_MAX_CACHED = 256


def _sample_limits(
    src: rasterio.io.DatasetReader, uri: str, plan: PixelPlan, sample: Sample, mode: str
) -> tuple[float, float]:
    """The scene's (low, high) raw values by ``mode``, over the pixels that have a value (cached per process)."""
    changed = (
        os.stat(uri).st_mtime_ns if os.path.isfile(uri) else None
    )  # a local file rewritten: measured again
    key = (
        uri,
        changed,
        src.width,
        src.height,
        src.dtypes[0],
        plan.read_bands,
        plan.palette is not None,
        mode,
    )
    if key not in _LIMITS:
        if len(_LIMITS) >= _MAX_CACHED:
            _LIMITS.clear()
        _LIMITS[key] = _measure_limits(src, uri, plan, sample, mode)
    return _LIMITS[key]


def _measure_limits(
    src: rasterio.io.DatasetReader, uri: str, plan: PixelPlan, sample: Sample, mode: str
) -> tuple[float, float]:
    factor = max(1.0, max(src.width, src.height) / SAMPLE_SIZE_PX)
    shape_hw = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
    read = sample(src, uri, plan.read_bands, None, shape_hw)
    pixels, valid = read.pixels, read.valid
    if plan.palette is not None:
        pixels = np.moveaxis(plan.palette[pixels[0]], -1, 0)
    values = pixels[:, valid].astype(np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InvalidSceneError(f"{uri}: no pixel has a value, so it cannot be rescaled (--rescale {mode})")
    if mode == "minmax":
        return float(values.min()), float(values.max())
    low, high = np.percentile(values, PERCENTILES)
    return float(low), float(high)


def plan_pixels(src: rasterio.io.DatasetReader, uri: str, config: ReadConfig, sample: Sample) -> PixelPlan:
    """Decide, from the header (and a decimated sample when rescaling), how a scene's pixels are read.

    Args:
        src: the open scene.
        uri: its URI, for the messages.
        config: bands, the model's pixel kind (``model_input``) and ``rescale``.
        sample: the reader's decimated read (only called to rescale).

    Raises:
        InvalidSceneError: complex pixels, a palette the model cannot take, or
            a kind that differs from the model's under ``rescale="refuse"``.
    """
    refuse_complex(src, uri)
    notes = []
    if len(src.subdatasets) > 1:
        notes.append(
            f"only the first of its {len(src.subdatasets)} images is read "
            f"(read another with gdal_translate {src.subdatasets[1]} page2.tif)"
        )
    plan, kind = PixelPlan(tuple(config.bands)), nominal_range(src)
    if _paletted(src):
        lookup = _palette_lookup(src, uri, tuple(config.bands))
        plan, kind = PixelPlan((1,), lookup), PixelRange("uint8", 0.0, 255.0)
        notes.append("palette expanded to grey" if lookup.shape[1] == 1 else "palette expanded to RGB")
    target = config.model_input
    if max(plan.read_bands) > src.count:  # the reader refuses it, naming --bands
        return PixelPlan(plan.read_bands)
    if target is None or kind.matches(target):
        return PixelPlan(plan.read_bands, plan.palette, note="; ".join(notes) or None)
    if config.rescale == "refuse" or target.min_value is None or target.max_value is None:
        raise InvalidSceneError(
            f"{uri}: pixels are {kind.describe()} but the model was trained on {target.describe()}, so its "
            "values would be misread; pass --rescale minmax or --rescale percentile to stretch each scene "
            "to the model's range, or convert the scene (gdal_translate -ot/-scale)"
        )
    lo, hi = _sample_limits(src, uri, plan, sample, config.rescale)
    if hi <= lo and kind.min_value == 0 and kind.max_value is not None:
        lo, hi = (
            0.0,
            kind.max_value,
        )  # one value only, unsigned: scale by the bits it holds (else: the minimum)
    scale, offset = _stretch(lo, hi, target)
    notes.append(
        f"rescaled {kind.describe()} to the model's {target.describe()} "
        f"(--rescale {config.rescale}: {lo:g}..{hi:g} -> {target.min_value:g}..{target.max_value:g})"
    )
    out_range = (target.min_value, target.max_value)
    return PixelPlan(plan.read_bands, plan.palette, scale, offset, target.dtype, out_range, "; ".join(notes))


def apply_plan(plan: PixelPlan, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Raw pixels ``[C, H, W]`` of a read -> model pixels, no-value pixels 0 (``valid`` ``[H, W]``)."""
    if plan.palette is None and plan.scale is None:
        return data
    out = np.moveaxis(plan.palette[data[0]], -1, 0) if plan.palette is not None else data
    if plan.scale is not None:
        scaled = out.astype(np.float64) * plan.scale + plan.offset
        np.clip(scaled, *plan.out_range, out=scaled)
        if np.issubdtype(np.dtype(plan.out_dtype), np.integer):
            scaled = np.rint(scaled)
        out = scaled.astype(plan.out_dtype)
    out = np.ascontiguousarray(out)
    out[:, ~valid] = 0
    return out
