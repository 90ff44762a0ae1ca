"""detect on a Ray cluster, at the model's GSD, over a bucket that mixes resolutions (issue 21, 26)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
from click.testing import CliRunner
from rasterio.transform import Affine

from jobs.cli import cli
from pipeline.report import read_report
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args


def test_mixed_gsd_bucket_at_the_model_gsd(ray_cluster, tmp_path):
    src = tmp_path / "in"
    # the same 12 x 6 m vehicle-sized square at 0.075 m and at 0.3 m; a 0.01 m scene (30x the model's);
    # a 100 x 60 px scene at 0.3 m (one clamped tile)
    write_scene(
        src / "fine.tif",
        [(160, 80, 320, 160, 0)],
        width=1600,
        height=800,
        transform=Affine(0.075, 0, 500000, 0, -0.075, 4000000),
    )
    write_scene(
        src / "model.tif",
        [(40, 20, 80, 40, 0)],
        width=400,
        height=200,
        transform=Affine(0.3, 0, 500000, 0, -0.3, 4000000),
    )
    write_scene(src / "far.tif", [], width=100, height=100, transform=Affine(0.01, 0, 5e5, 0, -0.01, 4e6))
    write_scene(src / "small.tif", [(10, 10, 30, 30, 2)], width=100, height=60,
                transform=Affine(0.3, 0, 600000, 0, -0.3, 4000000))  # fmt: skip
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detect", *standin_detect_args(str(src), str(out)), "--gsd-m", "0.3"])
    assert result.exit_code == 1, result.output  # far.tif failed, alone
    assert sum("far.tif" in line and "--max-gsd-factor" in line for line in result.output.splitlines()) >= 1
    lines = {Path(line["uri"]).name: line for line in read_report(out)["scenes"]}
    assert (
        lines["far.tif"]["status"] == "failed"
        and "0.01 m is 30.0x the model's 0.3 m" in lines["far.tif"]["error"]
    )
    assert [lines[n]["status"] for n in ("fine.tif", "model.tif", "small.tif")] == ["done"] * 3
    fine, model = lines["fine.tif"], lines["model.tif"]
    assert (fine["native_gsd_m"], fine["model_gsd_m"], fine["read_factor"]) == (0.075, 0.3, 4.0)
    assert (model["native_gsd_m"], model["read_factor"]) == (0.3, 1.0)
    # 1600 x 800 native px are 400 x 200 model px: the same 4 x 2 tiles of 128 px as model.tif
    assert fine["num_px_inferred"] == model["num_px_inferred"] == 8 * 128 * 128
    assert lines["small.tif"]["num_px_inferred"] == 128 * 64  # 100 x 60 px: one 128 x 64 tile
    rows = gpd.read_parquet(out)
    by_scene = {Path(s).name: r for s, r in zip(rows["scene"], rows.itertuples())}
    assert (by_scene["fine.tif"].xmin_px, by_scene["fine.tif"].xmax_px) == (160.0, 320.0)  # native px
    assert by_scene["fine.tif"].geometry.bounds == by_scene["model.tif"].geometry.bounds  # same ground
    assert list(by_scene["fine.tif"].geometry.bounds) == [500012.0, 3999988.0, 500024.0, 3999994.0]
    summary = json.loads((out / "_run.json").read_text())
    assert summary["config"]["resolution"]["model_gsd_m"] == 0.3
