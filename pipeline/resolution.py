"""Scene header -> ground sample distance, and the plan to read a scene at the model's GSD.

* ``pixel_size_m`` gives the ground size of one pixel along its two axes,
  in metres, from the transform and the CRS: a projected CRS's linear unit
  (metre, foot, US survey foot, ...) converted to metres; a geographic CRS
  measured on its ellipsoid (geodesic distance of one pixel step) at the
  scene's centre.  The two sides are the lengths of the transform's column
  vector ``(a, d)`` and row vector ``(b, e)``, so a rotated or sheared grid
  gets the length of each pixel side, not of its north-south extent.  A
  scene's single GSD (``scene_gsd_m``) is the geometric mean of the two
  sides: the side of a square pixel of the same area (for a non-rotated grid).
* ``plan_read`` turns a scene's header and the model's GSD into a
  ``ReadScale``: the scene's size in model pixels (each axis scaled on its
  own, so non-square pixels become square model pixels) and the exact
  native pixels per model pixel along each axis.  A scene whose pixel size
  cannot be known (no linear unit, a degenerate or missing transform: GCPs or
  RPCs only), or whose GSD is more than ``max_gsd_factor`` from the model's,
  is refused with one line naming the file.
* ``ResampledTile`` is a ``TileSpec`` in model pixels that knows its native
  window: ``pipeline.reading`` reads it with ``out_shape`` (GDAL uses
  overviews when downsampling).  ``detections_to_native`` maps a tile's
  boxes (and its window and core) back to native scene pixels exactly, so the
  merge, the pixel columns and the georeferencing stay in the scene's own
  pixels: native px = model px x scale, per axis.

Example: a 4000 x 2000 px scene at 0.075 m read for a 0.3 m model is
1000 x 500 model pixels, 4 native px per model px along each axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from pipeline.errors import InvalidSceneError
from pipeline.types import SceneInfo, TileDetections, TileSpec

DEFAULT_MAX_GSD_FACTOR = 8.0
# axis units that are not lengths (pyproj gives their factor to radians, or none)
_NOT_LENGTHS = ("degree", "grad", "radian", "arc", "unknown")


@dataclass(frozen=True, slots=True)
class ResolutionConfig:
    """At which GSD a run reads its scenes.

    Attributes:
        model_gsd_m: metres per model pixel to read at (the checkpoint's
            ``gsd_m`` or ``--gsd-m``); None reads every scene at its own
            resolution (``--native-resolution``, or a model without one).
        max_gsd_factor: refuse a scene whose GSD is more than this many
            times finer or coarser than ``model_gsd_m`` (``--max-gsd-factor``).
        source: where ``model_gsd_m`` came from (``checkpoint``, ``--gsd-m``,
            ``native``), for the run's record.
        note: the line to say once about it (a model without ``gsd_m``), or None.
    """

    model_gsd_m: float | None = None
    max_gsd_factor: float = DEFAULT_MAX_GSD_FACTOR
    source: str = "native"
    note: str | None = None

    def __post_init__(self) -> None:
        if self.model_gsd_m is not None and not (math.isfinite(self.model_gsd_m) and self.model_gsd_m > 0):
            raise ValueError(f"model_gsd_m must be a positive number of metres, got {self.model_gsd_m}")
        if not self.max_gsd_factor >= 1:
            raise ValueError(f"max_gsd_factor must be >= 1, got {self.max_gsd_factor}")


def _metres_per_unit(crs: CRS) -> float | None:
    """Metres per unit of a projected/engineering CRS's first axis, None when it is not a length."""
    axes = crs.axis_info
    if not axes or axes[0].unit_conversion_factor is None:
        return None
    name = axes[0].unit_name.lower()
    if any(word in name for word in _NOT_LENGTHS):
        return None
    factor = float(axes[0].unit_conversion_factor)  # to metres for a linear unit
    return factor if math.isfinite(factor) and factor > 0 else None


def _geodesic_sides_m(
    transform: Affine, crs: CRS, width_px: int, height_px: int
) -> tuple[float, float] | None:
    """Ground length of one pixel step along columns and rows at the scene's centre, geographic CRS."""
    geod = crs.get_geod()
    if geod is None:
        return None
    cx, cy = width_px / 2, height_px / 2
    lon0, lat0 = transform @ (cx, cy)
    lon_c, lat_c = transform @ (cx + 1, cy)
    lon_r, lat_r = transform @ (cx, cy + 1)
    if not all(abs(lat) <= 90 for lat in (lat0, lat_c, lat_r)):
        return None
    _, _, side_x = geod.inv(lon0, lat0, lon_c, lat_c)
    _, _, side_y = geod.inv(lon0, lat0, lon_r, lat_r)
    return float(side_x), float(side_y)


def pixel_size_m(
    transform: Affine, crs_wkt: str, width_px: int, height_px: int
) -> tuple[float, float] | None:
    """Ground size of one pixel, metres, along its columns (x) and rows (y).

    Args:
        transform: the scene's affine (pixel corners).
        crs_wkt: the scene's CRS.
        width_px: scene width (a geographic CRS is measured at the centre).
        height_px: scene height.

    Returns:
        ``(side_x_m, side_y_m)``, or None when it cannot be known: an
        identity (GCP/RPC only) or degenerate transform, a CRS without a
        linear or angular unit.

    Example:
        >>> pixel_size_m(Affine(0.5, 0, 500000, 0, -0.5, 0), "EPSG:32633", 100, 100)
        (0.5, 0.5)
        >>> pixel_size_m(Affine(1, 0, 0, 0, -1, 0), "EPSG:2263", 10, 10)  # US survey feet
        (0.30480060960121924, 0.30480060960121924)
    """
    if transform.is_identity or transform.is_degenerate:
        return None
    crs = CRS.from_user_input(crs_wkt)
    if crs.is_compound:
        crs = crs.sub_crs_list[0]
    if crs.is_geographic:
        sides = _geodesic_sides_m(transform, crs, width_px, height_px)
    else:
        per_unit = _metres_per_unit(crs)
        if per_unit is None:
            return None
        sides = (
            math.hypot(transform.a, transform.d) * per_unit,
            math.hypot(transform.b, transform.e) * per_unit,
        )
    if sides is None or not all(math.isfinite(s) and s > 0 for s in sides):
        return None
    return sides


def scene_gsd_m(info: SceneInfo) -> float | None:
    """The scene's GSD, metres: the geometric mean of its pixel's two sides; None when unknowable."""
    sides = pixel_size_m(info.transform, info.crs_wkt, info.width_px, info.height_px)
    return None if sides is None else math.sqrt(sides[0] * sides[1])


@dataclass(frozen=True, slots=True)
class ReadScale:
    """How one scene is read at the model's GSD.

    Attributes:
        native_gsd_m: the scene's GSD (geometric mean of its pixel sides).
        model_gsd_m: the model's GSD (metres per model pixel).
        scale_x: native px per model px along columns (> 1: downsampled).
        scale_y: native px per model px along rows.
        model_width_px: the scene's width in model pixels.
        model_height_px: its height in model pixels.
    """

    native_gsd_m: float
    model_gsd_m: float
    scale_x: float
    scale_y: float
    model_width_px: int
    model_height_px: int

    @property
    def read_factor(self) -> float:
        """Native px per model px, geometric mean of the two axes (4.0: a quarter of the width read)."""
        return math.sqrt(self.scale_x * self.scale_y)

    @property
    def is_native(self) -> bool:
        """Whether the scene is read pixel for pixel (its model size is its own)."""
        return self.scale_x == 1.0 and self.scale_y == 1.0


def plan_read(info: SceneInfo, config: ResolutionConfig) -> ReadScale | None:
    """The scene's size in model pixels, or None when ``config`` reads at native resolution.

    Each axis is scaled on its own (non-square pixels become square model
    pixels); the model size is rounded to whole pixels, and the scales are
    then exact: ``scale_x = width_px / model_width_px``, so the model pixels
    cover the scene edge to edge.

    Raises:
        InvalidSceneError: the pixel size cannot be known, or the scene's GSD
            is more than ``max_gsd_factor`` from the model's; one line naming
            the file, both GSDs and the option.

    Example:
        >>> info = SceneInfo("a.tif", 4000, 2000, 3, "uint8", CRS.from_epsg(32633).to_wkt(),
        ...                  Affine(0.075, 0, 500000, 0, -0.075, 0))
        >>> plan_read(info, ResolutionConfig(model_gsd_m=0.3))  # doctest: +ELLIPSIS
        ReadScale(native_gsd_m=0.075, model_gsd_m=0.3, scale_x=4.0, scale_y=4.0, model_width_px=1000, ...)
    """
    model = config.model_gsd_m
    if model is None:
        return None
    sides = pixel_size_m(info.transform, info.crs_wkt, info.width_px, info.height_px)
    if sides is None:
        raise InvalidSceneError(
            f"{info.uri}: its pixel size in metres cannot be known from its header (no geotransform, a "
            f"degenerate one, or a CRS without a linear unit), so it cannot be read at the model's {model:g} m; "
            "georeference it (gdalwarp) or pass --native-resolution"
        )
    gsd = math.sqrt(sides[0] * sides[1])
    factor = max(model / gsd, gsd / model)
    if factor > config.max_gsd_factor:
        raise InvalidSceneError(
            f"{info.uri}: scene GSD {gsd:.4g} m is {factor:.1f}x the model's {model:.4g} m, beyond "
            f"--max-gsd-factor {config.max_gsd_factor:g}; pass --max-gsd-factor {math.ceil(factor * 10) / 10:g} "
            "to read it anyway, or --native-resolution"
        )
    model_w = max(1, round(info.width_px * sides[0] / model))
    model_h = max(1, round(info.height_px * sides[1] / model))
    return ReadScale(gsd, model, info.width_px / model_w, info.height_px / model_h, model_w, model_h)


@dataclass(frozen=True, slots=True)
class ResampledTile(TileSpec):
    """A tile planned in model pixels, read from its native window at ``out_shape_hw``.

    Every ``*_px`` field inherited from ``TileSpec`` is in model pixels;
    ``scale_x`` / ``scale_y`` are native px per model px.

    Attributes:
        scale_x: native px per model px along columns.
        scale_y: native px per model px along rows.
        native_width_px: the scene's native width (the window is clamped to it).
        native_height_px: the scene's native height.
    """

    scale_x: float = 1.0
    scale_y: float = 1.0
    native_width_px: int = 0
    native_height_px: int = 0

    def window(self) -> Window:
        """The native window under the tile's valid model pixels (float offsets: GDAL reads them exactly)."""
        x0, y0 = self.col_off_px * self.scale_x, self.row_off_px * self.scale_y
        x1 = min(float(self.native_width_px), (self.col_off_px + self.valid_width_px) * self.scale_x)
        y1 = min(float(self.native_height_px), (self.row_off_px + self.valid_height_px) * self.scale_y)
        return Window(x0, y0, x1 - x0, y1 - y0)

    @property
    def out_shape_hw(self) -> tuple[int, int]:
        """The read's shape, model px: ``(valid_height_px, valid_width_px)``."""
        return self.valid_height_px, self.valid_width_px

    @property
    def resampling(self) -> Resampling:
        """``average`` when downsampling (a model pixel covers several native ones), ``bilinear`` up."""
        return Resampling.average if self.scale_x * self.scale_y >= 1.0 else Resampling.bilinear


def detections_to_native(td: TileDetections) -> TileDetections:
    """A ``ResampledTile``'s detections in native scene pixels (boxes, window and core scaled per axis).

    The returned tile's offsets and sizes are real numbers of native pixels
    (the merge takes any); a plain ``TileSpec``'s detections are returned
    as they are.  Exact: native px = model px x scale.

    Example:
        >>> tile = ResampledTile("a.tif", 0, 10, 20, 64, 64, 64, 64, (10.0, 20.0, 74.0, 84.0), 4.0, 2.0, 400, 200)
        >>> out = detections_to_native(TileDetections(tile, [[1, 2, 3, 4]], [0.9], [0]))
        >>> out.boxes_xyxy_px.tolist(), out.tile.col_off_px, out.tile.core_xyxy_px
        ([[4.0, 4.0, 12.0, 8.0]], 40.0, (40.0, 40.0, 296.0, 168.0))
    """
    tile = td.tile
    if not isinstance(tile, ResampledTile):
        return td
    sx, sy = tile.scale_x, tile.scale_y
    c0, r0, c1, r1 = tile.core_xyxy_px
    native = TileSpec(
        scene_uri=tile.scene_uri,
        index=tile.index,
        col_off_px=tile.col_off_px * sx,  # type: ignore[arg-type]  # real native px: the merge takes floats
        row_off_px=tile.row_off_px * sy,  # type: ignore[arg-type]
        width_px=tile.width_px * sx,  # type: ignore[arg-type]
        height_px=tile.height_px * sy,  # type: ignore[arg-type]
        valid_width_px=tile.valid_width_px * sx,  # type: ignore[arg-type]
        valid_height_px=tile.valid_height_px * sy,  # type: ignore[arg-type]
        core_xyxy_px=(c0 * sx, r0 * sy, c1 * sx, r1 * sy),
    )
    scale = np.array([sx, sy, sx, sy], np.float64)
    boxes = (td.boxes_xyxy_px.astype(np.float64) * scale).astype(np.float32)
    return replace(td, tile=native, boxes_xyxy_px=boxes)


def resolution_fields(
    info: SceneInfo, read: ReadScale | None, inferred: list[TileDetections]
) -> dict[str, Any]:
    """A scene's line in the run record: its native GSD, the model's, the read factor, pixels inferred.

    ``num_px_inferred`` counts the model pixels of the tiles that went
    through the model (overlaps counted in each tile; all-nodata tiles not).
    """
    native = read.native_gsd_m if read is not None else scene_gsd_m(info)
    return {
        "native_gsd_m": None if native is None else round(native, 6),
        "model_gsd_m": None if read is None else read.model_gsd_m,
        "read_factor": 1.0 if read is None else round(read.read_factor, 6),
        "num_px_inferred": sum(td.tile.width_px * td.tile.height_px for td in inferred),
    }


def resolve_resolution(
    checkpoint_gsd_m: float | None, gsd_m: float | None, native: bool, max_gsd_factor: float
) -> ResolutionConfig:
    """The run's read GSD from the checkpoint and the options, with the one line to say about it (``note``).

    Args:
        checkpoint_gsd_m: the model's ``gsd_m`` (``ModelInfo.gsd_m``), None when unknown.
        gsd_m: ``--gsd-m``, overrides the checkpoint's.
        native: ``--native-resolution``: read every scene pixel for pixel.
        max_gsd_factor: ``--max-gsd-factor``.

    Raises:
        ValueError: ``--gsd-m`` with ``--native-resolution``.

    Example:
        >>> resolve_resolution(None, None, False, 8.0).note
        'the model records no gsd_m (training GSD): scenes are read at their native resolution; pass --gsd-m to read them at the GSD it was trained at'
    """
    if native and gsd_m is not None:
        raise ValueError("--gsd-m and --native-resolution contradict each other; pass one")
    if native:
        return ResolutionConfig(None, max_gsd_factor, "native")
    if gsd_m is not None:
        return ResolutionConfig(gsd_m, max_gsd_factor, "--gsd-m")
    if checkpoint_gsd_m is not None:
        return ResolutionConfig(checkpoint_gsd_m, max_gsd_factor, "checkpoint")
    note = (
        "the model records no gsd_m (training GSD): scenes are read at their native resolution; "
        "pass --gsd-m to read them at the GSD it was trained at"
    )
    return ResolutionConfig(None, max_gsd_factor, "native", note)
