"""Errors raised by the pipeline.

::

    PipelineError
    ├── SourceError(PipelineError, ValueError)       a source lists no scenes / cannot be listed
    ├── InvalidSceneError(PipelineError, ValueError) a scene cannot be processed (format, CRS, bands)
    ├── TileReadError(PipelineError, OSError)        pixels of a tile could not be read
    └── OutputError(PipelineError, OSError)          an output cannot be written / read back

Every message names the file (or URI) and the problem and, where there is
one, what to do about it.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of the pipeline's errors."""


class SourceError(PipelineError, ValueError):
    """A raster source could not be listed or holds no scenes."""


class InvalidSceneError(PipelineError, ValueError):
    """A scene cannot be processed: not a GeoTIFF, no CRS, too few bands, ..."""


class TileReadError(PipelineError, OSError):
    """Reading the pixels of one tile failed (truncated or corrupt file, I/O)."""


class OutputError(PipelineError, OSError):
    """Detections could not be written, or an output path holds no detections."""
