"""The one-line reasons the reader gives for scenes it cannot open, georeference or read.

Each says what the file is and what would help, and keeps GDAL's own cause:

* ``missing_georeferencing``: a scene without a CRS is told apart by what it
  has instead: ground control points (GCPs) or RPCs, which an affine
  transform cannot express (warp it first: ``gdalwarp``; ``--assume-crs``
  cannot help), a geotransform without CRS (``--assume-crs``), or nothing.
* ``open_hint``: a file that starts like a TIFF but does not open is a TIFF
  with a feature this GDAL lacks (a codec, a bit depth), not another format
  wanting ``--drivers``.
* ``gdal_cause``: rasterio's "Read failed. See previous exception for
  details." replaced by the GDAL error it chains (``IReadBlock failed ...
  TIFFReadEncodedStrip() failed``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.errors import InvalidSceneError

if TYPE_CHECKING:
    import rasterio
    from rasterio.errors import RasterioIOError

# The first bytes of classic and Big TIFF, both byte orders.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def missing_georeferencing(src: rasterio.io.DatasetReader, uri: str) -> InvalidSceneError:
    """The error for a scene with no CRS, by what georeferencing it has instead."""
    gcps, _ = src.gcps
    if gcps:
        return InvalidSceneError(
            f"{uri}: georeferenced only by {len(gcps)} ground control points (GCPs), not by a CRS and "
            "geotransform, so --assume-crs cannot help; warp it to a georeferenced GeoTIFF first "
            "(gdalwarp -t_srs EPSG:XXXX IN.tif OUT.tif, -tps for a thin-plate spline)"
        )
    if src.rpcs is not None:
        return InvalidSceneError(
            f"{uri}: georeferenced only by RPCs (rational polynomial coefficients), not by a CRS and "
            "geotransform, so --assume-crs cannot help; orthorectify it first "
            "(gdalwarp -rpc -to RPC_DEM=DEM.tif -t_srs EPSG:XXXX IN.tif OUT.tif)"
        )
    if src.transform.is_identity:
        return InvalidSceneError(
            f"{uri}: has no georeferencing at all (no CRS, geotransform, GCPs or RPCs), so detections cannot "
            "be placed; georeference it (gdal_translate -a_srs EPSG:XXXX -a_ullr ULX ULY LRX LRY), or pass "
            "--assume-crs EPSG:XXXX if it has a geotransform elsewhere"
        )
    return InvalidSceneError(
        f"{uri}: scene has no CRS, so detections cannot be georeferenced; "
        "pass --assume-crs EPSG:XXXX to process it anyway"
    )


def _starts_like_tiff(uri: str) -> bool:
    if "://" in uri or uri.startswith("/vsi") or not os.path.isfile(uri):
        return False
    try:
        with open(uri, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def open_hint(uri: str, default: str, error: str = "") -> str:
    """What to tell about a file that does not open: ``default`` unless it is a TIFF GDAL cannot read.

    A local file is a TIFF by its first bytes; an object (``/vsis3/``) by GDAL's
    ``error``, which names TIFF (libtiff's own messages) only for one.
    """
    if _starts_like_tiff(uri) or "TIFF" in error:
        return (
            "It is a TIFF, but one this GDAL cannot read (a feature it lacks, named above); if the file is "
            "complete, convert it with a tool that reads it (e.g. a newer GDAL: gdal_translate IN.tif OUT.tif)"
        )
    return default


def gdal_cause(exc: BaseException) -> str:
    """``exc``'s message, or the GDAL error it chains when it only says "See previous exception"."""
    message = str(exc)
    cause = exc.__cause__ or exc.__context__
    while "previous exception" in message and cause is not None:
        message, cause = str(cause), cause.__cause__ or cause.__context__
    return message.rstrip(".")


# GDAL's words for a path that is not there (local files and /vsis3/ objects)
_GONE_MESSAGES = ("No such file or directory", "does not exist in the file system")


def is_gone(uri: str, errors: list[RasterioIOError]) -> bool:
    """Whether ``uri`` failed to open because nothing is there (any more)."""
    if "://" not in uri and not uri.startswith("/vsi"):
        return not os.path.exists(uri)
    return any(word in str(exc) for exc in errors for word in _GONE_MESSAGES)


def is_local_vrt(uri: str) -> bool:
    """Whether ``uri`` is a local file that holds a GDAL VRT (whatever its name)."""
    if "://" in uri or uri.startswith("/vsi") or not os.path.isfile(uri):
        return False
    try:
        with open(uri, "rb") as f:
            return b"<vrtdataset" in f.read(1024).lower()
    except OSError:
        return False


def file_hint(drivers: tuple[str, ...]) -> str:
    """What to ask of a file that would not open, for the drivers it was opened with."""
    kind = "GeoTIFF" if tuple(drivers) == ("GTiff",) else f"{'/'.join(drivers)} file"
    return f"Is it a complete {kind}?"
