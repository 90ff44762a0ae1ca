"""Does an object seen by overlapping scenes come out once, and what does that cost?

Paints one ground (``aerialdet synth --mosaic``: COLS x ROWS scenes cut from
one painted scene, overlapping their neighbours by ``--overlap``, the west
ones in the neighbouring UTM zone), runs ``aerialdet detect`` over it twice in
one process tree, side by side: with the cross-scene merge (the default) and
with ``--no-cross-scene-merge`` (each scene on its own, today's single-scene
answer), and matches both outputs against the one ground truth (IoU > 0.5,
any class):

* duplicates: detections beyond the first on one painted object;
* recall: painted objects found at least once;
* wall seconds of each run, and the footprint pass's share (the run record's
  ``footprints_recorded`` mark);
* tiles inferred (the merge skips tiles whose part of the mosaic another
  scene owns).

    .venv/bin/python -m bench.mosaic --model demo_out/model --cols 12 --rows 10 --size-px 256

Benchmarks are not tests: they print figures measured in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely


def _detect(scenes: Path, model: str, out: Path, extra: list[str], tile_px: int) -> float:
    started = time.time()
    cmd = [
        sys.executable,
        "-m",
        "jobs.detect",
        str(scenes),
        "--model",
        model,
        "--out",
        str(out),
        "--no-progress",
    ]
    cmd += ["--tile-size-px", str(tile_px), "--overlap-px", str(tile_px // 4), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def _match(out: Path, labels: Path) -> dict[str, float]:
    truth = gpd.read_parquet(labels)
    found = gpd.read_parquet(out).to_crs(truth.crs)
    geoms = np.asarray(found.geometry.values)
    tree = shapely.STRtree(geoms)
    hits = []
    for t in truth.geometry.values:
        cand = tree.query(t)
        if len(cand) == 0:
            hits.append(0)
            continue
        inter = shapely.area(shapely.intersection(t, geoms[cand]))
        union = shapely.area(shapely.union(t, geoms[cand]))
        hits.append(int(((inter / union) > 0.5).sum()))
    hits_arr = np.asarray(hits)
    return {
        "objects": len(truth),
        "detections": len(found),
        "recall": float((hits_arr >= 1).mean()),
        "duplicates": int(np.maximum(hits_arr - 1, 0).sum()),
        "objects_reported_twice_or_more": int((hits_arr >= 2).sum()),
    }


def _record(out: Path) -> dict[str, float]:
    rep = json.loads((out / "_run.json").read_text())
    lines = [
        json.loads(line) for f in sorted(out.glob("_run.*.jsonl")) for line in f.read_text().splitlines()
    ]
    inferred = sum(s["num_tiles"] - s.get("num_tiles_not_owned", 0) for s in lines)
    return {
        "tiles_planned": sum(s["num_tiles"] for s in lines),
        "tiles_inferred": inferred,
        "footprint_pass_s": rep["phases_s"].get("footprints_recorded", float("nan")),
        "first_tile_s": rep["phases_s"].get("first_tiles", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cols", type=int, default=12)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--size-px", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--tile-size-px", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scenes = root / "mosaic"
        subprocess.run(
            [sys.executable, "-c", "import sys; from jobs.cli import main; main(sys.argv[1:])", "synth", str(scenes), "--mosaic", f"{args.cols}x{args.rows}",
             "--overlap", str(args.overlap), "--size-px", str(args.size_px), "--seed", str(args.seed)],
            check=True,
        )  # fmt: skip
        rows = {}
        for name, extra in (
            ("cross-scene merge", []),
            ("--no-cross-scene-merge", ["--no-cross-scene-merge"]),
        ):
            out = root / name.strip("-").replace(" ", "_")
            wall = _detect(scenes, args.model, out, extra, args.tile_size_px)
            rows[name] = {"wall_s": round(wall, 1), **_match(out, scenes / "labels.parquet"), **_record(out)}
    print(
        f"mosaic {args.cols}x{args.rows} scenes of {args.size_px}^2 px, overlap {args.overlap:.0%}, model {args.model}"
    )
    keys = list(next(iter(rows.values())))
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        print(
            f"| {name} | "
            + " | ".join(str(round(v, 3) if isinstance(v, float) else v) for v in row.values())
            + " |"
        )
    merged, alone = rows["cross-scene merge"], rows["--no-cross-scene-merge"]
    print(f"wall ratio merge/alone: {merged['wall_s'] / alone['wall_s']:.2f}; "
          f"recall merge - alone: {merged['recall'] - alone['recall']:+.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
