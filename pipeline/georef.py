"""Pixel frames -> CRS geometry, vectorised.

Frames: tile px --``tile_to_scene_px``--> scene px --``scene_px_to_crs``--> CRS.
Box edges are pixel *corners*: the box ``(0, 0, 1, 1)`` covers exactly pixel
(row 0, col 0).  Every box is mapped by its four corners, so rotated and
sheared affine transforms give the right (rotated) polygon, and a box
reprojected to another CRS is the polygon of its four reprojected corners.
"""

from __future__ import annotations

import numpy as np
import shapely
from pyproj import CRS, Transformer


def tile_to_scene_px(boxes_xyxy_px: np.ndarray, col_off_px: float, row_off_px: float) -> np.ndarray:
    """Shift tile-pixel boxes into scene pixels.

    Args:
        boxes_xyxy_px: ``[N, 4]`` tile px.
        col_off_px: the tile's left edge in scene px.
        row_off_px: the tile's top edge in scene px.

    Returns:
        float64 ``[N, 4]`` scene px.  Inverse of ``scene_to_tile_px``.

    Example:
        >>> tile_to_scene_px(np.array([[1.0, 2.0, 3.0, 4.0]]), 896, 0).tolist()
        [[897.0, 2.0, 899.0, 4.0]]
    """
    offset = np.array([col_off_px, row_off_px, col_off_px, row_off_px], dtype=np.float64)
    return np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4) + offset


def scene_to_tile_px(boxes_xyxy_px: np.ndarray, col_off_px: float, row_off_px: float) -> np.ndarray:
    """Inverse of ``tile_to_scene_px``."""
    return tile_to_scene_px(boxes_xyxy_px, -col_off_px, -row_off_px)


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


def scene_px_to_crs(
    boxes_xyxy_px: np.ndarray, transform: tuple[float, float, float, float, float, float]
) -> np.ndarray:
    """Map scene-pixel boxes to CRS corner coordinates with the scene's affine.

    Args:
        boxes_xyxy_px: ``[N, 4]`` scene px.
        transform: ``(a, b, c, d, e, f)``: x = a*col + b*row + c, y = d*col + e*row + f
            (rasterio's ``Affine`` order, pixel corners).

    Returns:
        float64 ``[N, 4, 2]`` CRS (x, y) of the corners (x1,y1),(x2,y1),(x2,y2),(x1,y2).
        Inverse of ``crs_to_scene_px`` for north-up transforms.

    Example:
        >>> t = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)  # 10 m, north-up
        >>> scene_px_to_crs(np.array([[0, 0, 1, 1]]), t)[0].tolist()
        [[500000.0, 4000000.0], [500010.0, 4000000.0], [500010.0, 3999990.0], [500000.0, 3999990.0]]
    """
    a, b, c, d, e, f = transform
    corners = box_corners_px(boxes_xyxy_px)
    cols, rows = corners[..., 0], corners[..., 1]
    return np.stack([a * cols + b * rows + c, d * cols + e * rows + f], axis=-1)


def crs_to_scene_px(
    bounds_xyxy_crs: np.ndarray, transform: tuple[float, float, float, float, float, float]
) -> np.ndarray:
    """CRS boxes -> scene px boxes (the pixel bbox of each CRS box's corners).

    Inverse of ``scene_px_to_crs`` followed by taking bounds, for north-up
    transforms; for rotated ones it returns the enclosing pixel box.
    """
    a, b, c, d, e, f = transform
    det = a * e - b * d
    if det == 0:
        raise ValueError(f"affine transform {transform} is not invertible")
    bb = np.asarray(bounds_xyxy_crs, dtype=np.float64).reshape(-1, 4)
    corners = box_corners_px(bb)  # (N, 4, 2) in CRS
    xs, ys = corners[..., 0] - c, corners[..., 1] - f
    cols = (e * xs - b * ys) / det
    rows = (-d * xs + a * ys) / det
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
    return shapely.polygons(ring)


def corners_to_bounds(corners: np.ndarray) -> np.ndarray:
    """``[N, 4, 2]`` corners -> float64 ``[N, 4]`` (xmin, ymin, xmax, ymax)."""
    if len(corners) == 0:
        return np.zeros((0, 4), np.float64)
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def boxes_to_geometry(
    boxes_xyxy_px: np.ndarray,
    transform: tuple[float, float, float, float, float, float],
    scene_crs: CRS,
    out_crs: CRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Scene-pixel boxes -> (N Polygons, float64 ``[N, 4]`` bounds) in ``out_crs``.

    The four corners go through the scene's affine, then are reprojected one by
    one when ``out_crs`` differs from ``scene_crs``.
    """
    corners = reproject_corners(scene_px_to_crs(boxes_xyxy_px, transform), scene_crs, out_crs)
    return corners_to_polygons(corners), corners_to_bounds(corners)
