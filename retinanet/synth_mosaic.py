"""A synthetic mosaic: overlapping scenes cut from one painted ground, over one ground truth.

``write_mosaic`` paints one ground scene (``synth.write_scene``), cuts a grid
of ``cols x rows`` scenes from it that overlap their neighbours by
``overlap`` of a scene's side (flight strips overlap 10-60 %), and writes the
ground's objects once as ``labels.parquet``: an object in an overlap is one
object, however many scenes see it.  The scenes whose centre lies west of
the ground CRS's UTM zone are written in the neighbouring zone (resampled,
``nearest``), so one mosaic spans two UTM zones as real surveys do.

The ground is placed on the zone boundary when ``span_zones`` is set: its
west part lies in the zone west of ``cfg.crs``'s.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from pyproj import CRS, Transformer
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from pipeline.reading import ReadConfig, read_window
from retinanet.labels_io import SceneTruth, write_ground_truth
from retinanet.synth import CLASS_NAMES, SynthConfig, write_scene


@dataclass(frozen=True, slots=True)
class MosaicTruth:
    """What ``write_mosaic`` wrote.

    Attributes:
        scenes: the scene files, row-major.
        labels: the ground truth file (each object once, in the ground's CRS).
        num_objects: objects on the ground.
        crs_by_scene: each scene's CRS (EPSG code string).
    """

    scenes: tuple[Path, ...]
    labels: Path
    num_objects: int
    crs_by_scene: tuple[str, ...]


def _utm_zone(crs: CRS) -> int | None:
    code = crs.to_epsg() or 0
    return code - 32600 if 32601 <= code <= 32660 else None


def _boundary_origin(cfg: SynthConfig, ground_px: int) -> tuple[float, float]:
    """A top-left corner that puts the zone's western boundary through the ground's middle."""
    crs = CRS.from_user_input(cfg.crs)
    zone = _utm_zone(crs)
    if zone is None:
        raise ValueError(f"span_zones needs a UTM CRS (EPSG:326xx), got {cfg.crs}")
    west_lon = -180.0 + 6.0 * (zone - 1)
    to_lonlat = Transformer.from_crs(crs, "OGC:CRS84", always_xy=True)
    from_lonlat = Transformer.from_crs("OGC:CRS84", crs, always_xy=True)
    x_boundary, y_mid = cfg.origin_xy[0], cfg.origin_xy[1] - ground_px * cfg.gsd_m / 2
    for _ in range(4):  # the boundary meridian is curved in the zone's grid: meet it at the ground's middle
        _, lat = to_lonlat.transform(x_boundary, y_mid)
        x_boundary, _ = from_lonlat.transform(west_lon, lat)
    return float(x_boundary) - ground_px * cfg.gsd_m / 2, cfg.origin_xy[1]


def _write_cut(
    ground: Path, path: Path, window: tuple[int, int, int, int], truth: SceneTruth, src_crs: CRS, dst_crs: CRS
) -> None:
    """The window (col, row, width, height) of the ground as its own GeoTIFF, in ``dst_crs``."""
    col0, row0, w, h = window
    pixels = read_window(str(ground), window, ReadConfig(bands=(1, 2, 3))).pixels
    transform = truth.transform @ Affine.translation(col0, row0)
    if src_crs != dst_crs:
        left, top = transform.c, transform.f
        right, bottom = left + w * transform.a, top + h * transform.e
        transform, w, h = calculate_default_transform(src_crs, dst_crs, w, h, left, bottom, right, top)
        out = np.zeros((pixels.shape[0], h, w), pixels.dtype)
        reproject(
            pixels,
            out,
            src_transform=truth.transform @ Affine.translation(col0, row0),
            src_crs=src_crs,
            dst_transform=transform,
            dst_crs=dst_crs,
            resampling=Resampling.nearest,
        )
        pixels = out
    tiled = {"tiled": True, "blockxsize": 256, "blockysize": 256} if w >= 256 and h >= 256 else {}
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": 3,
        "dtype": "uint8",
        "crs": dst_crs.to_wkt(),
        "transform": transform,
        "compress": "deflate",
        "photometric": "RGB",
        **tiled,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)


def write_mosaic(
    out_dir: str | Path,
    *,
    cols: int = 3,
    rows: int = 2,
    scene_px: int = 1024,
    overlap: float = 0.3,
    cfg: SynthConfig = SynthConfig(),
    span_zones: bool = True,
    seed: int = 0,
) -> MosaicTruth:
    """Write ``cols x rows`` overlapping scenes of ``scene_px`` px and their one ground truth.

    Args:
        out_dir: folder for ``mosaic_RR_CC.tif`` and ``labels.parquet``.
        cols: scenes per row.
        rows: rows of scenes.
        scene_px: each scene's width and height (before reprojection).
        overlap: fraction of a scene's side shared with its neighbour (0 <= overlap < 1).
        cfg: the painter's settings (GSD, CRS, densities); its size is replaced.
        span_zones: put the ground across the western boundary of ``cfg.crs``'s
            UTM zone and write the scenes centred west of it in that zone.
        seed: the ground's seed.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(scene_px * (1 - overlap)))
    ground_px = scene_px + stride * (max(cols, rows) - 1)
    ground_cfg = replace(cfg, size_px=ground_px)
    if span_zones:
        ground_cfg = replace(ground_cfg, origin_xy=_boundary_origin(cfg, ground_px))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crs = CRS.from_user_input(cfg.crs)
    zone = _utm_zone(crs)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        ground = Path(tmp) / "ground.tif"
        truth = write_scene(ground, ground_cfg, seed)
        to_lonlat = Transformer.from_crs(crs, "OGC:CRS84", always_xy=True)
        scenes, crss = [], []
        for r in range(rows):
            for c in range(cols):
                window = (c * stride, r * stride, scene_px, scene_px)
                cx, cy = truth.transform @ (window[0] + scene_px / 2, window[1] + scene_px / 2)
                lon, _ = to_lonlat.transform(cx, cy)
                west = span_zones and zone is not None and lon < -180.0 + 6.0 * (zone - 1)
                dst = CRS.from_epsg(32600 + zone - 1) if west and zone else crs
                path = out / f"mosaic_{r:02d}_{c:02d}.tif"
                _write_cut(ground, path, window, truth, crs, dst)
                scenes.append(path)
                crss.append(dst.to_string())
        # the objects inside the mosaic's extent, once
        extent = (0, 0, cols * stride + scene_px - stride, rows * stride + scene_px - stride)
        inside = (truth.boxes_xyxy_px[:, 2] <= extent[2]) & (truth.boxes_xyxy_px[:, 3] <= extent[3])
        kept = SceneTruth(truth.path, truth.transform, truth.boxes_xyxy_px[inside], truth.labels[inside])
        labels = out / "labels.parquet"
        write_ground_truth(labels, [kept], crs, CLASS_NAMES)
    return MosaicTruth(tuple(scenes), labels, int(inside.sum()), tuple(crss))
