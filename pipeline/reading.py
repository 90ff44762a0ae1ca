"""Scene header and tile pixels: the only ``rasterio.open`` on the inference path.

* ``open_scene`` reads a scene's header into ``SceneInfo`` and refuses what
  cannot be processed (not a GeoTIFF, no CRS without ``--assume-crs``, too
  few bands), naming the file and the problem.
* ``read_tiles`` reads a list of tiles of one scene with *clamped* windows
  (never boundless reads, which bypass GDAL's block cache) and pads edge
  tiles with zeros in numpy.  Pixels keep the scene's dtype (``TileRead``).  A scene is never read whole.  GDAL's block
  cache is sized there, for that scene (``block_cache_mb``).
* ``read_footprint`` gives the polygon a scene covers, from its header.

A scene whose file is gone when it is opened (deleted after the run listed
it) is reported as such, not as a file GDAL cannot parse.

Only the GeoTIFF/COG drivers open scenes unless the caller widens the list:
a VRT or PNG renamed ``.tif`` would otherwise open with its own driver (and a
VRT can point at any local file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from pipeline.errors import InvalidSceneError, TileReadError
from pipeline.georef import scene_footprint
from pipeline.sources import s3_endpoint_url
from pipeline.types import SceneInfo, TileSpec

# GDAL reads COGs with the GTiff driver (its COG driver only writes).
DEFAULT_DRIVERS: tuple[str, ...] = ("GTiff",)
# GDAL's words for a path that is not there (local files and /vsis3/ objects)
_GONE_MESSAGES = ("No such file or directory", "does not exist in the file system")


# A VRT can point at any local file or object the worker can reach: not a scene driver.
REFUSED_DRIVERS = ("VRT",)


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


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """How scenes are opened and read.

    Attributes:
        bands: 1-based band indexes to read, in model channel order.
        drivers: GDAL drivers allowed to open a scene.
        assume_crs: CRS for scenes that have none (e.g. ``EPSG:32633``).
    """

    bands: tuple[int, ...] = (1, 2, 3)
    drivers: tuple[str, ...] = DEFAULT_DRIVERS
    assume_crs: str | None = None


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

    The S3 endpoint follows ``AWS_ENDPOINT_URL`` like the AWS CLI does.  The
    block cache (``GDAL_CACHEMAX``) is set per scene by ``read_tiles``.
    """
    options: dict[str, object] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no LIST per open on object stores
        "VSI_CACHE": True,
        "VSI_CACHE_SIZE": 64 * 1024 * 1024,
        "GDAL_HTTP_MAX_RETRY": 4,  # GDAL does not retry HTTP reads by default
        "GDAL_HTTP_RETRY_DELAY": 1,
        # object-store reads only of the files a source lists (no sidecar probes)
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ",".join(_both_cases(scene_extensions(config.drivers))),
        "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",  # should a VRT ever open: no raw reads of other files
    }
    endpoint = s3_endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint)
        options["AWS_S3_ENDPOINT"] = parsed.netloc or parsed.path
        options["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        options["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]
    return options


def _both_cases(extensions: Sequence[str]) -> list[str]:
    return [case for ext in extensions for case in (ext, ext.upper())]


@contextmanager
def gdal_env(config: ReadConfig) -> Iterator[None]:
    """``rasterio.Env`` with ``gdal_options(config)``."""
    with rasterio.Env(**gdal_options(config)):
        yield


def _is_gone(uri: str, errors: list[RasterioIOError]) -> bool:
    """Whether ``uri`` failed to open because nothing is there (any more)."""
    if "://" not in uri and not uri.startswith("/vsi"):
        return not os.path.exists(uri)
    return any(word in str(exc) for exc in errors for word in _GONE_MESSAGES)


def _open(uri: str, config: ReadConfig) -> rasterio.io.DatasetReader:
    """Open ``uri`` with the first allowed driver that accepts it."""
    errors: list[RasterioIOError] = []
    for driver in config.drivers:  # rasterio.open takes one driver name at a time
        try:
            return rasterio.open(uri, driver=driver)
        except RasterioIOError as exc:
            errors.append(exc)
    if _is_gone(uri, errors):
        # listed, then deleted (or moved) before this open: not a format problem
        raise InvalidSceneError(f"{uri}: no longer exists (deleted since the run listed it)")
    empty = not uri.startswith("s3://") and os.path.isfile(uri) and os.path.getsize(uri) == 0
    raise InvalidSceneError(
        f"{uri}: cannot open as {'/'.join(config.drivers)}"
        f"{' (the file is empty, 0 bytes)' if empty else ''}: {errors[0] if errors else 'no driver'}. "
        "Is it a complete GeoTIFF? Other formats need --drivers"
    ) from (errors[0] if errors else None)


def _has_mask(src: rasterio.io.DatasetReader) -> bool:
    """Whether the dataset has a per-dataset (internal/.msk) or alpha mask."""
    flags = rasterio.enums.MaskFlags
    return any(flags.per_dataset in f or flags.alpha in f for f in src.mask_flag_enums)


def scene_info(src: rasterio.io.DatasetReader, uri: str, config: ReadConfig) -> SceneInfo:
    """Validate an open dataset and describe it.

    Raises:
        InvalidSceneError: no CRS (and no ``assume_crs``), too few bands,
            non-invertible transform.
    """
    if src.crs is None:
        if config.assume_crs is None:
            raise InvalidSceneError(
                f"{uri}: scene has no CRS, so detections cannot be georeferenced; "
                "pass --assume-crs EPSG:XXXX to process it anyway"
            )
        crs = CRS.from_user_input(config.assume_crs)
    else:
        crs = CRS.from_user_input(src.crs.to_wkt())
    if max(config.bands) > src.count:
        raise InvalidSceneError(
            f"{uri}: scene has {src.count} band(s) but bands {config.bands} were asked for; "
            f"pass --bands with indexes 1..{src.count} (e.g. --bands {','.join(['1'] * len(config.bands))})"
        )
    if src.transform.is_identity:  # GDAL's default when a file has no geotransform
        raise InvalidSceneError(
            f"{uri}: scene has no geotransform (its pixels have no ground position), so detections "
            "cannot be georeferenced; georeference it first (e.g. gdal_translate -a_ullr or gdalwarp with GCPs)"
        )
    if src.transform.is_degenerate:
        raise InvalidSceneError(f"{uri}: affine transform {tuple(src.transform)[:6]} is not invertible")
    return SceneInfo(
        uri=uri,
        width_px=src.width,
        height_px=src.height,
        count=src.count,
        dtype=str(src.dtypes[0]),
        crs_wkt=crs.to_wkt(),
        transform=src.transform,
        nodata=src.nodata,
        has_mask=_has_mask(src),
    )


def open_scene(uri: str, config: ReadConfig) -> SceneInfo:
    """Open a scene's header and check that it can be processed.

    Args:
        uri: local path or ``s3://bucket/key``.
        config: bands, drivers, ``assume_crs``.

    Returns:
        ``SceneInfo`` (no pixels are read).

    Raises:
        InvalidSceneError: with the file and the problem in the message.
    """
    with gdal_env(config), _open(uri, config) as src:
        return scene_info(src, uri, config)


@dataclass(frozen=True, slots=True)
class TileRead:
    """Pixels of one tile.

    Attributes:
        tile: the tile.
        image: ``[C, H, W]`` in the scene's own dtype and raw units (uint8
            stays uint8: a quarter of the bytes of float32 to move to the
            model, which converts to float32 itself), zero-padded past the
            scene's edge, nodata pixels set to 0; None when the tile is
            entirely nodata (skipped, not inferred).
    """

    tile: TileSpec
    image: np.ndarray | None


def _nodata_mask(src: rasterio.io.DatasetReader, data: np.ndarray, window: Window) -> np.ndarray | None:
    """Pixels with no value, ``[H, W]`` bool, or None when a scene cannot have any.

    A pixel has no value when all its bands equal ``nodata``, when it is NaN
    in every band (float scenes, with or without a declared nodata), or when a
    per-dataset/alpha mask masks it.
    """
    masks = []
    if np.issubdtype(data.dtype, np.floating):
        masks.append(np.isnan(data).all(axis=0))
    if src.nodata is not None and not np.isnan(src.nodata):
        masks.append(np.all(data == src.nodata, axis=0))
    elif src.nodata is None and _has_mask(src):
        masks.append(src.dataset_mask(window=window) == 0)
    return np.logical_or.reduce(masks) if masks else None


def read_tile(src: rasterio.io.DatasetReader, tile: TileSpec, config: ReadConfig) -> TileRead:
    """Read one tile from an open dataset with a clamped window, pad in numpy (scene dtype kept)."""
    window = tile.window()
    try:
        data = src.read(list(config.bands), window=window)
        nodata_mask = _nodata_mask(src, data, window)
    except (RasterioError, OSError) as exc:
        raise TileReadError(
            f"{tile.scene_uri}: cannot read tile {tile.index} (window col {tile.col_off_px}, "
            f"row {tile.row_off_px}, {tile.valid_width_px}x{tile.valid_height_px} px): {exc}. "
            "The file may be truncated or corrupt"
        ) from exc
    if nodata_mask is not None and nodata_mask.all():
        return TileRead(tile, None)
    if nodata_mask is not None:
        data[:, nodata_mask] = 0
    if np.issubdtype(data.dtype, np.floating):
        np.nan_to_num(data, copy=False, nan=0.0)  # a NaN in some bands only: no value, as nodata
    if data.shape[1:] == (tile.height_px, tile.width_px):
        return TileRead(tile, data)
    image = np.zeros((len(config.bands), tile.height_px, tile.width_px), dtype=data.dtype)
    image[:, : tile.valid_height_px, : tile.valid_width_px] = data
    return TileRead(tile, image)


def read_tiles(uri: str, tiles: Sequence[TileSpec], config: ReadConfig) -> Iterator[TileRead]:
    """Read tiles of one scene in order, sharing one open dataset.

    GDAL's block cache is sized to hold this scene's rows of tiles
    (``block_cache_mb``; the tile height is the tallest of ``tiles``).

    Raises:
        InvalidSceneError: if the scene cannot be opened (or no longer exists).
        TileReadError: if a tile's pixels cannot be read.
    """
    if not tiles:
        return
    tile_height_px = max(tile.height_px for tile in tiles)
    with gdal_env(config), _open(uri, config) as src:
        cache_mb = block_cache_mb(src.width, tile_height_px, len(config.bands), src.dtypes[0])
        # rasterio passes an int GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
        with rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20):
            for tile in tiles:
                yield read_tile(src, tile, config)


def read_footprint(uri: str, out_crs: CRS, config: ReadConfig | None = None) -> shapely.Polygon:
    """The polygon a scene covers, in ``out_crs``, from its header (no pixels read).

    Args:
        uri: local path or ``s3://bucket/key``.
        out_crs: CRS of the polygon.
        config: drivers and ``assume_crs`` (default ``ReadConfig()``).

    Raises:
        InvalidSceneError: the scene cannot be opened or has no CRS.
    """
    config = config or ReadConfig()
    with gdal_env(config), _open(uri, config) as src:
        if src.crs is None and config.assume_crs is None:
            raise InvalidSceneError(f"{uri}: scene has no CRS, so its footprint is unknown")
        crs = CRS.from_user_input(config.assume_crs if src.crs is None else src.crs.to_wkt())
        return scene_footprint(src.width, src.height, src.transform, crs, out_crs)
