"""The closed choices the CLI offers, in a module that imports nothing heavy.

``jobs/`` builds its ``click.Choice`` lists from these enums at import time,
so ``aerialdet --help`` must not pull in numpy or rasterio to get them.  Their
homes stay ``pipeline.detection.Precision`` and ``pipeline.merging.MergeStrategy``
(both re-export them).
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Arithmetic the network runs in (``aerialdet detect --precision``)."""

    AUTO = "auto"  # resolved where the model runs: see pipeline.detection.resolve_precision
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class MergeStrategy(str, Enum):
    """Which tile keeps a detection seen by several tiles (see ``pipeline.merging``'s docstring)."""

    CORE = "core"
    EDGE = "edge"
    IOU = "iou"


def values(enum: type[Enum]) -> tuple[str, ...]:
    """The values of a string enum, in definition order: a ``click.Choice`` list.

    Example:
        >>> values(MergeStrategy)
        ('core', 'edge', 'iou')
    """
    return tuple(str(member.value) for member in enum)
