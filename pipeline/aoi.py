"""An area of interest (``--aoi FILE|WKT``): which tiles are read, which detections kept, which scenes skipped.

The AOI is read once on the driver (``load_aoi``) into OGC:CRS84 (lon/lat) and
travels as WKB in a small frozen ``Aoi``.  Each scene meets it in the
scene's own CRS (the AOI densified, then reprojected: ``Aoi.in_crs``):

* ``tiles_in_aoi``: only tiles whose window (inside the scene) intersects
  the AOI are planned, read and inferred; the others are counted, and the
  report says how many tiles the AOI saved;
* a scene none of whose tiles meets the AOI is ``skipped`` with the reason;
  a STAC item whose own footprint (its ``geometry``, else its ``bbox``, in
  OGC:CRS84) misses the AOI is ``skipped`` as it is listed, before its
  header is opened (``lonlat_outside``: such a scene counts no tiles saved);
* ``aoi_in_scene_px``: the AOI in scene pixels, which ``pipeline.scene_plan``
  intersects with the part of the mosaic the scene owns, once per scene: the
  finish keeps a detection when its box centre lies inside that one region
  (``pipeline.mosaic.centres_inside``; a centre on the AOI's edge is outside,
  as on a mosaic seam), so a box straddling the edge belongs to one side only.

Accepted: any vector file geopandas reads (GeoPackage, GeoJSON, Shapefile,
GeoParquet, ...) in any CRS, its polygons and multipolygons unioned; or WKT,
in OGC:CRS84 unless prefixed ``SRID=<epsg>;`` (EWKT).  Refused, in one line:
a file with no CRS, an empty AOI, a geometry that is not valid or not
polygonal.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from pipeline.errors import PipelineError
from pipeline.georef import scene_px_to_crs
from pipeline.types import SceneInfo, TileSpec

AOI_CRS = "OGC:CRS84"
DENSIFY_DEG = 0.01  # AOI edges split to ~1 km before reprojection: straight lines stay close to straight
_EWKT = re.compile(r"^\s*SRID=(\d+);(.*)$", re.IGNORECASE | re.DOTALL)
_WKT_START = re.compile(r"^\s*(MULTI)?POLYGON\b|^\s*GEOMETRYCOLLECTION\b|^\s*SRID=", re.IGNORECASE)


class AoiError(PipelineError, ValueError):
    """The AOI cannot be used: empty, invalid, not polygonal, no CRS, unreadable."""


@dataclass(frozen=True, slots=True)
class Aoi:
    """An area of interest in OGC:CRS84.

    Attributes:
        wkb: the (multi)polygon, WKB, lon/lat.
        source: what the user passed (a file name, or ``WKT``), for messages.
    """

    wkb: bytes
    source: str

    @property
    def geometry(self) -> shapely.Geometry:
        """The AOI as a shapely geometry, lon/lat."""
        geometry: shapely.Geometry = shapely.from_wkb(self.wkb)
        return geometry

    def geojson(self) -> dict[str, Any]:
        """The AOI as a GeoJSON geometry (a STAC search's ``intersects``)."""
        import json

        return dict(json.loads(shapely.to_geojson(self.geometry)))

    def in_crs(self, crs_wkt: str) -> shapely.Geometry:
        """The AOI in the CRS ``crs_wkt`` (densified, then reprojected), cached per CRS, prepared."""
        geometry: shapely.Geometry = _in_crs(self.wkb, crs_wkt)
        return geometry


@functools.lru_cache(maxsize=32)
def _in_crs(wkb: bytes, crs_wkt: str) -> Any:
    geometry = shapely.segmentize(shapely.from_wkb(wkb), DENSIFY_DEG)
    transformer = Transformer.from_crs(CRS.from_user_input(AOI_CRS), CRS.from_wkt(crs_wkt), always_xy=True)
    out = shapely.transform(geometry, lambda xy: np.stack(transformer.transform(xy[:, 0], xy[:, 1]), axis=-1))
    if not np.isfinite(shapely.get_coordinates(out)).all():
        out = shapely.Polygon()  # outside the CRS's area of use: meets nothing
    shapely.prepare(out)
    return out


def _check(geometry: Any, source: str) -> Any:
    """The AOI geometry, polygonal and valid, or an ``AoiError`` naming ``source``."""
    if geometry is None or shapely.is_empty(geometry):
        raise AoiError(f"--aoi {source}: the area of interest is empty; pass a file or WKT with a polygon")
    if not shapely.is_valid(geometry):
        why = shapely.is_valid_reason(geometry)
        raise AoiError(
            f"--aoi {source}: the polygon is not valid ({why}); fix it (e.g. ST_MakeValid in QGIS)"
        )
    polygons = shapely.get_parts(geometry)
    if not all(p.geom_type in ("Polygon", "MultiPolygon") for p in polygons):
        kinds = sorted({p.geom_type for p in polygons})
        raise AoiError(
            f"--aoi {source}: needs polygons, got {', '.join(kinds)}; buffer points or lines first"
        )
    return shapely.union_all(polygons)


def _from_wkt(text: str) -> Aoi:
    match = _EWKT.match(text)
    crs, wkt = (
        (CRS.from_epsg(int(match.group(1))), match.group(2))
        if match
        else (CRS.from_user_input(AOI_CRS), text)
    )
    try:
        geometry = shapely.from_wkt(wkt)
    except shapely.errors.GEOSException as exc:
        raise AoiError(
            f"--aoi: not WKT nor a file ({exc}); pass a vector file or POLYGON((lon lat, ...))"
        ) from None
    geometry = _check(geometry, "WKT")
    if not crs.equals(CRS.from_user_input(AOI_CRS)):
        to_lonlat = Transformer.from_crs(crs, AOI_CRS, always_xy=True)
        geometry = shapely.transform(
            geometry, lambda xy: np.stack(to_lonlat.transform(xy[:, 0], xy[:, 1]), axis=-1)
        )
    return Aoi(shapely.to_wkb(geometry), "WKT")


def _from_file(path: str) -> Aoi:
    import geopandas as gpd

    try:
        frame = gpd.read_parquet(path) if path.lower().endswith(".parquet") else gpd.read_file(path)
    except Exception as exc:  # pyogrio / arrow errors on a file that is not a vector file
        detail = " ".join(str(exc).split())[:200]
        raise AoiError(f"--aoi {path}: cannot be read as a vector file ({detail})") from None
    if len(frame) == 0:
        raise AoiError(
            f"--aoi {path}: the area of interest is empty (no features); pass a file with a polygon"
        )
    if frame.crs is None:
        raise AoiError(
            f"--aoi {path}: the file has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:4326) and retry"
        )
    geometry = _check(shapely.union_all(frame.geometry.dropna().to_numpy()), path)
    lonlat = gpd.GeoSeries([geometry], crs=frame.crs).to_crs(AOI_CRS).iloc[0]
    return Aoi(shapely.to_wkb(lonlat), path)


def load_aoi(spec: str) -> Aoi:
    """``--aoi FILE|WKT`` -> an ``Aoi`` in OGC:CRS84.

    Raises:
        AoiError: the file cannot be read or has no CRS; the AOI is empty, invalid or not polygonal.

    Example:
        >>> load_aoi("POLYGON((15 45, 15.1 45, 15.1 45.1, 15 45.1, 15 45))").geometry.bounds
        (15.0, 45.0, 15.1, 45.1)
    """
    if _WKT_START.match(spec):
        return _from_wkt(spec)
    if not Path(spec).exists():
        raise AoiError(
            f"--aoi {spec}: no such file, and not WKT; pass a vector file or POLYGON((lon lat, ...))"
        )
    return _from_file(spec)


def tiles_in_aoi(plan: Any, scene: SceneInfo, aoi: Aoi) -> tuple[list[TileSpec], int]:
    """The tiles of ``plan`` whose window (inside the scene) meets the AOI, and how many do not.

    Tiles planned in model pixels (``ResampledTile``) are scaled to native pixels first.

    Returns:
        ``(tiles to read, number of tiles left out)``.
    """
    if len(plan) == 0:
        return [], 0
    area = aoi.in_crs(scene.crs_wkt)
    windows = np.array(
        [
            [t.col_off_px, t.row_off_px, t.col_off_px + t.valid_width_px, t.row_off_px + t.valid_height_px]
            for t in plan
        ],
        dtype=np.float64,
    )
    first = plan[0]  # a plan in model px (pipeline.resolution.ResampledTile): its windows in native px
    windows *= np.array([getattr(first, "scale_x", 1.0), getattr(first, "scale_y", 1.0)] * 2)
    corners = scene_px_to_crs(windows, scene.transform)  # (N, 4, 2)
    polygons = shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))
    meets = shapely.intersects(area, polygons)
    kept = [tile for tile, keep in zip(plan, meets) if keep]
    return kept, len(plan) - len(kept)


def outside_reason(scene: SceneInfo, aoi: Aoi) -> str:
    """Why a scene none of whose tiles meets the AOI is skipped."""
    return f"{scene.uri}: outside the area of interest (--aoi {aoi.source}); no tile of it was read"


def lonlat_outside(aoi: Aoi, footprint_lonlat: shapely.Geometry | None) -> bool:
    """Whether a footprint in OGC:CRS84 (a STAC item's) misses the AOI; None (unknown) is never outside.

    Example:
        >>> area = load_aoi("POLYGON((15 45, 15.1 45, 15.1 45.1, 15 45.1, 15 45))")
        >>> lonlat_outside(area, shapely.box(16, 45, 16.1, 45.1)), lonlat_outside(area, None)
        (True, False)
    """
    if footprint_lonlat is None or shapely.is_empty(footprint_lonlat):
        return False
    return not bool(shapely.intersects(aoi.geometry, footprint_lonlat))


def aoi_in_scene_px(scene: SceneInfo, aoi: Aoi) -> shapely.Geometry:
    """The AOI in ``scene``'s pixel frame (x = col, y = row, native px), clipped to the scene (1 px margin).

    The AOI in the scene's CRS (``Aoi.in_crs``) through the inverse of the
    scene's affine transform: a linear map, so a centre is inside the result
    exactly when it is inside the AOI.  Clipped, it stays small when it travels
    to the scene's finish (``FinishSettings.keep_region_px``).
    """
    inverse = ~scene.transform

    def to_px(coords: np.ndarray) -> np.ndarray:
        xs, ys = coords[:, 0], coords[:, 1]
        cols = inverse.a * xs + inverse.b * ys + inverse.c
        rows = inverse.d * xs + inverse.e * ys + inverse.f
        return np.stack([cols, rows], axis=1)

    area = shapely.transform(aoi.in_crs(scene.crs_wkt), to_px)
    frame = shapely.box(-1.0, -1.0, scene.width_px + 1.0, scene.height_px + 1.0)
    return shapely.intersection(area, frame)
