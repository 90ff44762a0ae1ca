"""``evaluate --by-gsd``: AP50 per group of scenes of one GSD, each scene's GSD from its header (issue 21)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
from click.testing import CliRunner
from pyproj import CRS

from jobs.cli import _register_optional, cli
from pipeline.merging import MergedBoxes
from pipeline.output import write_scene_detections
from pipeline.reading import ReadConfig, open_scene
from retinanet.synth import CLASS_NAMES, SynthConfig, write_scenes

_register_optional()
UTM33 = CRS.from_epsg(32633)


def test_ap50_is_reported_per_gsd_group(tmp_path):
    # 0.15 m scenes detected exactly, 0.6 m scenes with every box 40 px off: AP50 1 and 0
    frames = []
    for gsd_m, x0, shift in ((0.15, 500000.0, 0.0), (0.6, 520000.0, 40.0)):
        cfg = SynthConfig(size_px=256, gsd_m=gsd_m, origin_xy=(x0, 5000000.0))
        truths = write_scenes(tmp_path / f"at_{gsd_m}", num_scenes=2, cfg=cfg, seed=int(gsd_m * 100))
        frames.append(gpd.read_parquet(tmp_path / f"at_{gsd_m}" / "labels.parquet"))
        for truth in truths:
            scene = open_scene(str(truth.path), ReadConfig())
            boxes = truth.boxes_xyxy_px + shift
            merged = MergedBoxes(boxes, np.full(len(boxes), 0.9, np.float32), truth.labels)
            write_scene_detections(
                tmp_path / "det",
                scene,
                merged,
                class_names=CLASS_NAMES,
                out_crs=UTM33,
                model_id="m",
                run_id="r",
            )
    gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs).to_parquet(
        tmp_path / "gt.parquet"
    )
    args = ["evaluate", str(tmp_path / "det"), str(tmp_path / "gt.parquet"), "--by-gsd"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    by_gsd = json.loads(result.output)["by_gsd"]
    assert list(by_gsd) == ["0.15", "0.6"]
    assert by_gsd["0.15"]["num_scenes"] == 2 and by_gsd["0.15"]["ap50"] > 0.999
    assert by_gsd["0.6"]["num_scenes"] == 2 and by_gsd["0.6"]["ap50"] < 0.001
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and any(line.startswith("0.6 ") for line in table.output.splitlines())
