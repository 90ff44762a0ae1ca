"""Two drivers on one output at once share the scenes instead of both doing every one (scene claims).

Before: both runs did every scene (double work, and the last writer won every file).
"""

from __future__ import annotations

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
