"""Issue 24, end to end: NEON-shaped labels (two files `Tree`, one `Alive`/`Dead`) through `aerialdet train`.

Before, the run trained three classes, validated on the Alive/Dead image
alone (AP50 0.000 every epoch) and made the untrained epoch 0 ``best/``,
which ``detect --model RUN`` then used.  Now ``--map`` trains one class whose
validation has boxes, and a run whose validation cannot rank its epochs
keeps only ``last/``, says why in the summary and in ``OUT/no_best.txt``,
and a run directory resolves to ``last/`` with that reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from retinanet.checkpoint import read_meta, resolve_checkpoint
from tests.unit.retinanet.test_class_map import neon_like

pytestmark = pytest.mark.integration


@pytest.mark.slow  # make test-all: ~4 min of training; unit tests cover --map and the split
def test_mapped_neon_labels_train_one_class_validated_on_its_boxes(tmp_path):
    labels = neon_like(tmp_path)
    out = tmp_path / "run"
    args = [*labels, "--out", str(out), "--map", "Alive=Tree,Dead=Tree", "--classes", "Tree"]
    args += ["--steps", "2", "--max-steps-per-epoch", "1", "--batch-size", "1", "--tile-size-px", "64"]
    args += ["--cpus-per-worker", "1", "--no-progress", "--no-augment"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    said = re.match(
        r"training on 2 image\(s\) with (\d+) objects \(Tree (\d+)\); validating on 1 image\(s\) with (\d+)",
        run.stdout,
    )
    assert said, run.stdout[:500]  # one class, every box of the three files in it, validation has boxes
    num_train, num_tree, num_val = (int(g) for g in said.groups())
    assert num_train == num_tree and num_val > 0 and num_train + num_val == 7
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["val_num_gt"] == num_val and set(r["val_per_class"]) == {"Tree"} for r in rows)
    assert read_meta(out / "last")["config"]["class_names"] == ["Tree"]
    chosen, note = resolve_checkpoint(out)  # what `detect --model RUN` uses, and the line it prints
    if any(r["val_ap50"] > 0 for r in rows):
        assert chosen == out / "best" and f"checkpoints: {out / 'best'}" in run.stdout
    else:  # two steps from random weights usually find nothing: epochs cannot be ranked
        assert chosen == out / "last" and not (out / "best").exists()
        assert f"validation AP50 was 0.000 at every epoch ({num_val} validation boxes, none found)" in note
        assert f"checkpoint: {out / 'last'} (last epoch). No best/: validation AP50 was 0.000" in run.stdout
