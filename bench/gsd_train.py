"""A model trained on labels at 0.15 m and 0.6 m together detects on both (issue 21).

Training data: ``aerialdet synth --gsd-m`` scenes of the same kind at 0.15 m
and at 0.6 m (``--train-scenes`` each, ``--extent-m`` a side at both GSDs, as
``bench/gsd.py``'s bucket: the same ground, objects at their sizes in metres;
other seeds than the held-out scenes).  ``aerialdet train`` takes both label
files together at ``--gsd-m 0.3``, from scratch, with the demo's recipe
(``make demo``: resnet18, ``--tile-size-px 256``, ``--steps`` default 300).

Held-out: one scene each at 0.15, 0.3 and 0.6 m (``--heldout-extent-m`` a
side, ``retinanet.synth.write_scene``), in one bucket, detected in one run
at the checkpoint's GSD and in one with ``--native-resolution``
(``bench.gsd._detect``: this process on a private local cluster), and scored
per scene (``bench.gsd._ap50``: AP50, every detection kept, IoU 0.5, scene
pixels against the synth truth).  Printed: one table (AP50 per held-out GSD,
model GSD vs native, the read factor) and the ``gsd_m`` the checkpoint
records; then the same as one JSON line.

The lead's run (CPU, about 2 cores: the training is most of the time)::

    .venv/bin/python -m bench.gsd_train --steps 300

A quick check that it runs end to end (tiny scenes, two steps; figures meaningless)::

    nice -n 19 .venv/bin/python -m bench.gsd_train --steps 2 --extent-m 76.8 --heldout-extent-m 76.8

Benchmarks are not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gsd import _ap50, _bucket, _detect

TRAIN_GSDS_M = (0.15, 0.6)
HELDOUT_GSDS_M = (0.15, 0.3, 0.6)
MODEL_GSD_M = 0.3
_CLI = "import sys; from jobs.cli import main; main(sys.argv[1:])"  # `aerialdet ...` with this interpreter


def _aerialdet(*args: str) -> None:
    """Run ``aerialdet ARGS`` (synth, train) with this interpreter; stop the bench if it fails."""
    print("$ aerialdet " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-c", _CLI, *args], check=True)


def _training_labels(root: Path, extent_m: float, num_scenes: int, seed: int) -> list[Path]:
    """``aerialdet synth`` at each training GSD, ``extent_m`` a side: one labels.parquet per GSD."""
    labels = []
    for i, gsd in enumerate(TRAIN_GSDS_M):
        folder = root / f"train_{gsd:.3f}"
        size_px = str(round(extent_m / gsd))
        _aerialdet(
            "synth", str(folder), "--scenes", str(num_scenes), "--size-px", size_px,
            "--gsd-m", str(gsd), "--seed", str(seed + i),
        )  # fmt: skip
        labels.append(folder / "labels.parquet")
    return labels


def _train(labels: list[Path], run_dir: Path, args: argparse.Namespace) -> None:
    """``aerialdet train`` on every label file together at the model GSD, from scratch (the demo's recipe)."""
    _aerialdet(
        "train", *map(str, labels), "--out", str(run_dir), "--gsd-m", str(MODEL_GSD_M),
        "--steps", str(args.steps), "--backbone", "resnet18", "--tile-size-px", str(args.tile_size_px),
        "--seed", str(args.seed), "--overwrite", "--no-progress",
    )  # fmt: skip


def _table(rows: list[dict[str, Any]], checkpoint_gsd_m: float | None, args: argparse.Namespace) -> str:
    """The printed table: AP50 per held-out GSD, at the model GSD and native."""
    trained = " + ".join(f"{g:g} m" for g in TRAIN_GSDS_M)
    lines = [
        f"trained on {trained} labels together at --gsd-m {MODEL_GSD_M:g} ({args.steps} steps, resnet18, "
        f"{args.tile_size_px} px tiles); checkpoint's recorded gsd_m: {checkpoint_gsd_m}",
        "",
        "| held-out GSD (m) | AP50 at model GSD | AP50 --native-resolution | read factor |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['native_gsd_m']:g} | {row['ap50_model_gsd']:.4f} | {row['ap50_native']:.4f} "
            f"| {row['read_factor']:g} |"
        )
    return "\n".join(lines)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Training optimizer steps (the demo's 300).")
    parser.add_argument(
        "--extent-m", type=float, default=307.2, help="Ground side of every training scene, m."
    )
    parser.add_argument("--train-scenes", type=int, default=3, help="Training scenes per training GSD.")
    parser.add_argument(
        "--heldout-extent-m", type=float, default=614.4, help="Ground side of every held-out scene, m."
    )
    parser.add_argument("--tile-size-px", type=int, default=256, help="Training and detect tile edge.")
    parser.add_argument("--overlap-px", type=int, default=64, help="Detect tile overlap.")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the detect runs' private cluster.")
    parser.add_argument("--seed", type=int, default=7, help="Held-out synth seed (training: 1 and 2).")
    parser.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it.")
    return parser.parse_args()


def main() -> None:
    """Synth, train at 0.3 m on 0.15 + 0.6 m labels, detect the held-out scenes both ways, print the table."""
    args = _parse()
    import ray

    from pipeline.resolution import ResolutionConfig
    from retinanet.predictor import CheckpointLoader

    root = args.keep or Path(tempfile.mkdtemp(prefix="aerialdet-gsd-train-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        labels = _training_labels(root, args.extent_m, args.train_scenes, seed=1)
        _train(labels, root / "model", args)
        loader = CheckpointLoader.open(root / "model")
        checkpoint_gsd = loader.info.gsd_m
        if checkpoint_gsd is None:
            raise SystemExit(
                f"{root / 'model'}: the checkpoint records no gsd_m; train --gsd-m did not record it"
            )
        ways = {
            "model_gsd": ResolutionConfig(checkpoint_gsd, source="checkpoint"),
            "native": ResolutionConfig(),
        }
        bucket = _bucket(root, args.heldout_extent_m, args.seed, HELDOUT_GSDS_M, name="heldout")
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        lines, aps = {}, {}
        for way, resolution in ways.items():
            out = root / f"out-{way}"
            lines[way] = _detect(
                bucket["folder"], out, loader, resolution, args.tile_size_px, args.overlap_px
            )
            aps[way] = _ap50(out, bucket["truths"], loader.info.class_names)
        rows = [
            {
                "scene": name,
                "native_gsd_m": lines["model_gsd"][name]["native_gsd_m"],
                "ap50_model_gsd": round(aps["model_gsd"][name], 4),
                "ap50_native": round(aps["native"][name], 4),
                "read_factor": lines["model_gsd"][name]["read_factor"],
            }
            for name in bucket["truths"]
        ]
        print(_table(rows, checkpoint_gsd, args), flush=True)
        print(
            json.dumps({"checkpoint_gsd_m": checkpoint_gsd, "steps": args.steps, "scenes": rows}), flush=True
        )
    finally:
        ray.shutdown()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
