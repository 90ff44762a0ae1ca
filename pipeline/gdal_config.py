"""How the one reader (``pipeline.reading``) opens rasters: ``ReadConfig``, drivers, GDAL options.

* ``DEFAULT_DRIVERS``: scenes open with the GTiff driver only, unless the
  caller widens the list; ``REFUSED_DRIVERS`` (VRT) never open, since a VRT
  can point at any local file, object or URL the process can reach.
* ``listable_drivers`` / ``canonical_drivers`` / ``scene_extensions``: which
  driver names may be asked for, in GDAL's spelling, and the file extensions
  a source is listed by.
* ``gdal_options`` / ``gdal_env``: the GDAL settings of every read (object
  store endpoint and retries from ``pipeline.s3_settings``, no sidecar probes);
  ``block_cache_mb`` sizes the block cache for one scene.

Nothing here opens a file: ``pipeline.reading`` does, with these settings.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
import rasterio

from pipeline.s3_settings import S3Settings

if TYPE_CHECKING:
    from pipeline.types import PixelRange

# GDAL reads COGs with the GTiff driver (its COG driver only writes).
DEFAULT_DRIVERS: tuple[str, ...] = ("GTiff",)

# A VRT can point at any local file or object the worker can reach: not a scene driver.
REFUSED_DRIVERS = ("VRT",)


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """How scenes are opened and read.

    Attributes:
        bands: 1-based band indexes to read, in model channel order.
        drivers: GDAL drivers allowed to open a scene (never a VRT).
        assume_crs: CRS for scenes that have none (e.g. ``EPSG:32633``).
        model_input: the pixel kind the model was trained on; a scene of
            another kind is refused or rescaled (``pipeline.pixel_kinds``).
            None: kinds are not compared (training, label images).
        rescale: ``refuse``, ``minmax`` or ``percentile`` (``--rescale``).
    """

    bands: tuple[int, ...] = (1, 2, 3)
    drivers: tuple[str, ...] = DEFAULT_DRIVERS
    assume_crs: str | None = None
    model_input: PixelRange | None = None
    rescale: str = "refuse"

    def __post_init__(self) -> None:
        if self.rescale not in ("refuse", "minmax", "percentile"):
            raise ValueError(f"ReadConfig.rescale must be refuse, minmax or percentile, got {self.rescale!r}")


def listable_drivers() -> dict[str, str]:
    """GDAL raster drivers a source can be listed for, ``{lower-case name: GDAL's name}``.

    Those GDAL gives a file extension, less ``REFUSED_DRIVERS``; ``cog`` maps
    to ``GTiff`` (GDAL's COG driver only writes; GTiff reads COGs).
    """
    from rasterio.drivers import raster_driver_extensions

    names = set(raster_driver_extensions().values()) - set(REFUSED_DRIVERS)
    return {name.lower(): name for name in names} | {"cog": "GTiff"}


def canonical_drivers(names: Sequence[str]) -> tuple[str, ...]:
    """GDAL's spelling of each driver name, given in any case (``gtiff`` -> ``GTiff``).

    Raises:
        ValueError: naming the drivers that are unknown, list no files, or are refused.
    """
    known = listable_drivers()
    bad = [name for name in names if name.lower() not in known]
    if bad or not names:
        refused = [name for name in bad if name.upper() in REFUSED_DRIVERS]
        why = " (a VRT can point at any file; gdal_translate it to a GeoTIFF)" if refused else ""
        raise ValueError(
            f"{', '.join(bad) or 'no driver'}: not a GDAL raster driver that opens scene files here{why}; "
            "give GDAL short names, e.g. GTiff,JP2OpenJPEG,PNG,JPEG"
        )
    return tuple(dict.fromkeys(known[name.lower()] for name in names))


def scene_extensions(drivers: Sequence[str]) -> tuple[str, ...]:
    """File extensions (``.tif``) of the scenes that ``drivers`` open (``_scene_extensions``, cached)."""
    return _scene_extensions(tuple(drivers))


@functools.lru_cache(maxsize=16)
def _scene_extensions(drivers: tuple[str, ...]) -> tuple[str, ...]:
    """File extensions (``.tif``) of the scenes that ``drivers`` open, from GDAL's driver metadata.

    A source is listed by these, so widening ``ReadConfig.drivers`` (``detect
    --drivers GTiff,JP2OpenJPEG``) also lists the files those drivers read.
    Names are read as ``listable_drivers`` reads them (any case, ``COG`` as
    ``GTiff``); ``REFUSED_DRIVERS`` and unknown names list nothing.

    Example:
        >>> scene_extensions(("GTiff",))
        ('.tif', '.tiff')
    """
    from rasterio.drivers import raster_driver_extensions

    known = listable_drivers()
    wanted = {known[name.lower()] for name in drivers if name.lower() in known}
    return tuple(sorted(f".{ext}" for ext, name in raster_driver_extensions().items() if name in wanted))


def extension_drivers(uri: str) -> tuple[str, ...]:
    """The driver GDAL names for ``uri``'s file extension (never a refused one), else ``DEFAULT_DRIVERS``.

    For readers of a file detect already read (``quicklook``): a ``.jp2``
    scene opens with JP2OpenJPEG, a ``.tif`` (or a ``.vrt``) with GTiff only.

    Example:
        >>> extension_drivers("s3://b/a.jp2"), extension_drivers("a.vrt")
        (('JP2OpenJPEG',), ('GTiff',))
    """
    from rasterio.drivers import raster_driver_extensions

    ext = os.path.splitext(urlparse(uri).path if "://" in uri else uri)[1].lstrip(".").lower()
    name = raster_driver_extensions().get(ext)
    return (name,) if name and name.lower() in listable_drivers() else DEFAULT_DRIVERS


def block_cache_mb(width_px: int, tile_height_px: int, num_bands: int, dtype: str) -> int:
    """GDAL block cache (MB) for reading one scene row of tiles after another.

    One row of tiles is ``width_px * tile_height_px * num_bands * itemsize``
    bytes.  The cache holds two: the blocks a row of tiles touches reach past
    its top and bottom edges, and the next row re-reads the overlap.
    Clamped to 64..4096 MB.

    Example:
        >>> block_cache_mb(50_000, 1024, 3, "uint16")  # 293 MiB a row, doubled
        585
        >>> block_cache_mb(500, 1024, 3, "uint8")
        64
    """
    row_bytes = width_px * tile_height_px * num_bands * np.dtype(dtype).itemsize
    return int(min(4096, max(64, 2 * row_bytes // 2**20)))


def gdal_options(config: ReadConfig) -> dict[str, object]:
    """GDAL config options for object-store and local reads.

    The S3 endpoint, region, addressing style and retries come from
    ``pipeline.s3_settings`` (``AWS_ENDPOINT_URL`` etc., as the AWS CLI reads
    them).  The block cache (``GDAL_CACHEMAX``) is set per scene by ``read_tiles``.
    """
    options: dict[str, object] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no LIST per open on object stores
        "VSI_CACHE": True,
        "VSI_CACHE_SIZE": 64 * 1024 * 1024,
        # object-store reads only of the files a source lists (no sidecar probes)
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ",".join(_both_cases(scene_extensions(config.drivers))),
        "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",  # should a VRT ever open: no raw reads of other files
    }
    # endpoint, scheme, addressing, region and retries (GDAL does not retry by default): the AWS variables
    options.update(S3Settings.from_env().gdal_options())
    return options


def _both_cases(extensions: Sequence[str]) -> list[str]:
    return [case for ext in extensions for case in (ext, ext.upper())]


@contextmanager
def gdal_env(config: ReadConfig) -> Iterator[None]:
    """``rasterio.Env`` with ``gdal_options(config)``."""
    with rasterio.Env(**gdal_options(config)):
        yield
