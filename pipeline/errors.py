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


def first_line(exc: BaseException) -> str:
    r"""The root cause of ``exc`` in one line, at most 500 characters.

    Ray wraps a worker's error in pages of context (the remote traceback,
    colour codes); the last ``SomeError: message`` line is the cause.  Any
    other exception gives its first non-empty line.

    Example:
        >>> first_line(RuntimeError("Traceback ...\n  File x\nValueError: bad band 4\n"))
        'ValueError: bad band 4'
    """
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (causes[-1] if causes else next((line for line in lines if line), type(exc).__name__))[:500]
