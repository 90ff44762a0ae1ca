"""pipeline.pixel_kinds: scene kinds from headers, the rescale plan, and one measurement per scene per process."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import Affine

from pipeline.pixel_kinds import PixelPlan, apply_plan, nominal_range, plan_pixels
from pipeline.reading import ReadConfig, WindowRead
from pipeline.types import PixelRange

PROFILE = dict(
    driver="GTiff", width=40, height=30, count=1, crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 0)
)


def test_nominal_range_narrows_integers_by_nbits_and_leaves_floats_open(tmp_path):
    with rasterio.open(tmp_path / "a.tif", "w", **PROFILE, dtype="uint16", nbits=12) as dst:
        dst.write(np.zeros((1, 30, 40), np.uint16))
    with rasterio.open(tmp_path / "b.tif", "w", **PROFILE, dtype="float32") as dst:
        dst.write(np.zeros((1, 30, 40), np.float32))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert nominal_range(a) == PixelRange("uint16", 0.0, 4095.0)
        assert nominal_range(b) == PixelRange("float32", None, None)
    assert PixelRange("float32", None, None).matches(PixelRange("float64", -1.0, 2.0))
    assert not PixelRange("uint16", 0.0, 4095.0).matches(PixelRange("uint16", 0.0, 65535.0))


def test_a_scene_is_measured_once_per_process_and_again_when_rewritten(tmp_path):
    path = tmp_path / "u16.tif"
    data = np.arange(1200, dtype=np.uint16).reshape(1, 30, 40)
    with rasterio.open(path, "w", **PROFILE, dtype="uint16") as dst:
        dst.write(data)
    calls: list[tuple[int, ...]] = []

    def sample(src, uri, bands, window, shape_hw):
        calls.append(tuple(bands))
        return WindowRead(src.read(list(bands), out_shape=(len(bands), *shape_hw)), np.ones(shape_hw, bool))

    config = ReadConfig(bands=(1,), model_input=PixelRange("uint8", 0.0, 255.0), rescale="minmax")
    with rasterio.open(path) as src:
        first, second = (plan_pixels(src, str(path), config, sample) for _ in range(2))
    assert (first.scale, first.offset, first.note) == (second.scale, second.offset, second.note)
    assert calls == [(1,)] and "0..1199 -> 0..255" in (first.note or "")
    with rasterio.open(path, "w", **PROFILE, dtype="uint16") as dst:
        dst.write(data * 2)
    with rasterio.open(path) as src:
        third = plan_pixels(src, str(path), config, sample)
    assert len(calls) == 2 and "0..2398 -> 0..255" in (third.note or "")


def test_apply_plan_rounds_clips_and_keeps_no_value_pixels_at_zero():
    plan = PixelPlan((1,), scale=0.5, offset=-10.0, out_dtype="uint8", out_range=(0.0, 255.0))
    data = np.array([[[0, 100, 1000, 31]]], np.uint16)
    valid = np.array([[True, True, True, False]])
    assert apply_plan(plan, data, valid).tolist() == [[[0, 40, 255, 0]]]
    assert apply_plan(PixelPlan((1,)), data, valid) is data  # nothing to do: as read
