import numpy as np
import pytest
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.georef import (
    as_affine,
    clip_boxes_px,
    corners_to_bounds,
    corners_to_polygons,
    crs_to_scene_px,
    reproject_corners,
    scene_footprint,
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


def test_affine_and_six_numbers_give_the_same_corners():
    t = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
    boxes = np.array([[0, 0, 4, 2], [10, 20, 11, 21]])
    assert scene_px_to_crs(boxes, t).tolist() == scene_px_to_crs(boxes, tuple(t)[:6]).tolist()
    assert as_affine(tuple(t)) == t  # the nine values of tuple(Affine) too
    assert as_affine(t) is t


@pytest.mark.parametrize("bad", [(1.0, 0.0, 0.0, 0.0, -1.0), (1, 0, 0, 0, -1, 0, 0, 0, 2)])
def test_as_affine_refuses_what_is_not_an_affine(bad):
    with pytest.raises(ValueError, match="6 numbers"):
        as_affine(bad)


def test_crs_to_scene_px_inverts_a_rotated_affine():
    # 30 degrees, 2 m pixels: a CRS box maps back to the pixel box enclosing its corners
    t = Affine.translation(1000.0, 2000.0) @ Affine.rotation(30) @ Affine.scale(2.0, -2.0)
    corners = scene_px_to_crs(np.array([[3, 4, 7, 9]]), t)
    back = (~t) @ (corners[0, :, 0], corners[0, :, 1])
    assert np.allclose(np.stack(back, -1), [[3, 4], [7, 4], [7, 9], [3, 9]])
    # north-up: exact inverse of the bounds
    north_up = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    assert crs_to_scene_px([[500020.0, 3999930.0, 500050.0, 3999970.0]], north_up).tolist() == [[2, 3, 5, 7]]


def test_non_invertible_affine_is_a_value_error():
    with pytest.raises(ValueError, match="not invertible"):
        crs_to_scene_px(np.array([[0.0, 0.0, 1.0, 1.0]]), Affine(1.0, 2.0, 0.0, 2.0, 4.0, 0.0))


def test_clip_boxes_px_by_hand():
    boxes = np.array([[-3, 5, 10, 70], [60, 0, 80, 10], [64, 1, 70, 3], [1, 1, 1, 2]], np.float32)
    clipped, keep = clip_boxes_px(boxes, 64, 64)
    assert clipped.dtype == np.float32
    assert clipped.tolist() == [[0, 5, 10, 64], [60, 0, 64, 10], [64, 1, 64, 3], [1, 1, 1, 2]]
    assert keep.tolist() == [True, True, False, False]  # empty after the clip, or empty already
    assert boxes[0, 0] == -3  # the input is not modified
    assert clip_boxes_px(boxes.astype(int), 64, 64)[0].dtype == np.float64


def test_scene_footprint_by_hand():
    utm = CRS.from_epsg(32633)
    t = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    fp = scene_footprint(100, 50, t, utm, utm)
    assert fp.bounds == (500000.0, 3999500.0, 501000.0, 4000000.0) and fp.area == 1000 * 500
    # reprojected: the scene's top-left corner sits on zone 33's central meridian (15 E)
    lonlat = scene_footprint(100, 50, t, utm, CRS.from_user_input("OGC:CRS84"))
    assert lonlat.bounds[0] == pytest.approx(15.0) and lonlat.bounds[3] == pytest.approx(36.1, abs=0.05)


def test_scene_info_holds_an_affine_even_when_given_six_numbers():
    from pipeline.types import SceneInfo

    info = SceneInfo("s.tif", 10, 10, 3, "uint8", CRS.from_epsg(32633).to_wkt(), (1, 0, 0, 0, -1, 10))
    assert isinstance(info.transform, Affine) and info.transform == Affine(1, 0, 0, 0, -1, 10)
    assert (~info.transform) @ (0.0, 10.0) == (0.0, 0.0)
