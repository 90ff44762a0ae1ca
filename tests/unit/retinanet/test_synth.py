import geopandas as gpd
import numpy as np
import rasterio
from pyproj import CRS

from retinanet.synth import CLASS_NAMES, SynthConfig, write_scenes


def test_synth_scene_georeferenced_and_truth_lines_up(tmp_path):
    truths = write_scenes(tmp_path, num_scenes=2, cfg=SynthConfig(size_px=600, gsd_m=0.5), seed=5)
    with rasterio.open(tmp_path / "scene_000.tif") as src:
        assert CRS.from_user_input(src.crs.to_wkt()) == CRS.from_epsg(32633)
        assert tuple(src.transform)[:6] == (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
        assert src.count == 3 and src.dtypes[0] == "uint8" and src.overviews(1)
        pixels = src.read()
    gt = gpd.read_parquet(tmp_path / "labels.parquet")
    assert gt.crs == CRS.from_epsg(32633) and set(gt["label"]) <= set(CLASS_NAMES)
    assert gt["score"].isna().all()
    first = gt[gt["scene"].str.endswith("scene_000.tif")]
    assert len(first) == len(truths[0].labels) > 10
    # CRS geometry = pixel box through the transform
    b = first.geometry.bounds
    assert np.allclose(b["minx"], 500000 + 0.5 * first["xmin_px"]) and np.allclose(
        b["maxy"], 5000000 - 0.5 * first["ymin_px"]
    )
    # pixels under a few boxes are the painted objects, not ground
    ground = np.median(pixels, axis=(1, 2))
    for _, row in first.head(8).iterrows():
        x1, y1, x2, y2 = (int(row[k]) for k in ("xmin_px", "ymin_px", "xmax_px", "ymax_px"))
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        if row["label"] == "vehicle":  # painted colour, far from the green/brown ground
            assert np.abs(pixels[:, y1:y2, x1:x2].astype(float).mean(axis=(1, 2)) - ground).max() > 25
        elif row["label"] == "building":  # dark outline on the box edge
            assert pixels[:, y1, cx].mean() < pixels[:, cy, cx].mean()
        else:  # tree: green dominates at the crown's edge ring
            assert pixels[1, cy, x1 + 1 : x2 - 1].mean() > pixels[0, cy, x1 + 1 : x2 - 1].mean()
    # the second scene sits beside the first, with its own objects
    assert gt[gt["scene"].str.endswith("scene_001.tif")].geometry.bounds["minx"].min() > 500300


def test_same_seed_same_scene(tmp_path):
    a = write_scenes(tmp_path / "a", num_scenes=1, cfg=SynthConfig(size_px=256), seed=2)
    b = write_scenes(tmp_path / "b", num_scenes=1, cfg=SynthConfig(size_px=256), seed=2)
    assert np.array_equal(a[0].boxes_xyxy_px, b[0].boxes_xyxy_px)
    with rasterio.open(a[0].path) as sa, rasterio.open(b[0].path) as sb:
        assert np.array_equal(sa.read(), sb.read())
