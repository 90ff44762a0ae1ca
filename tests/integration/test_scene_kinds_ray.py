"""Issue 24 on a Ray cluster: the model's pixel kind and ``--rescale`` reach the header and read tasks.

The unit tests (``tests/bad_input/test_scene_kinds.py``) drive the reader and
the in-process lifecycle; here the same decisions cross Ray: the header task's
``SceneInfo.note`` comes back to the driver's report line, and every read
task rescales or expands a scene exactly as the header decided.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from pipeline.ray_stages import DetectJob, run_detect
from pipeline.reading import ReadConfig
from pipeline.report import read_report
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from pipeline.types import PixelRange
from tests.conftest import write_scene

pytestmark = pytest.mark.integration
OBJ = [(10, 10, 30, 30, 0), (150, 120, 170, 140, 0)]


def test_rescaled_and_paletted_scenes_find_what_the_uint8_one_finds_and_complex_fails(ray_cluster, tmp_path):
    src = tmp_path / "in"
    write_scene(src / "u8.tif", OBJ, width=200, height=160)
    u16 = write_scene(src / "u16.tif", [], width=200, height=160, dtype="uint16")
    with rasterio.open(u16, "r+") as dst:
        data = np.full((3, 160, 200), 500, np.uint16)
        for x1, y1, x2, y2, _ in OBJ:
            data[0, y1:y2, x1:x2] = 4000
        dst.write(data)
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)  # write_scene's
    profile = dict(driver="GTiff", width=200, height=160, count=1, crs="EPSG:32633", transform=transform)
    with rasterio.open(src / "pal.tif", "w", **profile, dtype="uint8", photometric="palette") as dst:
        index = np.zeros((1, 160, 200), np.uint8)
        for x1, y1, x2, y2, _ in OBJ:
            index[0, y1:y2, x1:x2] = 3
        dst.write(index)
        dst.write_colormap(1, {0: (0, 0, 0, 255), 3: (250, 0, 0, 255)})
    with rasterio.open(src / "sar.tif", "w", **profile, dtype="complex_int16"):
        pass
    job = DetectJob(
        source=str(src),
        out_dir=str(tmp_path / "out"),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=128, overlap_px=32),
        read=ReadConfig(model_input=PixelRange("uint8", 0.0, 255.0), rescale="minmax"),
        progress=False,
    )
    run_detect(job, log=lambda m: None)
    by = {Path(s["uri"]).name: s for s in read_report(tmp_path / "out")["scenes"]}
    assert by["u8.tif"]["status"] == "done" and by["u8.tif"]["num_detections"] == 2
    assert by["u8.tif"]["note"] is None
    assert by["u16.tif"]["status"] == "done" and by["u16.tif"]["num_detections"] == 2
    assert "--rescale minmax: 500..4000 -> 0..255" in by["u16.tif"]["note"]
    assert by["pal.tif"]["status"] == "done" and by["pal.tif"]["num_detections"] == 2
    assert by["pal.tif"]["note"] == "palette expanded to RGB"
    assert (
        by["sar.tif"]["status"] == "failed" and "pixels are complex (complex_int16" in by["sar.tif"]["error"]
    )
