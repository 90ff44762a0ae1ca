"""A PNG of a scene with its detections drawn, from overviews or a decimated read.

The scene is read at most ``max_size_px`` on its long side with rasterio's
``out_shape`` (GDAL serves it from the overviews when the file has them,
otherwise decimates): the full-resolution raster is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw

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
    """
    out = Path(out_png)
    if not out.parent.is_dir():  # before any pixel is read
        raise FileNotFoundError(f"{out}: folder {out.parent} does not exist; create it first")
    with rasterio.open(scene_uri) as src:
        scale = min(1.0, max_size_px / max(src.width, src.height))
        h, w = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        use = [b for b in bands if b <= src.count] or [1]
        data = src.read(use, out_shape=(len(use), h, w)).astype(np.float32)
        sx, sy = w / src.width, h / src.height
    lo, hi = np.percentile(data, 1), np.percentile(data, 99)
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
