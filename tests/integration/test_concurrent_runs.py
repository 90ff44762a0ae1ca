"""Two drivers on one output at once share the scenes instead of both doing every one (scene claims).

Before: both runs did every scene (double work, and the last writer won every file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest

from pipeline.report import read_report
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
OBJECTS = [(10, 10, 30, 30, 0), (200, 300, 220, 330, 1), (700, 100, 740, 120, 2)]


def test_two_concurrent_runs_do_each_scene_once(tmp_path):
    for i in range(4):
        write_scene(tmp_path / "in" / f"s{i}.tif", OBJECTS, width=1024, height=1024)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.detect", *standin_detect_args(str(tmp_path / "in"), str(out))]
    runs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    done = sum(int(stdout.split(" scene(s) done")[0].rsplit("\n", 1)[-1]) for _, stdout, _ in results)
    assert done == 4, [stdout for _, stdout, _ in results]  # each scene inferred by one run only
    gdf = gpd.read_parquet(out)
    assert len(gdf) == 4 * len(OBJECTS) and gdf["scene"].nunique() == 4
    last = read_report(out)
    assert sum(last["counts"].values()) == 4  # the last run accounts for every scene it listed


@pytest.mark.slow  # make test-all: ~6 min; make test keeps two concurrent runs and the 300-scene in-process run
def test_three_drivers_on_one_cluster_share_300_scenes(ray_cluster, tmp_path):
    # issue 26: N `aerialdet detect` jobs on one cluster, same OUT, are the way past one driver
    first = write_scene(tmp_path / "in" / "s000.tif", OBJECTS[:1], width=64, height=64)
    for i in range(1, 300):
        os.link(first, tmp_path / "in" / f"s{i:03d}.tif")
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    args = [
        *standin_detect_args(str(tmp_path / "in"), str(out)),
        "--tile-size-px",
        "64",
        "--overlap-px",
        "16",
    ]
    cmd = [sys.executable, "-m", "jobs.detect", *args, "--address", address, "--cpus-per-actor", "0.5"]
    runs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(run.wait(timeout=900), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-2000:] for _, _, err in results]
    done = [int(stdout.split(" scene(s) done")[0].rsplit("\n", 1)[-1]) for _, stdout, _ in results]
    assert sum(done) == 300, done  # every scene inferred once, by one of the three
    manifest_runs = {json.loads(p.read_text())["run_id"] for p in out.glob("_manifest.*.json")}
    assert len(list(out.glob("_manifest.*.json"))) == 300 and len(manifest_runs) >= 2  # the work was shared
    gdf = gpd.read_parquet(out)
    assert len(gdf) == 300 and gdf["scene"].nunique() == 300
