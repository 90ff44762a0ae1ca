"""Per-band statistics of pixels read by ``pipeline.reading``, over the pixels that have a value.

Training measures its band mean/std here (``retinanet.label_images.band_stats``),
from ``reading.read_window`` reads, so the nodata and NaN pixels that detect
reads as 0 are not folded into the model's normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.reading import WindowRead


@dataclass(frozen=True, slots=True)
class BandStatistics:
    """Per-band statistics of the pixels that have a value.

    Attributes:
        mean: per band, raw units.
        std: per band (population standard deviation), raw units.
        num_pixels: pixels counted (those with a value).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_pixels: int


def band_statistics(reads: Iterable[WindowRead]) -> BandStatistics:
    """Per-band mean and std over the pixels of ``reads`` that have a value (nodata and NaN left out).

    The reads are combined without concatenating them (Chan et al.'s
    pairwise update of count, mean and sum of squared deviations), in float64.

    Example:
        >>> pixels = np.array([[[1, 3], [65535, 5]]], np.uint16)
        >>> valid = np.array([[True, True], [False, True]])
        >>> from pipeline.reading import WindowRead
        >>> band_statistics([WindowRead(pixels, valid)])
        BandStatistics(mean=(3.0,), std=(1.632993161855452,), num_pixels=3)
    """
    count, mean, m2 = 0, None, None
    for read in reads:
        values = read.pixels[:, read.valid].astype(np.float64)  # (C, N)
        if values.shape[1] == 0:
            continue
        n, read_mean = values.shape[1], values.mean(axis=1)
        read_m2 = ((values - read_mean[:, None]) ** 2).sum(axis=1)
        if mean is None or m2 is None:
            count, mean, m2 = n, read_mean, read_m2
            continue
        delta, total = read_mean - mean, count + n
        mean = mean + delta * n / total
        m2 = m2 + read_m2 + delta**2 * count * n / total
        count = total
    if mean is None or m2 is None:
        return BandStatistics((), (), 0)
    std = np.sqrt(m2 / count)
    return BandStatistics(tuple(float(v) for v in mean), tuple(float(v) for v in std), count)
