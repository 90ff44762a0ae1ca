"""Pixel frames -> CRS geometry, vectorised.

Frames: tile px --``tile_to_scene_px``--> scene px --``scene_px_to_crs``--> CRS.
Box edges are pixel *corners*: the box ``(0, 0, 1, 1)`` covers exactly pixel
(row 0, col 0).  Every box is mapped by its four corners, so rotated and
sheared affine transforms give the right (rotated) polygon, and a box
reprojected to another CRS is the polygon of its four reprojected corners.

The scene's affine is a rasterio/``affine`` ``Affine`` (``x, y = transform @
(col, row)``, its inverse ``~transform``); functions here also accept the six
numbers ``(a, b, c, d, e, f)`` of one (``as_affine``).  This module is the
one place that moves boxes between the tile and scene frames
(``tile_to_scene_px`` / ``scene_to_tile_px``) and clips them to a tile
(``clip_boxes_px``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import shapely
from pyproj import CRS, Transformer
from rasterio.transform import Affine

AffineLike: TypeAlias = "Affine | Sequence[float]"


def as_affine(transform: AffineLike) -> Affine:
    """An ``Affine`` from an ``Affine`` or its six (or nine) coefficients.

    Args:
        transform: ``Affine``, or ``(a, b, c, d, e, f)`` in rasterio's order
            (x = a*col + b*row + c, y = d*col + e*row + f), or the nine values
            of ``tuple(affine)`` (the last row must be ``0, 0, 1``).

    Raises:
        ValueError: not 6 or 9 numbers, or a last row other than ``0, 0, 1``.

    Example:
        >>> as_affine((10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)).c
        500000.0
    """
    if isinstance(transform, Affine):
        return transform
    values = tuple(float(v) for v in transform)  # six or nine coefficients
    if len(values) not in (6, 9) or (len(values) == 9 and values[6:] != (0.0, 0.0, 1.0)):
        raise ValueError(f"an affine transform is 6 numbers (a, b, c, d, e, f), got {transform!r}")
    return Affine(*values[:6])


def tile_to_scene_px(boxes_xyxy_px: np.ndarray, col_off_px: float, row_off_px: float) -> np.ndarray:
    """Shift tile-pixel boxes into scene pixels.

    Args:
        boxes_xyxy_px: ``[N, 4]`` tile px.
        col_off_px: the tile's left edge in scene px (``TileSpec.col_off_px``).
        row_off_px: the tile's top edge in scene px (``TileSpec.row_off_px``).

    Returns:
        float64 ``[N, 4]`` scene px.  Inverse of ``scene_to_tile_px``.

    Example:
        >>> tile_to_scene_px(np.array([[1.0, 2.0, 3.0, 4.0]]), 896, 0).tolist()
        [[897.0, 2.0, 899.0, 4.0]]
    """
    offset = np.array([col_off_px, row_off_px, col_off_px, row_off_px], dtype=np.float64)
    return np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4) + offset


def scene_to_tile_px(boxes_xyxy_px: np.ndarray, col_off_px: float, row_off_px: float) -> np.ndarray:
    """Shift scene-pixel boxes into the frame of the tile at (``col_off_px``, ``row_off_px``).

    Returns:
        float64 ``[N, 4]`` tile px (not clipped: see ``clip_boxes_px``).
        Inverse of ``tile_to_scene_px``.

    Example:
        >>> scene_to_tile_px(np.array([[897.0, 2.0, 899.0, 4.0]]), 896, 0).tolist()
        [[1.0, 2.0, 3.0, 4.0]]
    """
    return tile_to_scene_px(boxes_xyxy_px, -col_off_px, -row_off_px)


def clip_boxes_px(
    boxes_xyxy_px: np.ndarray, width_px: float, height_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to ``[0, width_px] x [0, height_px]`` and flag those left with an area.

    Used for a tile's valid area (``TileSpec.valid_width_px`` /
    ``valid_height_px``): padding past the scene's edge holds no objects.

    Args:
        boxes_xyxy_px: ``[N, 4]`` px in the frame to clip in; float32 input
            stays float32, anything else becomes float64.
        width_px: right edge of the clip window.
        height_px: bottom edge of the clip window.

    Returns:
        (clipped ``[N, 4]`` copy, bool ``[N]``: ``x1 < x2 and y1 < y2`` after the clip).

    Example:
        >>> boxes, keep = clip_boxes_px(np.array([[-2.0, 1, 5, 3], [70, 1, 80, 3]]), 64, 64)
        >>> boxes.tolist(), keep.tolist()
        ([[0.0, 1.0, 5.0, 3.0], [64.0, 1.0, 64.0, 3.0]], [True, False])
    """
    boxes = np.asarray(boxes_xyxy_px)
    boxes = np.array(boxes, dtype=np.float32 if boxes.dtype == np.float32 else np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width_px)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height_px)
    x1, y1, x2, y2 = boxes.T.astype(np.float64)  # typed for the comparison; exact for float32 too
    keep: np.ndarray = (x2 > x1) & (y2 > y1)
    return boxes, keep


def box_corners_px(boxes_xyxy_px: np.ndarray) -> np.ndarray:
    """Corners of each box, closed ring order (x1,y1),(x2,y1),(x2,y2),(x1,y2).

    Returns:
        float64 ``[N, 4, 2]`` (col, row) pairs.
    """
    b = np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    # (N, 4 corners, 2 coords)
    return np.stack(
        [np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1), np.stack([x1, y2], -1)],
        axis=1,
    )


def scene_px_to_crs(boxes_xyxy_px: np.ndarray, transform: AffineLike) -> np.ndarray:
    """Map scene-pixel boxes to CRS corner coordinates with the scene's affine.

    Args:
        boxes_xyxy_px: ``[N, 4]`` scene px.
        transform: the scene's ``Affine`` (pixel corners), or its six
            coefficients ``(a, b, c, d, e, f)``.

    Returns:
        float64 ``[N, 4, 2]`` CRS (x, y) of the corners (x1,y1),(x2,y1),(x2,y2),(x1,y2).
        Inverse of ``crs_to_scene_px`` for north-up transforms.

    Example:
        >>> t = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)  # 10 m, north-up
        >>> scene_px_to_crs(np.array([[0, 0, 1, 1]]), t)[0].tolist()
        [[500000.0, 4000000.0], [500010.0, 4000000.0], [500010.0, 3999990.0], [500000.0, 3999990.0]]
    """
    corners = box_corners_px(boxes_xyxy_px)  # (N, 4, 2) (col, row)
    xs, ys = as_affine(transform) @ (corners[..., 0], corners[..., 1])
    return np.stack([xs, ys], axis=-1)


def crs_to_scene_px(bounds_xyxy_crs: np.ndarray, transform: AffineLike) -> np.ndarray:
    """CRS boxes -> scene px boxes (the pixel bbox of each CRS box's corners).

    Args:
        bounds_xyxy_crs: ``[N, 4]`` (xmin, ymin, xmax, ymax) in the scene's CRS.
        transform: the scene's ``Affine``, or its six coefficients.

    Returns:
        float64 ``[N, 4]`` scene px.  Inverse of ``scene_px_to_crs`` followed by
        taking bounds, for north-up transforms; for rotated ones it returns the
        enclosing pixel box.

    Raises:
        ValueError: the transform is not invertible.

    Example:
        >>> t = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
        >>> crs_to_scene_px(np.array([[500000.0, 3999990.0, 500010.0, 4000000.0]]), t).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """
    affine = as_affine(transform)
    if affine.is_degenerate:
        raise ValueError(f"affine transform {tuple(affine)[:6]} is not invertible")
    inverse = ~affine
    corners = box_corners_px(bounds_xyxy_crs)  # (N, 4, 2) CRS (x, y)
    cols, rows = inverse @ (corners[..., 0], corners[..., 1])
    return np.stack([cols.min(1), rows.min(1), cols.max(1), rows.max(1)], axis=-1)


def reproject_corners(corners: np.ndarray, src_crs: CRS, dst_crs: CRS) -> np.ndarray:
    """Reproject ``[N, 4, 2]`` corner coordinates (x, y order, always_xy)."""
    if src_crs == dst_crs or len(corners) == 0:
        return corners
    transformer = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    xs, ys = transformer.transform(corners[..., 0].ravel(), corners[..., 1].ravel())
    out = np.stack([np.asarray(xs), np.asarray(ys)], axis=-1).reshape(corners.shape)
    if not np.isfinite(out).all():
        raise ValueError(f"some boxes cannot be transformed from {src_crs.name} to {dst_crs.name}")
    return out


def corners_to_polygons(corners: np.ndarray) -> np.ndarray:
    """``[N, 4, 2]`` corners -> N shapely Polygons (ring closed), vectorised."""
    if len(corners) == 0:
        return np.empty(0, dtype=object)
    ring = np.concatenate([corners, corners[:, :1]], axis=1)  # (N, 5, 2)
    polygons: np.ndarray = shapely.polygons(ring)
    return polygons


def corners_to_bounds(corners: np.ndarray) -> np.ndarray:
    """``[N, 4, 2]`` corners -> float64 ``[N, 4]`` (xmin, ymin, xmax, ymax)."""
    if len(corners) == 0:
        return np.zeros((0, 4), np.float64)
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def boxes_to_geometry(
    boxes_xyxy_px: np.ndarray,
    transform: AffineLike,
    scene_crs: CRS,
    out_crs: CRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Scene-pixel boxes -> (N Polygons, float64 ``[N, 4]`` bounds) in ``out_crs``.

    The four corners go through the scene's affine, then are reprojected one by
    one when ``out_crs`` differs from ``scene_crs``.
    """
    corners = reproject_corners(scene_px_to_crs(boxes_xyxy_px, transform), scene_crs, out_crs)
    return corners_to_polygons(corners), corners_to_bounds(corners)


def scene_footprint(
    width_px: int, height_px: int, transform: AffineLike, scene_crs: CRS, out_crs: CRS
) -> shapely.Polygon:
    """The polygon a scene covers, in ``out_crs`` (its four corners, reprojected).

    Example:
        >>> utm = CRS.from_epsg(32633)
        >>> scene_footprint(100, 50, Affine(10.0, 0, 500000.0, 0, -10.0, 4000000.0), utm, utm).bounds
        (500000.0, 3999500.0, 501000.0, 4000000.0)
    """
    polygons, _ = boxes_to_geometry(np.array([[0, 0, width_px, height_px]]), transform, scene_crs, out_crs)
    return polygons[0]
