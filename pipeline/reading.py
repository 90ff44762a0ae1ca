"""Every pixel aerialdet reads: the only ``rasterio.open`` of the project.

Detect, training, label readers and quicklook all open rasters here, with
one driver allow-list, one set of GDAL options (``pipeline.gdal_config``:
the S3 endpoint from ``AWS_ENDPOINT_URL``, retries) and one no-value rule.

* ``open_scene`` reads a scene's header into ``SceneInfo`` and refuses what
  detect cannot process (no CRS without ``--assume-crs``, too few bands),
  naming the file and the problem (``pipeline.pixel_kinds`` decides how its
  pixels become the model's kind); ``read_header`` reads a header without
  those checks (label images need no CRS).
* ``read_tiles`` reads a list of tiles of one scene with *clamped* windows
  (never boundless reads, which bypass GDAL's block cache) and pads edge
  tiles with zeros in numpy.  Pixels keep the scene's dtype (``TileRead``).
  A scene is never read whole.  GDAL's block cache is sized there, for that
  scene (``block_cache_mb``).
* ``read_window`` reads one window (training tiles, label images) and
  ``read_overview`` a whole raster at a reduced size (quicklook), both as
  ``WindowRead``: pixels plus the mask of the pixels that have a value.
  (``pipeline.pixel_stats.band_statistics`` turns such reads into per-band
  mean/std over the pixels that have a value.)
* ``read_footprint`` gives the polygon a scene covers, from its header.
* ``read_xyz_tile`` reads one Web Mercator XYZ tile of a scene through
  rio-tiler (``aerialdet review``), from the dataset opened here.

The no-value rule (``_valid_pixels``), the same for every reader: a pixel has
no value when all its bands equal ``nodata``, when it is NaN in every band,
or when a per-dataset/alpha mask masks it; such pixels read as 0, and a NaN
in some bands only reads as 0 in those bands.

A scene whose file is gone when it is opened (deleted after the run listed
it) is reported as such, not as a file GDAL cannot parse.

Only the GeoTIFF/COG drivers open rasters unless the caller names others
(``ReadConfig.drivers``): a VRT or PNG renamed ``.tif`` would otherwise open
with its own driver, and a VRT can point at any local file or URL.  A VRT is
never opened, whatever the list says.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from pipeline.errors import InvalidSceneError, TileReadError
from pipeline.gdal_config import REFUSED_DRIVERS, block_cache_mb, gdal_env
from pipeline.gdal_config import ReadConfig as ReadConfig  # defined with the drivers; read here
from pipeline.gdal_config import scene_extensions as scene_extensions  # re-exported: pipeline.ray_stages
from pipeline.georef import scene_footprint
from pipeline.pixel_kinds import PixelPlan, apply_plan, nominal_range, plan_pixels
from pipeline.resampled_read import read_resampled
from pipeline.resolution import ResampledTile
from pipeline.scene_messages import (
    file_hint,
    gdal_cause,
    is_gone,
    is_local_vrt,
    missing_georeferencing,
    open_hint,
)
from pipeline.types import PixelRange, SceneInfo, TileSpec

# what detect adds when a scene does not open
_SCENE_HINT = "Is it a complete GeoTIFF? Other formats need --drivers"


def _open(uri: str, config: ReadConfig, hint: str) -> rasterio.io.DatasetReader:
    """Open ``uri`` with the first allowed driver that accepts it (never a refused one)."""
    errors: list[RasterioIOError] = []
    for driver in config.drivers:  # rasterio.open takes one driver name at a time
        if driver.upper() in REFUSED_DRIVERS:
            continue
        try:
            with warnings.catch_warnings():  # callers check georeferencing (plain images have none)
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(uri, driver=driver)
        except RasterioIOError as exc:
            errors.append(exc)
    if is_gone(uri, errors):
        # listed, then deleted (or moved) before this open: not a format problem
        raise InvalidSceneError(f"{uri}: no longer exists (deleted since the run listed it)")
    if is_local_vrt(uri):
        raise InvalidSceneError(
            f"{uri}: is a GDAL VRT (XML pointing at other files or URLs), which is never read: it could "
            "read any file or address this process can reach; gdal_translate it to a GeoTIFF"
        )
    empty = "://" not in uri and os.path.isfile(uri) and os.path.getsize(uri) == 0
    raise InvalidSceneError(
        f"{uri}: cannot open as {'/'.join(config.drivers)}"
        f"{' (the file is empty, 0 bytes)' if empty else ''}: {errors[0] if errors else 'no driver'}. "
        f"{open_hint(uri, hint, str(errors[0]) if errors else '')}"
    ) from (errors[0] if errors else None)


@contextmanager
def _opened(uri: str, config: ReadConfig, hint: str = _SCENE_HINT) -> Iterator[rasterio.io.DatasetReader]:
    """The dataset at ``uri`` opened with the allowed drivers, under ``gdal_env(config)``."""
    with gdal_env(config), _open(uri, config, hint) as src:
        yield src


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
            raise missing_georeferencing(src, uri)
        crs = CRS.from_user_input(config.assume_crs)
    else:
        crs = CRS.from_user_input(src.crs.to_wkt())
    pixels = plan_pixels(src, uri, config, _read)  # complex, palette, dtype/range vs the model
    if pixels.palette is None and max(config.bands) > src.count:
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
        note=pixels.note,
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
    with _opened(uri, config) as src:
        return scene_info(src, uri, config)


@dataclass(frozen=True, slots=True)
class RasterHeader:
    """A raster's header as the reader opens it, not checked for detect (plain images have no CRS).

    Attributes:
        uri: the raster's path or URI.
        width_px: width.
        height_px: height.
        count: number of bands.
        dtype: numpy dtype name of the bands.
        transform: ``Affine`` of pixel corners (the identity when the file has none).
        crs_wkt: the CRS as WKT (``assume_crs`` applied), None when it has none.
        nodata: the nodata value, or None.
        has_mask: whether it has a per-dataset/alpha mask.
        pixel_kind: dtype and value range (``NBITS`` applied), what training records.
    """

    uri: str
    width_px: int
    height_px: int
    count: int
    dtype: str
    transform: Affine
    crs_wkt: str | None
    nodata: float | None
    has_mask: bool
    pixel_kind: PixelRange | None = None


def read_header(uri: str, config: ReadConfig) -> RasterHeader:
    """Size, bands, dtype and georeferencing of a raster, opened as every pixel read opens it.

    Args:
        uri: local path or ``s3://bucket/key``.
        config: the drivers allowed (``assume_crs`` for a raster without CRS).

    Raises:
        InvalidSceneError: it does not open with ``config.drivers`` (or is a VRT).
    """
    with _opened(uri, config, file_hint(config.drivers)) as src:
        crs = src.crs.to_wkt() if src.crs is not None else config.assume_crs
        return RasterHeader(
            uri=uri,
            width_px=src.width,
            height_px=src.height,
            count=src.count,
            dtype=str(src.dtypes[0]),
            transform=src.transform,
            crs_wkt=CRS.from_user_input(crs).to_wkt() if crs else None,
            nodata=src.nodata,
            has_mask=_has_mask(src),
            pixel_kind=nominal_range(src),
        )


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


def _valid_pixels(
    src: rasterio.io.DatasetReader,
    data: np.ndarray,
    window: Window | None,
    out_shape_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """The no-value rule of every read: pixels that have a value, ``[H, W]`` bool; the others set to 0.

    A pixel has no value when all its bands equal ``nodata``, when it is NaN
    in every band (float rasters, with or without a declared nodata), or when
    a per-dataset/alpha mask masks it.  ``data`` ``[C, H, W]`` (as read from
    ``window`` of ``src``, at ``out_shape_hw`` when decimated) is changed in
    place: no-value pixels become 0 in every band, and a NaN in some bands
    only becomes 0 in those bands.
    """
    masks = []
    if np.issubdtype(data.dtype, np.floating):
        masks.append(np.isnan(data).all(axis=0))
    if src.nodata is not None and not np.isnan(src.nodata):
        masks.append(np.all(data == src.nodata, axis=0))
    elif src.nodata is None and _has_mask(src):
        masks.append(src.dataset_mask(window=window, out_shape=out_shape_hw) == 0)
    valid = ~np.logical_or.reduce(masks) if masks else np.ones(data.shape[1:], bool)
    data[:, ~valid] = 0
    if np.issubdtype(data.dtype, np.floating):
        np.nan_to_num(data, copy=False, nan=0.0)  # a NaN in some bands only: no value, as nodata
    return valid


def read_tile(
    src: rasterio.io.DatasetReader, tile: TileSpec, config: ReadConfig, plan: PixelPlan | None = None
) -> TileRead:
    """Read one tile from an open dataset with a clamped window, pad in numpy (scene dtype kept, or ``plan``'s).

    A ``ResampledTile`` (model pixels) is read from its native window at its
    ``out_shape_hw`` (``pipeline.resampled_read``).
    """
    window = tile.window()
    plan = plan or PixelPlan(tuple(config.bands))
    try:
        if isinstance(tile, ResampledTile):
            data, valid = read_resampled(src, tile, plan.read_bands, _valid_pixels)
        else:
            data = src.read(list(plan.read_bands), window=window)
            valid = _valid_pixels(src, data, window)
        data = apply_plan(plan, data, valid)
    except (RasterioError, OSError) as exc:
        raise TileReadError(
            f"{tile.scene_uri}: cannot read tile {tile.index} (window col {tile.col_off_px}, "
            f"row {tile.row_off_px}, {tile.valid_width_px}x{tile.valid_height_px} px): {gdal_cause(exc)}. "
            "The file may be truncated or corrupt"
        ) from exc
    if not valid.any():
        return TileRead(tile, None)
    if data.shape[1:] == (tile.height_px, tile.width_px):
        return TileRead(tile, data)
    image = np.zeros((data.shape[0], tile.height_px, tile.width_px), dtype=data.dtype)
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
    with _opened(uri, config) as src:
        plan = plan_pixels(src, uri, config, _read)  # the same plan as the header's
        cache_mb = block_cache_mb(src.width, tile_height_px, len(config.bands), src.dtypes[0])
        # rasterio passes an int GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
        with rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20):
            for tile in tiles:
                yield read_tile(src, tile, config, plan)


@dataclass(frozen=True, slots=True)
class WindowRead:
    """Pixels of one window (or of a decimated whole raster), read by the no-value rule of detect.

    Attributes:
        pixels: ``[C, H, W]`` in the raster's dtype and raw units; pixels
            without a value are 0 (the values ``read_tiles`` gives detect).
        valid: bool ``[H, W]``: the pixels that have a value.
    """

    pixels: np.ndarray
    valid: np.ndarray


def _read(
    src: rasterio.io.DatasetReader,
    uri: str,
    bands: Sequence[int],
    window: Any,  # a Window, None, or a crop with ``window()``/``out_shape_hw``/``resampling`` (ResampledTile)
    out_shape_hw: tuple[int, int] | None = None,
) -> WindowRead:
    """``bands`` of ``window`` (at ``out_shape_hw``; a ``ResampledTile`` at its own shape), no-value rule applied."""
    if max(bands) > src.count:
        raise InvalidSceneError(f"{uri}: has {src.count} band(s), but bands {list(bands)} were asked for")
    native = window.window() if (resampled := hasattr(window, "out_shape_hw")) else window  # a model-px crop
    where = f"window {tuple(map(int, native.flatten()))} (col, row, width, height)" if native else "pixels"
    try:
        if resampled:
            return WindowRead(*read_resampled(src, window, bands, _valid_pixels))
        shape = None if out_shape_hw is None else (len(bands), *out_shape_hw)
        data = src.read(list(bands), window=window, out_shape=shape)
        valid = _valid_pixels(src, data, window, out_shape_hw)
    except (RasterioError, OSError) as exc:
        raise TileReadError(
            f"{uri}: cannot read {where}: {gdal_cause(exc)}. The file may be truncated or corrupt"
        ) from exc
    return WindowRead(data, valid)


def read_window(
    uri: str, window: Window | tuple[int, int, int, int] | None, config: ReadConfig
) -> WindowRead:
    """Read ``config.bands`` of one window of a raster, exactly as ``read_tiles`` reads it for detect.

    Args:
        uri: local path or ``s3://bucket/key``.
        window: (col_off, row_off, width, height) px inside the raster, or
            None for all of it; or a ``ResampledTile``-like crop (``window()``,
            ``out_shape_hw``, ``resampling``), read at its shape as detect reads at the model's GSD.
        config: bands (1-based, in model order) and the drivers allowed.

    Returns:
        ``WindowRead``: raw pixels ``[C, H, W]`` (no-value pixels 0) and the
        mask of those that have a value.

    Raises:
        InvalidSceneError: it does not open with ``config.drivers`` (or is a
            VRT), or has fewer bands.
        TileReadError: the pixels cannot be read.
    """
    win = window if window is None or not isinstance(window, tuple) else Window(*window)
    with _opened(uri, config, file_hint(config.drivers)) as src:
        return _read(src, uri, config.bands, win)


def read_overview(uri: str, out_shape_hw: tuple[int, int], config: ReadConfig) -> WindowRead:
    """A whole raster read at ``out_shape_hw`` (height, width) px: from its overviews, else decimated.

    The full-resolution raster is never read when GDAL has overviews of it.

    Raises:
        InvalidSceneError: it does not open with ``config.drivers`` (or is a
            VRT), or has fewer bands.
        TileReadError: the pixels cannot be read.
    """
    with _opened(uri, config, file_hint(config.drivers)) as src:
        return _read(src, uri, config.bands, None, out_shape_hw)


def read_footprint(uri: str, out_crs: CRS, config: ReadConfig | None = None) -> shapely.Polygon:
    """The polygon ``uri`` covers, in ``out_crs``, from its header (``config``: default ``ReadConfig()``).

    Raises:
        InvalidSceneError: the scene cannot be opened or has no CRS.
    """
    config = config or ReadConfig()
    with _opened(uri, config) as src:
        if src.crs is None and config.assume_crs is None:
            raise InvalidSceneError(f"{uri}: scene has no CRS, so its footprint is unknown")
        crs = CRS.from_user_input(config.assume_crs if src.crs is None else src.crs.to_wkt())
        return scene_footprint(src.width, src.height, src.transform, crs, out_crs)


def read_xyz_tile(uri: str, x: int, y: int, z: int, config: ReadConfig, size_px: int = 256) -> WindowRead:
    """One Web Mercator XYZ tile of a scene (``config.bands``), reprojected by rio-tiler from the file opened here.

    Returns:
        ``WindowRead``: ``[C, size_px, size_px]`` raw pixels, mask (all False outside the scene).

    Raises:
        InvalidSceneError: it does not open, or has fewer bands than ``config.bands``.
        TileReadError: the pixels cannot be read.
    """
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    with _opened(uri, config, file_hint(config.drivers)) as src:
        if max(config.bands) > src.count:
            raise InvalidSceneError(
                f"{uri}: has {src.count} band(s), but bands {list(config.bands)} were asked"
            )
        try:
            with Reader(uri, dataset=src) as reader:
                data = reader.tile(x, y, z, tilesize=size_px, indexes=config.bands).array
        except TileOutsideBounds:
            data = np.ma.masked_array(np.zeros((len(config.bands), size_px, size_px), src.dtypes[0]), True)
        except (RasterioError, OSError) as exc:
            raise TileReadError(f"{uri}: cannot read tile {z}/{x}/{y}: {exc}") from exc
    return WindowRead(np.ma.getdata(data).copy(), np.asarray(~np.ma.getmaskarray(data).all(axis=0)))
