import numpy as np
import pytest
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.georef import (
    corners_to_bounds,
    corners_to_polygons,
    crs_to_scene_px,
    reproject_corners,
    scene_px_to_crs,
    scene_to_tile_px,
    tile_to_scene_px,
)


def test_tile_scene_round_trip():
    boxes = np.array([[1.5, 2.0, 10.0, 12.25]])
    scene = tile_to_scene_px(boxes, 896, 1792)
    assert scene.tolist() == [[897.5, 1794.0, 906.0, 1804.25]]
    assert scene_to_tile_px(scene, 896, 1792).tolist() == boxes.tolist()


def test_north_up_corners_by_hand():
    # 10 m pixels, origin (500000, 4000000): pixel box (2, 3)-(5, 7)
    t = tuple(Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))[:6]
    corners = scene_px_to_crs(np.array([[2, 3, 5, 7]]), t)
    assert corners[0].tolist() == [
        [500020.0, 3999970.0],
        [500050.0, 3999970.0],
        [500050.0, 3999930.0],
        [500020.0, 3999930.0],
    ]
    assert corners_to_bounds(corners).tolist() == [[500020.0, 3999930.0, 500050.0, 3999970.0]]
    assert crs_to_scene_px(corners_to_bounds(corners), t).tolist() == [[2.0, 3.0, 5.0, 7.0]]
    poly = corners_to_polygons(corners)[0]
    assert poly.area == pytest.approx(30 * 40)


def test_rotated_transform_uses_corners():
    # 90-degree rotation: x = -row*10 + c ... (a=0, b=-10, d=-10, e=0)
    t = (0.0, -10.0, 1000.0, -10.0, 0.0, 2000.0)
    corners = scene_px_to_crs(np.array([[0, 0, 2, 1]]), t)
    # corner (col, row) -> (x = -10*row + 1000, y = -10*col + 2000)
    assert corners[0].tolist() == [[1000.0, 2000.0], [1000.0, 1980.0], [990.0, 1980.0], [990.0, 2000.0]]
    # 30-degree rotation keeps the box's area and shape
    r = Affine.rotation(30) @ Affine.scale(2.0, -2.0)
    poly = corners_to_polygons(scene_px_to_crs(np.array([[0, 0, 3, 5]]), tuple(r)[:6]))[0]
    assert poly.area == pytest.approx(3 * 5 * 4)
    assert not poly.equals(poly.envelope)


def test_reproject_corners_to_crs84():
    corners = np.array([[[500000.0, 0.0], [500000.0, 0.0], [500000.0, 0.0], [500000.0, 0.0]]])
    out = reproject_corners(corners, CRS.from_epsg(32633), CRS.from_user_input("OGC:CRS84"))
    assert out[0, 0, 0] == pytest.approx(15.0)  # central meridian of zone 33
    assert out[0, 0, 1] == pytest.approx(0.0, abs=1e-9)
