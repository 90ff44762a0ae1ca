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
(b) sequential baseline, what a plain script does: one process reads each
    window with rasterio, runs the checkpoint's model as loaded (fp32,
    torch's default threads, ``torch.no_grad``) one tile at a time, merges
    (cross-tile NMS) and writes GeoParquet; ``--baseline-precision`` gives
    it aerialdet's precision and channels_last instead;
(c) ``aerialdet detect`` end to end in a subprocess (private Ray cluster);
    Ray start-up and shut-down are reported apart from the run itself
    (``_run.json`` ``started_at``/``finished_at``); its CPU seconds are
    summed over the driver and every Ray process (``bench.memory.watch``).

FLOP/s: the model's FLOPs per tile are counted once
(``torch.utils.flop_counter``: convolutions and matrix products, 2 per
multiply-add) and the CPU's bf16 (and fp32) matrix-multiply FLOP/s are
measured in the same run (``torch.mm`` of 4096 x 4096, all threads, best of
5); (a) and (c) print the model FLOP/s they reach and its ratio to bf16
matmul.

CPU seconds are printed beside wall time because a shared machine's other
load inflates wall time: on a machine with N idle cores, wall ~ CPU / N for
the compute-bound parts.

Prints Mpx/s, km^2/h at the scene's GSD, process CPU seconds, and the ratios
(c)/(a) and (c)/(b).  Benchmarks are not tests.

    .venv/bin/python -m bench.throughput [--size-px 8192] [--backbone resnet18] [--precision auto]

On a GPU machine, ``--device cuda``: (a) and (b) run their model on the GPU,
(c) runs ``detect --gpus``, and the matmul reference is the GPU's fp16 and
bf16 ``torch.mm``; the device's name is printed with the figures.  A GPU
finishes one 8192^2 scene in about a second, so give it a bucket
(``--scenes 32``) for the run to outlast Ray's start-up::

    .venv/bin/python -m bench.throughput --device cuda --backbone resnet50 --scenes 32
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
    model,
    scene: Path,
    tiling: TilingConfig,
    batch: int,
    precision: Precision,
    repeats: int = 1,
    device: str = "cpu",
) -> tuple[float, float, int]:
    """(a): wall and CPU seconds of batched forward passes over tiles already in memory; detections.

    ``repeats``: the scene's tiles are run that many times (a bucket of copies).
    """
    info = open_scene(str(scene), ReadConfig())
    plan = tile_scene(str(scene), info.width_px, info.height_px, tiling)
    reads = list(read_tiles(str(scene), [plan[i] for i in range(len(plan))], ReadConfig()))
    images = np.stack([r.image for r in reads])
    tiles = [r.tile for r in reads]
    run = {"precision": precision, "device": device}
    detect_tiles(model, images[:batch], tiles[:batch], **run)  # warm-up (oneDNN kernels, CUDA context)
    found = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for lo in [lo for _ in range(repeats) for lo in range(0, len(tiles), batch)]:
        # detections come back as numpy: each call ends when the device is done
        found += sum(
            len(d) for d in detect_tiles(model, images[lo : lo + batch], tiles[lo : lo + batch], **run)
        )
    return time.perf_counter() - wall, time.process_time() - cpu, found


def sequential(
    model, scene: Path, tiling: TilingConfig, precision: Precision, out_dir: Path, device: str = "cpu"
) -> tuple[float, float]:
    """(b): read a window, run the model, next tile; then cross-tile NMS and GeoParquet. Wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    info = open_scene(str(scene), ReadConfig())
    plan = tile_scene(str(scene), info.width_px, info.height_px, tiling)
    found = []
    with torch.no_grad():
        for read in read_tiles(str(scene), [plan[i] for i in range(len(plan))], ReadConfig()):
            found += detect_tiles(model, read.image[None], [read.tile], precision=precision, device=device)
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


def model_flops_per_tile(model, tile_px: int, channels: int = 3) -> float:
    """FLOPs of one forward pass on one tile (2 per multiply-add; convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model([torch.zeros(channels, tile_px, tile_px)])
    return float(counter.get_total_flops())


def matmul_flops_per_s(dtype: torch.dtype, n: int = 4096, repeats: int = 5, device: str = "cpu") -> float:
    """Best-of-``repeats`` FLOP/s of ``torch.mm`` on ``n x n`` matrices in ``dtype``, all threads (or the GPU)."""
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _flops_line(label: str, flops: float, seconds: float, peak: tuple[str, float]) -> float:
    rate = flops / seconds
    print(
        f"    {label}: model {rate / 1e9:7.1f} GFLOP/s = {rate / peak[1]:.2f} of {peak[0]} matmul", flush=True
    )
    return rate / peak[1]


def bucket_of_copies(scene: Path, copies: int) -> Path:
    """``scene`` itself for one copy, else a cached folder of ``copies`` hard links to it.

    Hard links, not symbolic ones: detect resolves paths, so symbolic links
    to one file would be one scene.
    """
    if copies == 1:
        return scene
    folder = scene.parent / f"bucket_{scene.stem}_x{copies}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        copy = folder / f"copy_{i:03d}.tif"
        if copy.exists() and not os.path.samefile(copy, scene):
            copy.unlink()  # a link to a scene since regenerated
        if not copy.exists():
            os.link(scene, copy)
    return folder


def end_to_end(
    scene: Path,
    ckpt: Path,
    tiling: TilingConfig,
    batch: int,
    precision: str,
    out_dir: Path,
    gpus: bool = False,
) -> dict:
    """(c): ``aerialdet detect`` in a subprocess; total, Ray start-up, run, shut-down seconds and the report.

    ``scene`` may be a folder (a bucket of scenes).
    """
    cmd = [
        sys.executable, "-m", "jobs.detect", str(scene), "--model", str(ckpt), "--out", str(out_dir),
        "--tile-size-px", str(tiling.tile_size_px), "--overlap-px", str(tiling.overlap_px),
        "--batch-size", str(batch), "--precision", precision, "--no-progress", "--overwrite",
        "--gpus" if gpus else "--no-gpus",
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
        "phases": report.get("phases_s", {}),
        "cpu_s": sampled["cpu_s"],
        "cpu_top": sampled["cpu_top"],
    }


class _Run:
    """(a), (b) and (c) over ``args.scenes`` copies of one scene, printed as they finish."""

    def __init__(
        self, args, scene: Path, ckpt: Path, tiling: TilingConfig, flops: float, peak: tuple[str, float]
    ) -> None:
        self.args, self.scene, self.ckpt, self.tiling = args, scene, ckpt, tiling
        self.flops, self.peak = flops, peak  # model FLOPs of all tiles; (dtype, its matmul FLOP/s)
        self.px = args.size_px**2 * args.scenes

    def model_bound(self, model, precision: Precision, num_tiles: int) -> dict:
        a = self.args
        wall, cpu, found = model_bound(
            model, self.scene, self.tiling, a.batch_size, precision, a.scenes, device=a.device
        )
        out = _rate("(a) model bound, batched", wall, cpu, self.px, a.gsd_m)
        print(f"    detections/tile {found / (num_tiles * a.scenes):.0f}", flush=True)
        _flops_line("(a)", self.flops, wall, self.peak)
        return out

    def sequential(self, model, tmp: Path) -> dict:
        a = self.args
        plain = a.baseline_precision == "plain"
        base_model = load_dir(self.ckpt).model.to(a.device) if plain else model
        base_precision = Precision.FP32 if plain else resolve_precision(a.baseline_precision, a.device)
        runs = [
            sequential(base_model, self.scene, self.tiling, base_precision, tmp / f"seq{i}", a.device)
            for i in range(a.scenes)
        ]
        label = f"(b) sequential script, {'plain fp32' if plain else base_precision.value}"
        return _rate(label, sum(r[0] for r in runs), sum(r[1] for r in runs), self.px, a.gsd_m)

    def end_to_end(self, tmp: Path) -> dict[str, dict]:
        a = self.args
        source = bucket_of_copies(self.scene, a.scenes)
        gpus = a.device.startswith("cuda")
        e2e = end_to_end(source, self.ckpt, self.tiling, a.batch_size, a.precision, tmp / "e2e", gpus)
        out = {"c": _rate("(c) aerialdet detect, total", e2e["total"], e2e["cpu_s"], self.px, a.gsd_m)}
        out["c_run"] = _rate("    of which the run itself", e2e["run"], None, self.px, a.gsd_m)
        print(
            f"    Ray start-up {e2e['startup']:.1f} s, shut-down {e2e['shutdown']:.1f} s; actors {e2e['actors']}"
        )
        print(f"    run phases, s from its start: {e2e['phases']} (finished {e2e['run']:.1f})")
        print(f"    CPU s of the busiest processes: {e2e['cpu_top']}")
        _flops_line("(c) run", self.flops, e2e["run"], self.peak)
        return out


def main() -> None:
    """Parse flags, run (a), (b), (c), print the table and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-px", type=int, default=8192, help="scene width and height")
    ap.add_argument("--scenes", type=int, default=1, help="a bucket of this many copies of the scene")
    ap.add_argument("--gsd-m", type=float, default=0.3)
    ap.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--tile-size-px", type=int, default=1024)
    ap.add_argument("--overlap-px", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    ap.add_argument(
        "--baseline-precision",
        default="plain",
        choices=["plain", *(p.value for p in Precision)],
        help="(b)'s arithmetic: 'plain' runs the model as loaded (fp32, no channels_last), "
        "else this precision with aerialdet's channels_last layout",
    )
    ap.add_argument("--prior", type=float, default=0.06, help="classifier prior of the untrained head")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a trained checkpoint directory instead (e.g. make demo's demo_out/model/best): "
        "the detections per tile of a model that has learned the scene",
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="cache of scenes and checkpoints")
    ap.add_argument("--only", default="abc", help="which measurements to run, e.g. 'ac'")
    ap.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where (a), (b) and (c) run the model"
    )
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device on this machine; run it on a GPU machine")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    scene = scene_path(args.data_dir, args.size_px, args.gsd_m)
    ckpt = args.checkpoint or checkpoint(args.data_dir, args.backbone, args.tile_size_px, args.prior)
    tiling = TilingConfig(tile_size_px=args.tile_size_px, overlap_px=args.overlap_px)
    precision = resolve_precision(args.precision, args.device)
    num_tiles = len(tile_scene(str(scene), args.size_px, args.size_px, tiling))
    scene_px = args.size_px**2
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores"
    print(
        f"{args.scenes} x scene {args.size_px}x{args.size_px} px at {args.gsd_m} m ({scene_px * args.gsd_m**2 / 1e6:.2f} km2), "
        f"{num_tiles} tiles {args.tile_size_px}/{args.overlap_px} px, {args.checkpoint or args.backbone}, precision "
        f"{precision.value}, {device}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tile_flops = model_flops_per_tile(load_dir(ckpt).model, args.tile_size_px)
    dtypes = ("float16", "bfloat16", "float32") if args.device == "cuda" else ("bfloat16", "float32")
    peak = {d: matmul_flops_per_s(getattr(torch, d), device=args.device) for d in dtypes}
    rates = ", ".join(f"{d} {f / 1e9:.1f}" for d, f in peak.items())
    print(
        f"model {tile_flops / 1e9:.1f} GFLOP per {args.tile_size_px} px tile; torch.mm 4096^2 GFLOP/s: {rates}",
        flush=True,
    )
    model = prepare_model(load_dir(ckpt).model.to(args.device), args.device)
    reference = dtypes[0]  # the arithmetic --precision auto picks on this device
    run = _Run(args, scene, ckpt, tiling, tile_flops * num_tiles * args.scenes, (reference, peak[reference]))
    results: dict[str, dict] = {}
    if "a" in args.only:
        results["a"] = run.model_bound(model, precision, num_tiles)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        if "b" in args.only:
            results["b"] = run.sequential(model, Path(tmp))
        if "c" in args.only:
            results.update(run.end_to_end(Path(tmp)))
    for num, den in (("c", "a"), ("c_run", "a"), ("c", "b"), ("c_run", "b")):
        if num in results and den in results:
            print(f"throughput ({num})/({den}) = {results[num]['mpx_s'] / results[den]['mpx_s']:.2f}")
    print(f"load avg after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
