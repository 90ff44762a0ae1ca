"""The review loop, measured: a weak model, N corrections through the review's HTTP API, fine-tune, evaluate.

issue 23: "on synthetic scenes, a deliberately weak model, N corrections made
through the HTTP API by a test from the ground truth (simulating a reviewer
following the queue), then ``train --init``: held-out AP50 before and after,
and how the queue's order compares with random order for the same N".

Steps (each a real ``aerialdet`` command, in a subprocess, but the review):

1. ``synth``: training scenes, scenes to review, held-out scenes (each with ground truth);
2. ``train`` a weak model (few steps) on the training scenes;
3. ``detect`` on the scenes to review and on the held-out scenes; ``evaluate`` held-out: *before*;
4. for each order (``queue``: ``GET api/queue``, closest to the threshold first;
   ``random``: the detections shuffled): a review server (``jobs.review_server``)
   over the review scenes, and N edits ``POST``-ed to ``api/edit``, each decided from
   the ground truth: accept (a box of the same class at IoU >= 0.5), relabel (another
   class), move (IoU >= 0.1: the ground-truth box), reject (none);
5. ``train CORRECTIONS TRAIN_LABELS --init WEAK`` (same steps for both orders), detect
   and evaluate held-out: *after*.

Run: ``.venv/bin/python -m bench.review_loop --out /tmp/review_loop`` (about 30
minutes on 2 busy CPU cores with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the reviewer (decisions from the ground truth, edits POSTed to the API): shared with the loop test
from tests.review_helpers import review

ROOT = Path(__file__).resolve().parents[1]


def aerialdet(*args: str) -> str:
    """Run ``aerialdet ARGS`` with this checkout's code; return its stdout (raise on failure)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "from jobs.cli import main; main()", *args]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for _ in range(3):  # Ray gives its raylet 30 s to start: on a busy machine, try again
        if done.returncode == 0 or "timed out during startup" not in done.stderr:
            break
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(f"  aerialdet {' '.join(args[:2])} ... {time.monotonic() - start:.0f} s", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"aerialdet {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def ap50(det: Path, truth: Path, model: Path) -> dict[str, float]:
    """Held-out AP50 overall and per class (``aerialdet evaluate --json``)."""
    result = json.loads(aerialdet("evaluate", str(det), str(truth), "--model", str(model), "--json"))
    return {
        name: round(float(m["ap50"]), 3) for name, m in result.items() if isinstance(m, dict) and "ap50" in m
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/review_loop"))
    ap.add_argument("--n", type=int, default=60, help="corrections per order")
    ap.add_argument("--weak-steps", type=int, default=40)
    ap.add_argument("--fine-tune-steps", type=int, default=40)
    ap.add_argument("--size-px", type=int, default=512)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    size = str(args.size_px)
    common = ["--backbone", "resnet18", "--tile-size-px", "256", "--overwrite", "--no-progress"]
    print("== synth, weak model", flush=True)
    for name, scenes, seed in (("train", 3, 1), ("review", 3, 2), ("heldout", 2, 7)):
        aerialdet("synth", str(out / name), "--scenes", str(scenes), "--size-px", size, "--seed", str(seed))
    weak = out / "weak"
    aerialdet(
        "train",
        str(out / "train/labels.parquet"),
        "--out",
        str(weak),
        "--steps",
        str(args.weak_steps),
        *common,
    )
    aerialdet(
        "detect",
        str(out / "review"),
        "--model",
        str(weak),
        "--out",
        str(out / "det_review"),
        "--overwrite",
        "--no-progress",
    )
    aerialdet(
        "detect",
        str(out / "heldout"),
        "--model",
        str(weak),
        "--out",
        str(out / "det_before"),
        "--overwrite",
        "--no-progress",
    )
    rows = {"before (weak model)": ap50(out / "det_before", out / "heldout/labels.parquet", weak)}
    edits = {}
    for order in ("queue", "random"):
        print(f"== {args.n} corrections in {order} order, fine-tune, evaluate", flush=True)
        labels = out / f"fixes_{order}.parquet"
        labels.unlink(missing_ok=True)
        edits[order] = review(
            out / "det_review",
            out / "review",
            out / "review/labels.parquet",
            labels,
            weak,
            order,
            args.n,
            args.seed,
        )
        tuned = out / f"tuned_{order}"
        aerialdet(
            "train",
            str(labels),
            str(out / "train/labels.parquet"),
            "--init",
            str(weak),
            "--out",
            str(tuned),
            "--steps",
            str(args.fine_tune_steps),
            *common,
        )
        aerialdet(
            "detect",
            str(out / "heldout"),
            "--model",
            str(tuned),
            "--out",
            str(out / f"det_{order}"),
            "--overwrite",
            "--no-progress",
        )
        rows[f"after {args.n} edits, {order} order"] = ap50(
            out / f"det_{order}", out / "heldout/labels.parquet", tuned
        )
    print(json.dumps({"ap50": rows, "edits": edits}, indent=2))
    classes = sorted({c for r in rows.values() for c in r if c != "overall"})
    print(f"\n{'held-out AP50':34s} {'overall':>8s} " + " ".join(f"{c:>9s}" for c in classes))
    for name, r in rows.items():
        print(f"{name:34s} {r.get('overall', -1):8.3f} " + " ".join(f"{r.get(c, -1):9.3f}" for c in classes))
    for order, counts in edits.items():
        print(f"edits ({order}): {counts}")


if __name__ == "__main__":
    main()
