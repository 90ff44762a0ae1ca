"""issue 11, done when: from scratch on a few small real-looking images with VOC labels.

Two 400 px chips and one 1000 px image of textured ground with shaded tree
crowns (Pascal VOC XML written here, as a labelling tool would), a held-out
400 px image for validation: ``aerialdet train`` cuts every image into
training tiles (the 1000 px image gives 16 per epoch, so an epoch is more
than one step), validates with ``num_gt > 0`` and writes ``best/`` with
calibrated score thresholds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retinanet.checkpoint import read_meta
from tests.conftest import write_voc

pytestmark = pytest.mark.integration


def _forest(folder, name, size_px, num_trees, seed):
    """An RGB "airborne" image: noisy ground, shaded round crowns (radius 8-16 px); its VOC file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    ground = 110 + 20 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 12, (size_px, size_px))
    rgb = np.stack([ground * 1.05, ground, ground * 0.8], axis=-1)
    objects = []
    for _ in range(num_trees):
        r = int(rng.integers(8, 17))
        cx, cy = (int(v) for v in rng.integers(r, size_px - r, 2))
        dist = np.hypot(xx - cx, yy - cy)
        crown = dist <= r
        shade = 1.0 - 0.5 * (dist / r)  # bright top, darker rim
        colour = np.array([40, 95 + rng.integers(0, 40), 35], float)
        rgb[crown] = colour * shade[crown, None] + rng.normal(0, 8, (int(crown.sum()), 3))
        objects.append((cx - r, cy - r, cx + r, cy + r))
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return str(write_voc(folder / f"{name}.xml", f"{name}.png", objects, size=(size_px, size_px)))


def test_train_from_scratch_on_voc_images_validates_and_writes_best(tmp_path):
    big = _forest(tmp_path, "big", 1000, 120, seed=1)
    chips = [_forest(tmp_path, f"chip{i}", 400, 25, seed=2 + i) for i in range(2)]
    val = _forest(tmp_path, "val", 400, 25, seed=9)
    out = tmp_path / "run"
    args = [big, *chips, "--val", val, "--out", str(out), "--steps", "30", "--batch-size", "4"]
    args += ["--tile-size-px", "256", "--cpus-per-worker", "1", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # said up front: 16 tiles of the 1000 px image + 4 of each 400 px chip = 24, repeated to the
    # epoch floor of 25 steps of 4 tiles
    first = run.stdout.splitlines()[0]
    assert first.startswith(
        "training on 3 image(s) with 170 objects (Tree 170); validating on 1 image(s) with 25"
    )
    assert (
        "24 tile(s) of 256 px, repeated to 100 per epoch; 30 step(s) of 4 tile(s) per worker = "
        "2 epoch(s) x 25 step(s)" in first
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [25, 30]  # more than one step per epoch
    assert all(r["val_num_gt"] == 25 and r["val_ap50"] >= 0 for r in rows)
    meta = read_meta(out / "best")
    assert set(meta["score_thresholds"]) == {"Tree"} and 0 <= meta["score_thresholds"]["Tree"] <= 1
    assert meta["calibration"]["iou"] == 0.4
    assert f"checkpoints: {out / 'best'}" in run.stdout
