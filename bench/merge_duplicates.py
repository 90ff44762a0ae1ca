"""How many duplicates does each cross-tile merge strategy leave?

A synthetic 8192 x 8192 px scene (objects placed by ``retinanet.synth``,
including on tile seams), tiled 1024/128 px.  The model stand-in is a perfect
detector: every tile reports each object clipped to the tile (so objects on a
seam come back truncated from one tile and whole from another, as from a real
model).  Prints, per strategy, the boxes kept, duplicates (boxes matched to an
object already matched), misses, and the merge time.

    .venv/bin/python bench/merge_duplicates.py [--size-px 8192]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.georef import clip_boxes_px, scene_to_tile_px
from pipeline.merging import MergeConfig, MergeStrategy, merge_scene
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import TileDetections
from retinanet.synth import SynthConfig, place_objects


def tile_views(tiles, boxes, labels):
    out = []
    for t in tiles:
        local = scene_to_tile_px(boxes, t.col_off_px, t.row_off_px)
        clipped, keep = clip_boxes_px(local, t.valid_width_px, t.valid_height_px)
        # scores: whole boxes score a little higher than truncated ones, as a model's would
        area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        full = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        scores = 0.5 + 0.4 * area / full
        out.append(TileDetections(t, clipped[keep], scores[keep], labels[keep]))
    return out


def count(merged_boxes, gt, chunk=512):
    """(duplicates, misses): match each kept box to the object it overlaps most (IoS >= 0.5).

    Compares each chunk of kept boxes only with the objects in x-reach (objects sorted by x1).
    """
    if len(merged_boxes) == 0:
        return 0, len(gt)
    order = np.argsort(gt[:, 0])
    g = gt[order]
    max_w = float((g[:, 2] - g[:, 0]).max())
    m = merged_boxes[np.argsort(merged_boxes[:, 0])]
    best = np.full(len(m), -1)
    for start in range(0, len(m), chunk):
        mine = m[start : start + chunk]
        lo = np.searchsorted(g[:, 0], mine[:, 0].min() - max_w)
        hi = np.searchsorted(g[:, 0], mine[:, 2].max(), side="right")
        cand = g[lo:hi]
        lt = np.maximum(mine[:, None, :2], cand[None, :, :2])
        rb = np.minimum(mine[:, None, 2:], cand[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        ios = inter / (mine[:, 2:] - mine[:, :2]).prod(-1)[:, None]
        if ios.shape[1]:
            hit = ios.max(1) >= 0.5
            best[start : start + chunk] = np.where(hit, order[lo + ios.argmax(1)], -1)
    objs = best[best >= 0]
    dups = len(objs) - len(np.unique(objs)) + int((best < 0).sum())
    return int(dups), int(len(gt) - len(np.unique(objs)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-px", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = SynthConfig(size_px=args.size_px)
    boxes, labels = place_objects(np.random.default_rng(args.seed), cfg)
    tiles = tile_scene("bench", args.size_px, args.size_px, TilingConfig(tile_size_px=1024, overlap_px=128))
    views = tile_views(tiles, boxes, labels)
    print(
        f"scene {args.size_px}x{args.size_px} px, {len(boxes)} objects, {len(tiles)} tiles, "
        f"{sum(len(v) for v in views)} tile detections"
    )
    import torchvision.ops  # noqa: F401  merging loads torch on first NMS: keep the import out of the timings

    print(f"{'strategy':<10}{'kept':>8}{'duplicates':>12}{'missed':>8}{'merge ms':>10}")
    for strategy in (MergeStrategy.IOU, MergeStrategy.EDGE, MergeStrategy.CORE):
        t0 = time.perf_counter()
        merged = merge_scene(
            views,
            MergeConfig(strategy=strategy, ios_threshold=1.0 if strategy is MergeStrategy.IOU else 0.7),
        )
        ms = (time.perf_counter() - t0) * 1000
        dups, missed = count(merged.boxes_xyxy_px, boxes)
        print(f"{strategy.value:<10}{len(merged):>8}{dups:>12}{missed:>8}{ms:>10.1f}")


if __name__ == "__main__":
    main()
