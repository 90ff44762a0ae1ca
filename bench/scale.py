"""Does the driver stay flat as the bucket grows?  Detect over N tiny scenes, N = 1,000 ... 100,000.

Each bucket is N hard links of one 64 x 64 px GeoTIFF (one tile each), so
the scenes cost the cluster almost nothing and what grows is the driver's
share: listing, claims, header batches, submitting reads and finishes,
writing each scene's file and manifest entry, the run record.  The model is
the blob stand-in (``standin:blobs``): a checkpoint would add the same
constant per tile on the actors and nothing on the driver.

The driver is this process: ``pipeline.ray_stages.run_detect`` on a private
local cluster (``ray.init(address="local")``), measured with
``resource.getrusage`` (CPU seconds of this process, all its threads) and the
peak resident set of this process read from ``/proc/self/status`` (VmHWM)
before and after each run (the first run's peak includes Ray's start).

``--size-px 1024`` gives each scene 441 tiles of 64 px, for the driver's
cost per tile rather than per scene.

Printed per N: wall seconds, scenes/s, driver CPU ms per scene and per tile, driver peak
RSS, seconds to the first tile, the run record's size (summary + line
segments) and how often the summary was written.  Benchmarks are not tests.

    .venv/bin/python -m bench.scale --scenes 1000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.job import DetectJob


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bucket(root: Path, num: int, size_px: int = 64) -> Path:
    """``num`` hard links of one ``size_px`` square, 3-band uint8 GeoTIFF with one bright square."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    folder = root / f"in-{num}"
    folder.mkdir(parents=True)
    first = folder / "s0000000.tif"
    pixels = np.zeros((3, size_px, size_px), np.uint8)
    pixels[0, 20:40, 20:40] = 255
    profile = {
        "driver": "GTiff",
        "width": size_px,
        "height": size_px,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
    }
    with rasterio.open(first, "w", transform=Affine(0.3, 0, 500000, 0, -0.3, 4000000), **profile) as dst:
        dst.write(pixels)
    for i in range(1, num):
        os.link(first, folder / f"s{i:07d}.tif")
    return folder


def _standin_job(src: Path, out: Path) -> DetectJob:
    """The benches' ``DetectJob``: the blob stand-in model, 64/16 px tiles, no progress bar."""
    from pipeline.job import DetectJob
    from pipeline.standin import StandinLoader
    from pipeline.tiling import TilingConfig

    return DetectJob(
        source=str(src),
        out_dir=str(out),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=64, overlap_px=16),
        progress=False,
    )


def _run_one(num: int, root: Path, size_px: int = 64) -> dict[str, float]:
    from pipeline.ray_stages import run_detect
    from pipeline.report import read_report

    src, out = _bucket(root, num, size_px), root / f"out-{num}"
    job = _standin_job(src, out)
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    record = run_detect(job, log=lambda m: None)
    wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    summary = read_report(out, with_scenes=False)
    record_bytes = sum(p.stat().st_size for p in out.glob("_run*"))
    assert record.counts()["done"] == num, record.counts()
    result = {
        "scenes": num,
        "size_px": size_px,
        "tiles": record.to_json()["num_tiles"],
        "wall_s": round(wall, 1),
        "scenes_per_s": round(num / wall, 1),
        "driver_cpu_ms_per_scene": round(1000 * cpu / num, 2),
        "driver_cpu_ms_per_tile": round(1000 * cpu / max(1, record.to_json()["num_tiles"]), 3),
        "driver_peak_rss_mb": round(_vm_hwm_mb(), 0),
        "first_tile_s": summary["phases_s"].get("first_tiles"),
        "record_mb": round(record_bytes / 2**20, 2),
        "summary_writes": record.num_summary_writes,
        "line_segments": record.num_segments,
    }
    shutil.rmtree(src)
    shutil.rmtree(out)
    return result


def main() -> None:
    """Run each bucket size in turn on one private cluster and print one JSON line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="1000,10000", help="Comma-separated bucket sizes.")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private cluster.")
    parser.add_argument(
        "--size-px", type=int, default=64, help="Scene edge; 64 px tiles: > 64 gives many tiles a scene."
    )
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="aerialdet-scale-"))
    try:
        for num in (int(n) for n in args.scenes.split(",")):
            print(json.dumps(_run_one(num, root, args.size_px)), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
