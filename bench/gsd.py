"""Detect at the model's GSD vs native resolution on one bucket of mixed GSDs (issue 21).

One bucket holds synthetic scenes of the same kind (``retinanet.synth``: the
same ground extent, objects at their sizes in metres) painted at 0.075, 0.15,
0.3, 0.6 and 1.2 m.  A model trained at 0.3 m (``--model``, default
``demo_out/model``: ``make demo``'s resnet18, trained on 0.3 m synth scenes; its
``meta.json`` predates ``gsd_m``, so ``--model-gsd-m 0.3`` says it) detects the
whole bucket twice, in one run each: read at the model's GSD, and with
``--native-resolution`` (``ResolutionConfig()``).  Printed per scene: AP50
(every detection kept, IoU 0.5, scene pixels against the synth truth), the
read factor and the pixels inferred (from the run record).  Then the finest
scene alone, once each way, for its km^2/h (the scene's seconds in its run
record: open to recorded, so the cluster's start is not in it).

The driver is this process on a private local cluster, as ``bench/scale.py``.
Benchmarks are not tests.

    .venv/bin/python -m bench.gsd --extent-m 307.2 --model demo_out/model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

GSDS_M = (0.075, 0.15, 0.3, 0.6, 1.2)


def _bucket(
    root: Path, extent_m: float, seed: int, gsds_m: tuple[float, ...] = GSDS_M, name: str = "bucket"
) -> dict[str, Any]:
    """One scene per GSD of ``gsds_m``, ``extent_m`` a side, in ``root/name``; their truth by file name."""
    from retinanet.synth import SynthConfig, write_scene

    folder = root / name
    truths = {}
    for i, gsd in enumerate(gsds_m):
        cfg = SynthConfig(size_px=round(extent_m / gsd), gsd_m=gsd)
        name = f"gsd_{gsd:.3f}.tif"
        truths[name] = write_scene(
            folder / name, cfg, seed * 1000 + i, (500000.0 + i * (extent_m + 100), 5e6)
        )
    return {"folder": folder, "truths": truths}


def _detect(
    src: Path, out: Path, model: Any, resolution: Any, tile_px: int, overlap_px: int
) -> dict[str, Any]:
    from pipeline.job import DetectJob
    from pipeline.ray_stages import run_detect
    from pipeline.report import read_report
    from pipeline.tiling import TilingConfig

    job = DetectJob(
        source=str(src),
        out_dir=str(out),
        model=model,
        tiling=TilingConfig(tile_size_px=tile_px, overlap_px=overlap_px),
        resolution=resolution,
        min_score=0.0,  # every detection: AP over the whole ranking
        progress=False,
    )
    record = run_detect(job, log=lambda m: print(m, flush=True))
    assert record.counts()["failed"] == 0, record.counts()
    return {Path(line["uri"]).name: line for line in read_report(out)["scenes"]}


def _ap50(out: Path, truths: dict[str, Any], class_names: tuple[str, ...]) -> dict[str, float]:
    import geopandas as gpd
    import numpy as np

    from retinanet.evaluate import ImageBoxes, evaluate_detections

    rows = gpd.read_parquet(out)
    if rows.empty:  # nothing found: an empty output has no pixel columns
        return dict.fromkeys(truths, 0.0)
    result = {}
    for name, truth in truths.items():
        mine = rows[[Path(s).name == name for s in rows["scene"]]]
        boxes = mine[["xmin_px", "ymin_px", "xmax_px", "ymax_px"]].to_numpy(np.float64)
        found = ImageBoxes(boxes, mine["label_id"].to_numpy(np.int64), mine["score"].to_numpy(np.float64))
        gt = ImageBoxes(np.asarray(truth.boxes_xyxy_px, np.float64), np.asarray(truth.labels, np.int64))
        result[name] = evaluate_detections([gt], [found], class_names)["overall"]["ap50"]
    return result


def _km2_per_h(line: dict[str, Any], extent_m: float) -> float:
    return round((extent_m / 1000) ** 2 / (line["seconds"] / 3600), 3)


def main() -> None:
    """Write the bucket, detect it both ways, print one JSON line per scene and one for the timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_out/model", help="Checkpoint or run dir trained at 0.3 m.")
    parser.add_argument("--model-gsd-m", type=float, default=0.3, help="Its GSD when meta.json has none.")
    parser.add_argument("--extent-m", type=float, default=307.2, help="Ground side of every scene, metres.")
    parser.add_argument(
        "--tile-size-px", type=int, default=256, help="Tile edge (the model's training tile)."
    )
    parser.add_argument("--overlap-px", type=int, default=64, help="Tile overlap.")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private cluster.")
    parser.add_argument("--seed", type=int, default=7, help="Synth seed.")
    args = parser.parse_args()

    import ray

    from pipeline.resolution import ResolutionConfig
    from retinanet.predictor import CheckpointLoader

    loader = CheckpointLoader.open(args.model)
    model_gsd = loader.info.gsd_m or args.model_gsd_m
    ways = {"model_gsd": ResolutionConfig(model_gsd, source="bench"), "native": ResolutionConfig()}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = Path(tempfile.mkdtemp(prefix="aerialdet-gsd-"))
    try:
        bucket = _bucket(root, args.extent_m, args.seed)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        lines, aps = {}, {}
        for way, resolution in ways.items():
            out = root / f"out-{way}"
            lines[way] = _detect(
                bucket["folder"], out, loader, resolution, args.tile_size_px, args.overlap_px
            )
            aps[way] = _ap50(out, bucket["truths"], loader.info.class_names)
        for name in bucket["truths"]:
            model_line, native_line = lines["model_gsd"][name], lines["native"][name]
            print(
                json.dumps(
                    {
                        "scene": name,
                        "native_gsd_m": model_line["native_gsd_m"],
                        "ap50_model_gsd": round(aps["model_gsd"][name], 4),
                        "ap50_native": round(aps["native"][name], 4),
                        "read_factor": model_line["read_factor"],
                        "px_inferred_model_gsd": model_line["num_px_inferred"],
                        "px_inferred_native": native_line["num_px_inferred"],
                        "native_px": round(args.extent_m / model_line["native_gsd_m"]) ** 2,
                    }
                ),
                flush=True,
            )
        finest = root / "finest"
        finest.mkdir()
        first = min(bucket["truths"])  # gsd_0.075.tif
        os.link(bucket["folder"] / first, finest / first)
        timing = {}
        for way, resolution in ways.items():
            line = _detect(
                finest, root / f"alone-{way}", loader, resolution, args.tile_size_px, args.overlap_px
            )
            timing[way] = {
                "seconds": line[first]["seconds"],
                "km2_per_h": _km2_per_h(line[first], args.extent_m),
            }
        print(json.dumps({"scene": first, "alone": timing}), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
