"""Synthetic georeferenced aerial scenes with ground truth.

``write_scenes(out_dir, ...)`` writes ``scene_XXX.tif`` (3-band uint8 RGB,
tiled GeoTIFF in a UTM CRS, with overviews) and ``labels.parquet`` (ground
truth in the detections' GeoParquet schema, score null).

A scene holds textured ground, a few roads, and objects of three classes at
realistic sizes for the ground sample distance ``gsd_m``:

=========  =================================  ==========================
class      size on the ground                 look
=========  =================================  ==========================
vehicle    4.5 x 2 m, either orientation      saturated paint + windshield
building   9-18 m a side                      grey/red roof, dark outline
tree       3-7 m crown                        green disc, dark centre
=========  =================================  ==========================

Some objects are placed on the seams of the default detect tiling (and one on
a four-tile corner) so tests and the demo exercise cross-tile merging.  Pixels
are written in bands of rows: a scene of any size costs a few MB of memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from retinanet.labels_io import SceneTruth, write_ground_truth

__all__ = ["CLASS_NAMES", "SceneTruth", "SynthConfig", "place_objects", "write_scene", "write_scenes"]

CLASS_NAMES: tuple[str, ...] = ("vehicle", "building", "tree")
_SIZES_M = {"vehicle": (4.5, 2.0), "building": (9.0, 18.0), "tree": (3.0, 7.0)}
# objects per square kilometre
_DENSITY_PER_KM2 = {"vehicle": 900.0, "building": 250.0, "tree": 700.0}
_ROWS_PER_WRITE = 256


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Parameters of the generator.

    Attributes:
        size_px: scene width and height.
        gsd_m: ground sample distance, metres per pixel.
        crs: a projected CRS (metres).
        origin_xy: CRS coordinates of the first scene's top-left corner.
        seam_tile_px: tile size whose seams get objects on them.
        seam_overlap_px: overlap of that tiling.
        density_scale: multiplies the per-km2 object densities.
    """

    size_px: int = 2048
    gsd_m: float = 0.3
    crs: str = "EPSG:32633"
    origin_xy: tuple[float, float] = (500000.0, 5000000.0)
    seam_tile_px: int = 1024
    seam_overlap_px: int = 128
    density_scale: float = 1.0


def place_objects(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Random non-overlapping boxes, some centred on tile seams."""
    size = cfg.size_px
    area_km2 = (size * cfg.gsd_m / 1000.0) ** 2
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[int] = []
    occupied = np.zeros((size // 4 + 1, size // 4 + 1), dtype=bool)  # 4 px occupancy grid

    def try_add(cx: float, cy: float, w: float, h: float, label: int) -> bool:
        x1, y1 = round(cx - w / 2), round(cy - h / 2)
        x2, y2 = x1 + max(2, round(w)), y1 + max(2, round(h))
        if x1 < 1 or y1 < 1 or x2 > size - 1 or y2 > size - 1:
            return False
        g = occupied[y1 // 4 : y2 // 4 + 2, x1 // 4 : x2 // 4 + 2]
        if g.any():
            return False
        occupied[max(0, y1 // 4 - 1) : y2 // 4 + 2, max(0, x1 // 4 - 1) : x2 // 4 + 2] = True
        boxes.append((x1, y1, x2, y2))
        labels.append(label)
        return True

    def object_size(name: str) -> tuple[float, float]:
        lo, hi = _SIZES_M[name]
        if name == "vehicle":
            w, h = lo / cfg.gsd_m, hi / cfg.gsd_m
            return (w, h) if rng.random() < 0.5 else (h, w)
        side = rng.uniform(lo, hi) / cfg.gsd_m
        if name == "building":
            return side, side * rng.uniform(0.7, 1.0)
        return side, side

    # seams: tile edges of the default tiling, and one four-tile corner
    stride = cfg.seam_tile_px - cfg.seam_overlap_px
    seams = [
        s for k in range(1, size // stride + 1) for s in (k * stride, (k - 1) * stride + cfg.seam_tile_px)
    ]
    seams = [s for s in seams if 20 < s < size - 20]
    if seams:
        corner = float(seams[0])
        try_add(corner, corner, *object_size("vehicle"), label=0)
        for _ in range(max(4, int(len(seams) * 6 * cfg.density_scale))):
            name = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
            seam = float(seams[int(rng.integers(len(seams)))])
            along = rng.uniform(20, size - 20)
            cx, cy = (seam, along) if rng.random() < 0.5 else (along, seam)
            try_add(cx, cy, *object_size(name), label=CLASS_NAMES.index(name))
    for label, name in enumerate(CLASS_NAMES):
        count = rng.poisson(_DENSITY_PER_KM2[name] * area_km2 * cfg.density_scale)
        for _ in range(count * 3):  # a few tries per wanted object
            if sum(1 for lab in labels if lab == label) >= count:
                break
            try_add(rng.uniform(0, size), rng.uniform(0, size), *object_size(name), label=label)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64)


def _ground(rows: np.ndarray, cols: np.ndarray, phases: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Textured ground for a block: smooth fields + pixel noise, (3, H, W) float."""
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    field = np.zeros(yy.shape)
    for k, (fx, fy, ph) in enumerate(phases):
        field += np.sin(xx * fx + yy * fy + ph) / (k + 1)
    base = np.stack([95 + 18 * field, 110 + 22 * field, 70 + 12 * field])
    return base + rng.normal(0, 6, size=base.shape)


def _paint(block: np.ndarray, row0: int, boxes: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> None:
    """Paint objects intersecting the block rows [row0, row0 + H) in place."""
    height = block.shape[1]
    hit = (boxes[:, 3] > row0) & (boxes[:, 1] < row0 + height)
    for (x1, y1, x2, y2), label, color in zip(boxes[hit].astype(int), labels[hit], colors[hit]):
        r1, r2 = max(y1, row0) - row0, min(y2, row0 + height) - row0
        ys, xs = np.mgrid[y1:y2, x1:x2]
        mask = np.ones(ys.shape, bool)
        if label == 2:  # tree: a disc
            cy, cx, rad = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (x2 - x1) / 2
            dist = np.hypot(ys - cy, xs - cx)
            mask = dist <= rad
            shade = 1.0 - 0.35 * (dist <= rad * 0.45)
        elif label == 1:  # building: roof with a dark outline
            shade = np.ones(ys.shape)
            shade[[0, -1], :] = 0.45
            shade[:, [0, -1]] = 0.45
        else:  # vehicle: body + darker windshield band
            shade = np.ones(ys.shape)
            if x2 - x1 >= y2 - y1:
                shade[:, (x2 - x1) // 4 : (x2 - x1) // 4 + 2] = 0.5
            else:
                shade[(y2 - y1) // 4 : (y2 - y1) // 4 + 2, :] = 0.5
        sel = slice(r1 + row0 - y1, r2 + row0 - y1)
        region = block[:, r1:r2, x1:x2]
        m = mask[sel]
        painted = color[:, None, None] * shade[sel][None]
        region[:, m] = painted[:, m]


def _colors(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    out = np.zeros((len(labels), 3))
    for i, label in enumerate(labels):
        if label == 0:
            palette = np.array([[230, 40, 40], [240, 240, 245], [40, 70, 220], [245, 200, 30], [25, 25, 30]])
            out[i] = palette[rng.integers(len(palette))]
        elif label == 1:
            out[i] = [175, 75, 60] if rng.random() < 0.5 else [185, 185, 190]
        else:
            out[i] = [40 + rng.integers(20), 120 + rng.integers(40), 40 + rng.integers(20)]
    return out


def write_scene(
    path: str | Path, cfg: SynthConfig, seed: int, origin_xy: tuple[float, float] | None = None
) -> SceneTruth:
    """Write one synthetic scene and return its ground truth.

    Args:
        path: GeoTIFF to write.
        cfg: generator parameters.
        seed: random seed; the same seed gives the same scene.
        origin_xy: top-left corner in CRS units (default ``cfg.origin_xy``).
    """
    rng = np.random.default_rng(seed)
    boxes, labels = place_objects(rng, cfg)
    colors = _colors(rng, labels)
    x0, y0 = origin_xy or cfg.origin_xy
    transform = Affine(cfg.gsd_m, 0.0, x0, 0.0, -cfg.gsd_m, y0)
    phases = np.stack(
        [rng.uniform(0.002, 0.02, 4), rng.uniform(0.002, 0.02, 4), rng.uniform(0, 2 * math.pi, 4)], 1
    )
    roads_h = rng.integers(0, cfg.size_px, 2)
    roads_v = rng.integers(0, cfg.size_px, 2)
    road_w = max(3, int(7 / cfg.gsd_m))
    profile = {
        "driver": "GTiff",
        "width": cfg.size_px,
        "height": cfg.size_px,
        "count": 3,
        "dtype": "uint8",
        "crs": CRS.from_user_input(cfg.crs).to_wkt(),
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = np.arange(cfg.size_px)
    with rasterio.open(out, "w", **profile) as dst:
        for row0 in range(0, cfg.size_px, _ROWS_PER_WRITE):
            height = min(_ROWS_PER_WRITE, cfg.size_px - row0)
            rows = np.arange(row0, row0 + height)
            block = _ground(rows, cols, phases, np.random.default_rng([seed, row0]))
            for r in roads_h:
                lo, hi = max(r - road_w // 2, row0), min(r + road_w // 2, row0 + height)
                if lo < hi:
                    block[:, lo - row0 : hi - row0, :] = np.array([118, 118, 122])[:, None, None]
            for c in roads_v:
                block[:, :, max(0, c - road_w // 2) : c + road_w // 2] = np.array([118, 118, 122])[
                    :, None, None
                ]
            _paint(block, row0, boxes, labels, colors)
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=Window(0, row0, cfg.size_px, height))
        dst.build_overviews([2, 4, 8, 16], Resampling.average)
    return SceneTruth(out, transform, boxes, labels)


def write_scenes(
    out_dir: str | Path, *, num_scenes: int = 2, cfg: SynthConfig = SynthConfig(), seed: int = 0
) -> list[SceneTruth]:
    """Write ``num_scenes`` scenes side by side plus ``labels.parquet``.

    Args:
        out_dir: directory for ``scene_XXX.tif`` and ``labels.parquet``.
        num_scenes: how many scenes.
        cfg: generator parameters.
        seed: base seed (scene i uses ``seed * 1000 + i``).

    Returns:
        Ground truth per scene.

    Example:
        >>> truths = write_scenes("/tmp/synth", num_scenes=1, cfg=SynthConfig(size_px=512))  # doctest: +SKIP
    """
    out = Path(out_dir)
    truths = []
    extent_m = cfg.size_px * cfg.gsd_m
    for i in range(num_scenes):
        origin = (cfg.origin_xy[0] + i * (extent_m + 100.0), cfg.origin_xy[1])
        truths.append(write_scene(out / f"scene_{i:03d}.tif", cfg, seed * 1000 + i, origin))
    write_ground_truth(out / "labels.parquet", truths, CRS.from_user_input(cfg.crs), CLASS_NAMES)
    return truths
