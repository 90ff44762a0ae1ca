"""A PNG of a scene with its detections drawn, from overviews or a decimated read.

The scene is read through ``pipeline.reading`` (the driver allow-list, the
S3 endpoint from ``AWS_ENDPOINT_URL``, the nodata rule of detect) at most
``max_size_px`` on its long side (``read_overview``: GDAL serves it from the
overviews when the file has them, otherwise decimates): the full-resolution
raster is never read.  It opens with the driver of its extension (a ``.tif``
with GTiff only, a ``.jp2`` with JP2OpenJPEG), never as a VRT.  The contrast
stretch (1st to 99th percentile) counts only the pixels that have a value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.gdal_config import extension_drivers
from pipeline.reading import ReadConfig, read_header, read_overview

PALETTE = [(255, 64, 64), (64, 160, 255), (255, 210, 0), (0, 220, 120), (220, 90, 255), (255, 140, 0)]


def render_quicklook(
    scene_uri: str,
    boxes_xyxy_px: np.ndarray,
    labels: list[str],
    scores: np.ndarray,
    out_png: str | Path,
    *,
    class_names: list[str] | None = None,
    max_size_px: int = 1024,
    bands: tuple[int, ...] = (1, 2, 3),
) -> Path:
    """Draw detections over a downsampled view of the scene.

    Args:
        scene_uri: the scene (local path or s3://).
        boxes_xyxy_px: ``[N, 4]`` scene px.
        labels: N class names.
        scores: N scores.
        out_png: where to write the PNG; its folder must exist (none is created).
        class_names: colour order (default: sorted labels).
        max_size_px: long side of the picture.
        bands: bands shown as RGB (1 band is shown grey).

    Returns:
        ``out_png`` as a Path.

    Raises:
        FileNotFoundError: when the folder of ``out_png`` does not exist.
        InvalidSceneError: the scene does not open with its extension's driver (or is a VRT).
        TileReadError: its pixels cannot be read.
    """
    out = Path(out_png)
    if not out.parent.is_dir():  # before any pixel is read
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist; create it first")
    config = ReadConfig(bands=(1,), drivers=extension_drivers(scene_uri))
    header = read_header(scene_uri, config)
    scale = min(1.0, max_size_px / max(header.width_px, header.height_px))
    h, w = max(1, round(header.height_px * scale)), max(1, round(header.width_px * scale))
    use = tuple(b for b in bands if b <= header.count) or (1,)
    read = read_overview(scene_uri, (h, w), ReadConfig(bands=use, drivers=config.drivers))
    data = read.pixels.astype(np.float32)
    sx, sy = w / header.width_px, h / header.height_px
    values = data[:, read.valid] if read.valid.any() else np.zeros(1, np.float32)
    lo, hi = (float(v) for v in np.percentile(values, (1, 99)))
    rgb = ((data - lo) / max(hi - lo, 1e-6) * 255).clip(0, 255).astype(np.uint8)
    rgb = np.repeat(rgb[:1], 3, axis=0) if rgb.shape[0] < 3 else rgb[:3]
    image = Image.fromarray(rgb.transpose(1, 2, 0), "RGB")
    draw = ImageDraw.Draw(image)
    names = class_names or sorted(set(labels))
    for box, label, score in zip(np.asarray(boxes_xyxy_px, float).reshape(-1, 4), labels, scores):
        color = PALETTE[names.index(label) % len(PALETTE)] if label in names else (255, 255, 255)
        x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        draw.rectangle([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], outline=color, width=2)
        if x2 - x1 > 12:
            draw.text((x1 + 1, max(0, y1 - 10)), f"{label} {score:.2f}", fill=color)
    for i, name in enumerate(names):  # legend
        draw.rectangle([4, 4 + 14 * i, 14, 14 + 14 * i], fill=PALETTE[i % len(PALETTE)])
        draw.text((18, 3 + 14 * i), name, fill=(255, 255, 255))
    image.save(out)
    return out
