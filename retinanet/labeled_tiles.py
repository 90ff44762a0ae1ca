"""Labeled tiles -> one ``(image, target)`` Dataset, whatever the label format.

Readers (``read_labels`` picks one by extension):

=====================  ===================================================
format                 what it is
=====================  ===================================================
``.json``              COCO: images, annotations (bbox x, y, w, h), categories
``.xml`` / folder      Pascal VOC: one XML per image
``.csv``               DeepForest: ``image_path,xmin,ymin,xmax,ymax,label``
``.parquet``/``.gpkg`` label boxes in CRS units over GeoTIFF scenes (the
                       ``scene`` column, e.g. ``aerialdet synth``'s
                       ``labels.parquet``), chipped into tiles on the fly
=====================  ===================================================

Images are PNG/JPEG/GeoTIFF chips (paths relative to the label file).  Bad
rows (degenerate boxes, boxes outside their image, unknown images, unknown
classes) are not silently dropped: each becomes a ``LabelIssue`` naming the
file and row, returned with the dataset, and the row is left out.

Every sample is an ``(image float32 [C, H, W] raw units, target)`` pair with
``target = {"boxes": float32 [N, 4] xyxy px, "labels": int64 [N]}``, the
form torchvision's detection models train on.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelIssue:
    """A label row that was left out, and why."""

    file: str
    row: int | str
    message: str

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}: {self.message}"


@dataclass(frozen=True)
class LabeledImage:
    """One training image: a chip file, or a window of a scene.

    Attributes:
        path: image or scene file.
        window: (col_off, row_off, width, height) px of a scene, or None for the whole file.
        boxes_xyxy_px: float32 ``[N, 4]`` in the image's (window's) pixels.
        labels: int64 ``[N]`` class ids.
        group: split key (the scene or image), so tiles of one scene stay on one side.
    """

    path: str
    window: tuple[int, int, int, int] | None
    boxes_xyxy_px: np.ndarray
    labels: np.ndarray
    group: str


@dataclass
class LabelSet:
    """What ``read_labels`` returns."""

    images: list[LabeledImage]
    class_names: tuple[str, ...]
    issues: list[LabelIssue]


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return src.height, src.width
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


class _Builder:
    """Collects boxes per image, validating each row."""

    def __init__(self, label_file: Path, class_names: Sequence[str] | None) -> None:
        self.file = str(label_file)
        self.fixed_classes = class_names is not None
        self.class_names: list[str] = list(class_names or [])
        self.issues: list[LabelIssue] = []
        self.boxes: dict[str, list[tuple[float, float, float, float, int]]] = {}
        self.sizes: dict[str, tuple[int, int] | None] = {}

    def image(self, path: Path, row: int | str) -> bool:
        key = str(path)
        if key not in self.sizes:
            if not path.is_file():
                self.sizes[key] = None
            else:
                try:
                    self.sizes[key] = _image_size(path)
                except Exception as exc:
                    self.issues.append(LabelIssue(self.file, row, f"image {path} cannot be read: {exc}"))
                    self.sizes[key] = None
                    return False
            if self.sizes[key] is not None:
                self.boxes.setdefault(key, [])
        if self.sizes[key] is None:
            self.issues.append(LabelIssue(self.file, row, f"unknown image {path} (file not found)"))
            return False
        return True

    def class_id(self, name: str, row: int | str) -> int | None:
        if name not in self.class_names:
            if self.fixed_classes:
                self.issues.append(
                    LabelIssue(self.file, row, f"unknown class {name!r}; known: {self.class_names}")
                )
                return None
            self.class_names.append(name)
        return self.class_names.index(name)

    def add(self, path: Path, row: int | str, box: Sequence[float], name: str) -> None:
        if not self.image(path, row):
            return
        label = self.class_id(str(name), row)
        if label is None:
            return
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            self.issues.append(LabelIssue(self.file, row, f"box {list(box)} is not four numbers"))
            return
        if not (x2 > x1 and y2 > y1):
            self.issues.append(
                LabelIssue(
                    self.file, row, f"degenerate box (xmin, ymin, xmax, ymax)=({x1}, {y1}, {x2}, {y2})"
                )
            )
            return
        height, width = self.sizes[str(path)]  # type: ignore[misc]
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            self.issues.append(
                LabelIssue(
                    self.file,
                    row,
                    f"box ({x1}, {y1}, {x2}, {y2}) lies outside its {width}x{height} image {path.name}",
                )
            )
            return
        self.boxes[str(path)].append((x1, y1, x2, y2, label))

    def result(self) -> LabelSet:
        images = []
        for path, rows in self.boxes.items():
            arr = np.asarray(rows, np.float64).reshape(-1, 5)
            images.append(
                LabeledImage(path, None, arr[:, :4].astype(np.float32), arr[:, 4].astype(np.int64), path)
            )
        return LabelSet(images, tuple(self.class_names), self.issues)


def read_coco(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """COCO JSON: ``images``, ``annotations`` (``bbox`` = x, y, w, h), ``categories``."""
    data = json.loads(path.read_text())
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    images = {im["id"]: im for im in data.get("images", [])}
    b = _Builder(path, class_names if class_names is not None else None)
    for im in data.get("images", []):
        b.image(path.parent / im["file_name"], f"image id {im['id']}")
    for i, ann in enumerate(data.get("annotations", [])):
        row = f"annotations[{i}]"
        im = images.get(ann.get("image_id"))
        if im is None:
            b.issues.append(LabelIssue(str(path), row, f"unknown image_id {ann.get('image_id')!r}"))
            continue
        if ann.get("category_id") not in cats:
            b.issues.append(LabelIssue(str(path), row, f"unknown category_id {ann.get('category_id')!r}"))
            continue
        x, y, w, h = ann["bbox"]
        b.add(path.parent / im["file_name"], row, (x, y, x + w, y + h), cats[ann["category_id"]])
    return b.result()


def read_voc(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """Pascal VOC XML: a file, or a folder of them (images relative to each XML)."""
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    b = _Builder(path, class_names)
    for xml_file in files:
        root = ET.parse(xml_file).getroot()
        image = xml_file.parent / (root.findtext("filename") or "")
        b.image(image, f"{xml_file.name}")
        for i, obj in enumerate(root.iter("object")):
            bb = obj.find("bndbox")
            box = [bb.findtext(k) if bb is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
            b.add(image, f"{xml_file.name} object {i}", box, obj.findtext("name") or "")  # type: ignore[arg-type]
    return b.result()


def read_csv(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """DeepForest CSV: ``image_path,xmin,ymin,xmax,ymax,label`` (row numbers 1-based, header = row 1)."""
    b = _Builder(path, class_names)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image_path", "xmin", "ymin", "xmax", "ymax", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing CSV columns {sorted(missing)}; expected image_path,xmin,ymin,xmax,ymax,label"
            )
        for i, rec in enumerate(reader, start=2):
            b.add(
                path.parent / rec["image_path"],
                i,
                (rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"]),
                rec["label"],
            )
    return b.result()


def read_geo_labels(
    path: Path,
    class_names: Sequence[str] | None = None,
    *,
    tile_size_px: int = 512,
    overlap_px: int = 0,
    min_visible: float = 0.5,
) -> LabelSet:
    """GeoParquet/GeoPackage label boxes over GeoTIFF scenes, chipped into tiles.

    Each row needs a geometry (in the scene's CRS or any CRS pyproj can
    transform), a ``label`` and a ``scene`` (path to the GeoTIFF, absolute or
    relative to the label file).  A box cut by a tile edge is kept clipped
    when at least ``min_visible`` of it lies in the tile.
    """
    import geopandas as gpd
    import rasterio

    from pipeline.georef import crs_to_scene_px
    from pipeline.tiling import TilingConfig, tile_scene

    gdf = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    for col in ("label", "scene"):
        if col not in gdf.columns:
            raise ValueError(
                f"{path}: no {col!r} column; label boxes need 'label' and 'scene' (the GeoTIFF path)"
            )
    derived = class_names is None and "label_id" in gdf.columns
    if derived:
        # our own GeoParquet carries the id of each name: keep that order
        pairs = gdf[["label_id", "label"]].drop_duplicates().sort_values("label_id")
        class_names = [str(n) for n in pairs["label"]]
    b = _Builder(path, class_names)
    if derived:
        b.fixed_classes = False  # a name without an id is appended
    images: list[LabeledImage] = []
    for scene, rows in gdf.groupby("scene", sort=True):
        scene_path = Path(scene) if Path(scene).is_absolute() else path.parent / scene
        if not scene_path.is_file():
            for idx in rows.index:
                b.issues.append(
                    LabelIssue(str(path), int(idx), f"unknown scene {scene_path} (file not found)")
                )
            continue
        with rasterio.open(scene_path) as src:
            transform, width, height, scene_crs = tuple(src.transform)[:6], src.width, src.height, src.crs
        geoms = (
            rows.geometry.to_crs(scene_crs)
            if rows.crs is not None and scene_crs is not None
            else rows.geometry
        )
        px = crs_to_scene_px(geoms.bounds.to_numpy(), transform)  # type: ignore[arg-type]
        ok = np.ones(len(rows), bool)
        label_ids = np.zeros(len(rows), np.int64)
        for j, (idx, name) in enumerate(zip(rows.index, rows["label"])):
            x1, y1, x2, y2 = px[j]
            lab = b.class_id(str(name), int(idx))
            if lab is None:
                ok[j] = False
            elif not (x2 > x1 and y2 > y1):
                b.issues.append(
                    LabelIssue(str(path), int(idx), f"degenerate box {tuple(px[j])} px in {scene_path.name}")
                )
                ok[j] = False
            elif x1 < -0.5 or y1 < -0.5 or x2 > width + 0.5 or y2 > height + 0.5:
                b.issues.append(
                    LabelIssue(
                        str(path),
                        int(idx),
                        f"box {tuple(np.round(px[j], 1))} px lies outside scene {scene_path.name} ({width}x{height})",
                    )
                )
                ok[j] = False
            else:
                label_ids[j] = lab
        boxes, labels = px[ok], label_ids[ok]
        for tile in tile_scene(
            str(scene_path), width, height, TilingConfig(tile_size_px=tile_size_px, overlap_px=overlap_px)
        ):
            x0, y0 = tile.col_off_px, tile.row_off_px
            clipped = boxes - np.array([x0, y0, x0, y0])
            vis = clipped.copy()
            vis[:, [0, 2]] = vis[:, [0, 2]].clip(0, tile.valid_width_px)
            vis[:, [1, 3]] = vis[:, [1, 3]].clip(0, tile.valid_height_px)
            area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            vis_area = (vis[:, 2] - vis[:, 0]).clip(0) * (vis[:, 3] - vis[:, 1]).clip(0)
            keep = vis_area >= min_visible * area
            images.append(
                LabeledImage(
                    str(scene_path),
                    (x0, y0, tile.valid_width_px, tile.valid_height_px),
                    vis[keep].astype(np.float32),
                    labels[keep],
                    str(scene_path),
                )
            )
    return LabelSet(images, tuple(b.class_names), b.issues)


def read_labels(
    paths: Sequence[str | Path], class_names: Sequence[str] | None = None, *, tile_size_px: int = 512
) -> LabelSet:
    """Read one or more label files of any supported format into one LabelSet.

    Class ids follow ``class_names`` when given (labels of other classes are
    issues), else the order classes are first seen.
    """
    images: list[LabeledImage] = []
    issues: list[LabelIssue] = []
    names: list[str] = list(class_names or [])
    for p in paths:
        path = Path(p)
        suffix = path.suffix.lower()
        fixed = names if (class_names is not None or names) else None
        if suffix == ".json":
            part = read_coco(path, fixed)
        elif suffix == ".xml" or path.is_dir():
            part = read_voc(path, fixed)
        elif suffix == ".csv":
            part = read_csv(path, fixed)
        elif suffix in (".parquet", ".gpkg"):
            part = read_geo_labels(path, fixed, tile_size_px=tile_size_px)
        else:
            raise ValueError(
                f"{path}: unknown label format {suffix!r}; use COCO .json, VOC .xml, DeepForest .csv, .parquet or .gpkg"
            )
        if class_names is None:
            # a later file may add classes; ids of earlier files stay valid (appended)
            for n in part.class_names:
                if n not in names:
                    names.append(n)
            remap = np.array([names.index(n) for n in part.class_names], np.int64)
            part.images = [
                LabeledImage(
                    im.path,
                    im.window,
                    im.boxes_xyxy_px,
                    remap[im.labels] if len(im.labels) else im.labels,
                    im.group,
                )
                for im in part.images
            ]
        images.extend(part.images)
        issues.extend(part.issues)
    return LabelSet(images, tuple(names), issues)


def split_by_group(
    images: Sequence[LabeledImage], val_fraction: float, seed: int = 0
) -> tuple[list[LabeledImage], list[LabeledImage]]:
    """Hold out whole groups (scenes/images) for validation.

    Tiles of one scene never sit on both sides.  With a single group, the
    tiles themselves are split (there is nothing else to hold out).
    """
    groups = sorted({im.group for im in images})
    rng = np.random.default_rng(seed)
    if len(groups) >= 2:
        num_val = max(1, round(len(groups) * val_fraction))
        val_groups = set(rng.permutation(groups)[:num_val].tolist())
        return [im for im in images if im.group not in val_groups], [
            im for im in images if im.group in val_groups
        ]
    order = rng.permutation(len(images))
    num_val = max(1, round(len(images) * val_fraction))
    val = set(order[:num_val].tolist())
    return [im for i, im in enumerate(images) if i not in val], [
        im for i, im in enumerate(images) if i in val
    ]


def read_image(item: LabeledImage, bands: Sequence[int]) -> np.ndarray:
    """Pixels of a labeled image: float32 ``[C, H, W]`` raw units."""
    path = Path(item.path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(path) as src:
            window = Window(*item.window) if item.window else None
            return src.read(list(bands), window=window).astype(np.float32)
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB", "RGBA") else im)
    arr = arr[..., None] if arr.ndim == 2 else arr
    arr = arr.transpose(2, 0, 1)
    if item.window:
        c, r, w, h = item.window
        arr = arr[:, r : r + h, c : c + w]
    return arr[[b - 1 for b in bands]].astype(np.float32)


class LabeledTiles(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Dataset of ``(image, target)`` for torchvision detection training.

    Args:
        images: labeled images from ``read_labels``.
        bands: 1-based bands in model order.
        transform: optional ``(image, target) -> (image, target)`` (augmentation).
    """

    def __init__(
        self,
        images: Sequence[LabeledImage],
        bands: Sequence[int],
        transform: Callable[
            [torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]
        ]
        | None = None,
    ) -> None:
        self.images = list(images)
        self.bands = tuple(bands)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        item = self.images[index]
        image = torch.from_numpy(read_image(item, self.bands))
        target = {
            "boxes": torch.from_numpy(np.asarray(item.boxes_xyxy_px, np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.asarray(item.labels, np.int64)),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def collate(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Keep images as a list (tiles may differ in size); torchvision batches them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
