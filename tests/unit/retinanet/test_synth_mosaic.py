"""The synthetic mosaic: overlapping scenes over one ground truth, across two UTM zones."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from pipeline.reading import ReadConfig, read_window
from retinanet.synth import SynthConfig
from retinanet.synth_mosaic import write_mosaic


def test_neighbours_share_their_overlap_pixel_for_pixel_and_objects_are_listed_once(tmp_path):
    cfg = SynthConfig(density_scale=3.0)
    written = write_mosaic(tmp_path, cols=2, rows=1, scene_px=256, overlap=0.5, cfg=cfg, span_zones=False)
    assert [p.name for p in written.scenes] == ["mosaic_00_00.tif", "mosaic_00_01.tif"]
    read = ReadConfig(bands=(1, 2, 3))
    left = read_window(str(written.scenes[0]), (128, 0, 128, 256), read).pixels
    right = read_window(str(written.scenes[1]), (0, 0, 128, 256), read).pixels
    assert np.array_equal(left, right)  # one ground, cut twice
    truth = gpd.read_parquet(written.labels)
    assert len(truth) == written.num_objects > 0
    assert not truth.geometry.duplicated().any()
    with rasterio.open(written.scenes[1]) as src:  # the mosaic's extent: 384 x 256 px of 0.3 m
        assert src.bounds.right - truth.total_bounds[0] <= 384 * 0.3 + 1e-6


def test_a_mosaic_on_a_zone_boundary_writes_its_west_scenes_in_the_western_zone(tmp_path):
    written = write_mosaic(tmp_path, cols=3, rows=1, scene_px=256, overlap=0.3)
    assert written.crs_by_scene[0] == "EPSG:32632" and written.crs_by_scene[-1] == "EPSG:32633"
    for path, crs in zip(written.scenes, written.crs_by_scene):
        with rasterio.open(path) as src:
            assert src.crs.to_string() == crs


def test_overlap_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        write_mosaic(tmp_path, overlap=1.0)
