"""How close does ``aerialdet detect`` come to the model's own speed, and to a plain script?

One synthetic scene (``retinanet.synth``, cached under ``--data-dir``) and one
train-free checkpoint (an untrained RetinaNet saved with ``save_dir``).  An
untrained head scores every anchor at about its prior, so with the default
``score_thresh`` 0.05 and prior 0.01 nothing would pass and NMS would do no
work; the checkpoint is built with ``prior_probability`` just above the score
threshold (``--prior``, default 0.06) so the random spread of the head's
logits lets a realistic number of candidates through per tile (printed as
"detections/tile").  Three measurements, all over the same scene pixels:

(a) model bound: every tile already in memory (uint8), batched forward
    passes (``detect_tiles``) at ``--precision``, torch on all cores;
(b) sequential baseline: one process reads each window with rasterio, runs
    the model one tile at a time, merges (cross-tile NMS) and writes
    GeoParquet: what a plain script does;
(c) ``aerialdet detect`` end to end in a subprocess (private Ray cluster);
    Ray start-up and shut-down are reported apart from the run itself
    (``_run.json`` ``started_at``/``finished_at``); its CPU seconds are
    summed over the driver and every Ray process (``bench.memory.watch``).

CPU seconds are printed beside wall time because a shared machine's other
load inflates wall time: on a machine with N idle cores, wall ~ CPU / N for
the compute-bound parts.

Prints Mpx/s, km^2/h at the scene's GSD, process CPU seconds, and the ratios
(c)/(a) and (c)/(b).  Benchmarks are not tests.

    .venv/bin/python -m bench.throughput [--size-px 8192] [--backbone resnet18] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pyproj import CRS

from bench.memory import DEFAULT_DATA, scene_path, watch
from pipeline.detection import Precision, detect_tiles, prepare_model, resolve_precision
from pipeline.merging import MergeConfig, merge_scene
from pipeline.output import write_scene_detections
from pipeline.reading import ReadConfig, open_scene, read_tiles
from pipeline.tiling import TilingConfig, tile_scene
from retinanet import ModelConfig, build_model
from retinanet.checkpoint import load_dir, save_dir
from retinanet.synth import CLASS_NAMES


def checkpoint(data_dir: Path, backbone: str, tile_px: int, prior: float) -> Path:
    """An untrained RetinaNet checkpoint (cached), prior just above the score threshold."""
    path = data_dir / f"ckpt_{backbone}_{tile_px}px_prior{prior}"
    if not path.exists():
        torch.manual_seed(0)
        config = ModelConfig(
            backbone=backbone, class_names=CLASS_NAMES, tile_size_px=tile_px, prior_probability=prior
        )
        save_dir(path, build_model(config), config)
    return path


def _rate(label: str, seconds: float, cpu_s: float | None, scene_px: int, gsd_m: float) -> dict:
    mpx_s = scene_px / seconds / 1e6
    km2_h = scene_px * gsd_m**2 / 1e6 / seconds * 3600
    cpu = f", cpu {cpu_s:7.1f} s" if cpu_s is not None else ""
    print(f"{label:<34} {seconds:8.1f} s  {mpx_s:7.3f} Mpx/s  {km2_h:8.2f} km2/h{cpu}", flush=True)
    return {"seconds": round(seconds, 2), "mpx_s": round(mpx_s, 4), "km2_h": round(km2_h, 3)}


def model_bound(
    model, scene: Path, tiling: TilingConfig, batch: int, precision: Precision
) -> tuple[float, float, int]:
    """(a): wall and CPU seconds of batched forward passes over tiles already in memory; detections."""
    info = open_scene(str(scene), ReadConfig())
    plan = tile_scene(str(scene), info.width_px, info.height_px, tiling)
    reads = list(read_tiles(str(scene), [plan[i] for i in range(len(plan))], ReadConfig()))
    images = np.stack([r.image for r in reads])
    tiles = [r.tile for r in reads]
    detect_tiles(model, images[:1], tiles[:1], precision=precision)  # warm-up (oneDNN kernels)
    found = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, len(tiles), batch):
        found += sum(
            len(d)
            for d in detect_tiles(model, images[lo : lo + batch], tiles[lo : lo + batch], precision=precision)
        )
    return time.perf_counter() - wall, time.process_time() - cpu, found


def sequential(
    model, scene: Path, tiling: TilingConfig, precision: Precision, out_dir: Path
) -> tuple[float, float]:
    """(b): read a window, run the model, next tile; then cross-tile NMS and GeoParquet. Wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    info = open_scene(str(scene), ReadConfig())
    plan = tile_scene(str(scene), info.width_px, info.height_px, tiling)
    found = []
    for read in read_tiles(str(scene), [plan[i] for i in range(len(plan))], ReadConfig()):
        found += detect_tiles(model, read.image[None], [read.tile], precision=precision)
    merged = merge_scene(found, MergeConfig())
    write_scene_detections(
        str(out_dir),
        info,
        merged,
        class_names=CLASS_NAMES,
        out_crs=CRS.from_wkt(info.crs_wkt),
        model_id="bench",
        run_id="bench",
    )
    return time.perf_counter() - wall, time.process_time() - cpu


def end_to_end(
    scene: Path, ckpt: Path, tiling: TilingConfig, batch: int, precision: str, out_dir: Path
) -> dict:
    """(c): ``aerialdet detect`` in a subprocess; total, Ray start-up, run, shut-down seconds and the report."""
    cmd = [
        sys.executable, "-m", "jobs.detect", str(scene), "--model", str(ckpt), "--out", str(out_dir),
        "--tile-size-px", str(tiling.tile_size_px), "--overlap-px", str(tiling.overlap_px),
        "--batch-size", str(batch), "--precision", precision, "--no-progress", "--overwrite",
    ]  # fmt: skip
    launched = time.time()
    sampled = watch(cmd, interval_s=0.25)  # CPU seconds of the driver and every Ray process
    ended = time.time()
    report = json.loads((out_dir / "_run.json").read_text())
    return {
        "total": ended - launched,
        "startup": report["started_at"] - launched,
        "run": report["finished_at"] - report["started_at"],
        "shutdown": ended - report["finished_at"],
        "actors": report["config"].get("model_actors"),
        "cpu_s": sampled["cpu_s"],
    }


def main() -> None:
    """Parse flags, run (a), (b), (c), print the table and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-px", type=int, default=8192, help="scene width and height")
    ap.add_argument("--gsd-m", type=float, default=0.3)
    ap.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--tile-size-px", type=int, default=1024)
    ap.add_argument("--overlap-px", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    ap.add_argument("--prior", type=float, default=0.06, help="classifier prior of the untrained head")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="cache of scenes and checkpoints")
    ap.add_argument("--only", default="abc", help="which measurements to run, e.g. 'ac'")
    args = ap.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    scene = scene_path(args.data_dir, args.size_px, args.gsd_m)
    ckpt = checkpoint(args.data_dir, args.backbone, args.tile_size_px, args.prior)
    tiling = TilingConfig(tile_size_px=args.tile_size_px, overlap_px=args.overlap_px)
    precision = resolve_precision(args.precision, "cpu")
    num_tiles = len(tile_scene(str(scene), args.size_px, args.size_px, tiling))
    scene_px = args.size_px**2
    print(
        f"scene {args.size_px}x{args.size_px} px at {args.gsd_m} m ({scene_px * args.gsd_m**2 / 1e6:.2f} km2), "
        f"{num_tiles} tiles {args.tile_size_px}/{args.overlap_px} px, {args.backbone}, precision "
        f"{precision.value}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    model = prepare_model(load_dir(ckpt).model, "cpu")
    results: dict[str, dict] = {}
    if "a" in args.only:
        wall, cpu, found = model_bound(model, scene, tiling, args.batch_size, precision)
        results["a"] = _rate("(a) model bound, batched", wall, cpu, scene_px, args.gsd_m)
        print(f"    detections/tile {found / num_tiles:.0f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        if "b" in args.only:
            wall, cpu = sequential(model, scene, tiling, precision, Path(tmp) / "seq")
            results["b"] = _rate("(b) sequential script", wall, cpu, scene_px, args.gsd_m)
        if "c" in args.only:
            e2e = end_to_end(scene, ckpt, tiling, args.batch_size, args.precision, Path(tmp) / "e2e")
            results["c"] = _rate(
                "(c) aerialdet detect, total", e2e["total"], e2e["cpu_s"], scene_px, args.gsd_m
            )
            results["c_run"] = _rate("    of which the run itself", e2e["run"], None, scene_px, args.gsd_m)
            print(
                f"    Ray start-up {e2e['startup']:.1f} s, shut-down {e2e['shutdown']:.1f} s; actors {e2e['actors']}"
            )
    for num, den in (("c", "a"), ("c_run", "a"), ("c", "b"), ("c_run", "b")):
        if num in results and den in results:
            print(f"throughput ({num})/({den}) = {results[num]['mpx_s'] / results[den]['mpx_s']:.2f}")
    print(f"load avg after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
