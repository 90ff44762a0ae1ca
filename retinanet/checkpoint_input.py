"""The pixel kind a checkpoint was trained on: ``meta.json`` ``input``, written by training, read by detect.

``meta.json`` holds ``"input": {"dtype": "uint8", "range": [0, 255]}``: the
dtype of the training images and the range of their values (for integers
the range the dtype holds, narrowed by ``NBITS``; for floats the band
statistics' mean +- 3 std, since a float header states no range).  Detect
gives it to the reader (``pipeline.reading.ReadConfig.model_input``), which
refuses or rescales scenes of another kind (``pipeline.pixel_kinds``).

Checkpoints written before ``input`` existed are read as uint8 0..255 when
their band statistics say so (every mean within 0..255 and above 2, every
std at most 128: 8-bit imagery, as the default and ImageNet statistics
are), else as unknown: their scenes are not checked, and detect says so once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.types import PixelRange
from retinanet.config import BandConfig, ModelConfig
from retinanet.errors import CheckpointError

INPUT_KEY = "input"
UINT8 = PixelRange("uint8", 0.0, 255.0)


def input_meta(kind: PixelRange | None) -> dict[str, Any]:
    """The ``meta.json`` entry for ``kind`` (empty when unknown: mixed dtypes, no images)."""
    if kind is None or kind.min_value is None or kind.max_value is None:
        return {}
    return {INPUT_KEY: {"dtype": kind.dtype, "range": [kind.min_value, kind.max_value]}}


def training_input(kinds: Sequence[PixelRange], bands: BandConfig) -> PixelRange | None:
    """The kind a model trained on images of ``kinds`` takes; None when they differ in dtype or there are none.

    Integer images of one dtype give the widest of their ranges; float images
    give their band statistics' mean +- 3 std (their header says no range).
    """
    dtypes = {kind.dtype for kind in kinds}
    if len(dtypes) != 1:
        return None
    dtype = dtypes.pop()
    if np.issubdtype(np.dtype(dtype), np.floating):
        lows = [m - 3 * s for m, s in zip(bands.mean, bands.std)]
        highs = [m + 3 * s for m, s in zip(bands.mean, bands.std)]
        return PixelRange(dtype, float(min(lows)), float(max(highs)))
    lows = [k.min_value for k in kinds if k.min_value is not None]
    highs = [k.max_value for k in kinds if k.max_value is not None]
    return PixelRange(dtype, min(lows), max(highs))


def image_kinds(paths: Sequence[str]) -> list[PixelRange]:
    """The pixel kind of each training image, from its header (as the label readers open it).

    Raises:
        retinanet.errors.LabelError: an image cannot be opened.
    """
    from pathlib import Path

    from pipeline.errors import PipelineError
    from pipeline.reading import read_header
    from retinanet.errors import LabelError
    from retinanet.label_formats import image_read_config

    kinds = []
    for path in sorted(set(paths)):
        try:
            kind = read_header(path, image_read_config(Path(path))).pixel_kind
        except PipelineError as exc:
            raise LabelError(" ".join(str(exc).split())) from None
        if kind is not None:
            kinds.append(kind)
    return kinds


def _looks_uint8(bands: BandConfig) -> bool:
    return all(2.0 < m < 255.0 for m in bands.mean) and all(s <= 128.0 for s in bands.std)


def model_input(
    meta: dict[str, Any], config: ModelConfig, source: str
) -> tuple[PixelRange | None, str | None]:
    """(the kind the checkpoint takes, a note when it was assumed or is unknown) from its ``meta.json``.

    Raises:
        CheckpointError: ``input`` is there but not ``{"dtype": NAME, "range": [LOW, HIGH]}``.
    """
    raw = meta.get(INPUT_KEY)
    if raw is None:
        stats = f"band means {[round(m, 1) for m in config.band_config.mean]}"
        if _looks_uint8(config.band_config):
            return UINT8, f"{source}: records no input dtype; its {stats} say uint8 0..255, assumed"
        return None, (
            f"warning: {source}: records no input dtype and its {stats} do not say uint8, so scenes "
            "are not checked against it: make sure they are what it was trained on"
        )
    try:
        low, high = (float(v) for v in raw["range"])
        dtype = str(np.dtype(raw["dtype"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source}/meta.json: input must be {{'dtype': NAME, 'range': [LOW, HIGH]}}, got {raw!r} ({exc})"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise CheckpointError(
            f"{source}/meta.json: input.range must be two finite numbers LOW < HIGH, got {raw!r}"
        )
    return PixelRange(dtype, low, high), None
