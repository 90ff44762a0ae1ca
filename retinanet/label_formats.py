"""Label files -> ``LabelSet``: one reader per format, one result type.

Formats (``retinanet.labeled_tiles.read_labels`` picks one by extension):

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

Images are PNG/JPEG/GeoTIFF chips (paths relative to the label file).  Two
kinds of trouble are told apart:

* a bad *row* (degenerate box, box outside its image, unknown image or
  class, missing ``bbox``) is not silently dropped: it becomes a
  ``LabelIssue`` naming the file and row, returned with the data, and the
  row is left out;
* a bad *file* (not valid JSON/XML/CSV, a COCO file that is a list or has an
  image without ``file_name``, a ``scene`` that is not a raster) raises
  ``retinanet.errors.LabelError`` with one line naming the file and the fix.

Class ids follow the ``class_names`` given, else the order in which classes
are first seen.  GeoParquet/GeoPackage labels are read by
``retinanet.geo_labels``; ``retinanet.labeled_tiles.read_labels`` reads any
mix of files into one ``LabelSet``.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retinanet.errors import LabelError

if TYPE_CHECKING:
    from pipeline.reading import ReadConfig

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
        path: image or scene file, absolute.
        window: (col_off, row_off, width, height) px of a scene, or None for the whole file.
        boxes_xyxy_px: float32 ``[N, 4]`` in the image's (window's) pixels.
        labels: int64 ``[N]`` class ids.
        group: split key (the scene or image), so tiles of one scene stay on one side.
        size_hw: (height, width) px of the image (the window's, when set); None: unknown.
    """

    path: str
    window: tuple[int, int, int, int] | None
    boxes_xyxy_px: np.ndarray
    labels: np.ndarray
    group: str
    size_hw: tuple[int, int] | None = None


@dataclass
class LabelSet:
    """What ``read_labels`` returns."""

    images: list[LabeledImage]
    class_names: tuple[str, ...]
    issues: list[LabelIssue]

    def relabel(self, class_names: Sequence[str]) -> LabelSet:
        """The same boxes with ids into ``class_names`` (a superset of ``self.class_names``).

        Raises:
            ValueError: a class of this set is missing from ``class_names``.
        """
        names = tuple(class_names)
        missing = [n for n in self.class_names if n not in names]
        if missing:
            raise ValueError(f"classes {missing} are not in {list(names)}")
        remap = np.array([names.index(n) for n in self.class_names], np.int64)
        images = [replace(im, labels=remap[im.labels]) if len(im.labels) else im for im in self.images]
        return LabelSet(images, names, list(self.issues))


# PNG/JPEG chips open with these GDAL drivers, named (never a VRT: ``pipeline.reading``)
PLAIN_IMAGE_DRIVERS = ("PNG", "JPEG")
TIFF_EXTENSIONS = (".tif", ".tiff")


def image_read_config(path: str | Path, bands: Sequence[int] = (1,)) -> ReadConfig:
    """How a label image is read: ``.tif``/``.tiff`` as detect reads scenes (GTiff), others as PNG/JPEG.

    Every label image is read through ``pipeline.reading`` with this config:
    the same driver allow-list, GDAL settings and nodata rule as detect.
    """
    from pipeline.gdal_config import DEFAULT_DRIVERS
    from pipeline.reading import ReadConfig

    tiff = Path(path).suffix.lower() in TIFF_EXTENSIONS
    return ReadConfig(bands=tuple(bands), drivers=DEFAULT_DRIVERS if tiff else PLAIN_IMAGE_DRIVERS)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header (``pipeline.reading.read_header``)."""
    from pipeline.reading import read_header

    header = read_header(str(path), image_read_config(path))
    return header.height_px, header.width_px


class LabelBuilder:
    """Collects boxes per image, validating each row (shared by the readers).

    Args:
        label_file: the file being read (named in every issue).
        class_names: known classes; with ``fixed`` other classes are issues,
            else they are appended in the order first seen.
        fixed: whether ``class_names`` is closed.
    """

    def __init__(self, label_file: Path, class_names: Sequence[str] | None, *, fixed: bool) -> None:
        self.file = str(label_file)
        self.fixed_classes = fixed
        self.class_names: list[str] = list(class_names or [])
        self.issues: list[LabelIssue] = []
        self.boxes: dict[str, list[tuple[float, float, float, float, int]]] = {}
        self.sizes: dict[str, tuple[int, int] | None] = {}

    def issue(self, row: int | str, message: str) -> None:
        """Record a row left out."""
        self.issues.append(LabelIssue(self.file, row, message))

    def image(self, path: Path, row: int | str) -> bool:
        """Register an image; False (and an issue) when it is missing or unreadable."""
        key = str(path)
        if key not in self.sizes:
            if not path.is_file():
                self.sizes[key] = None
            else:
                try:
                    self.sizes[key] = _image_size(path)
                except Exception as exc:  # pipeline.reading's errors, and any other
                    self.issue(row, f"image {path} cannot be read: {str(exc).removeprefix(f'{path}: ')}")
                    self.sizes[key] = None
                    return False
            if self.sizes[key] is not None:
                self.boxes.setdefault(key, [])
        if self.sizes[key] is None:
            self.issue(row, f"unknown image {path} (file not found)")
            return False
        return True

    def class_id(self, name: str, row: int | str) -> int | None:
        """Id of class ``name`` (appended when the classes are open); None (and an issue) if unknown."""
        if name not in self.class_names:
            if self.fixed_classes:
                self.issue(row, f"unknown class {name!r}; known: {self.class_names}")
                return None
            self.class_names.append(name)
        return self.class_names.index(name)

    def add(self, path: Path, row: int | str, box: Sequence[Any], name: str) -> None:
        """Add one xyxy px box of class ``name`` to image ``path``, or record why not."""
        if not self.image(path, row):
            return
        label = self.class_id(str(name), row)
        if label is None:
            return
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            self.issue(row, f"box {list(box)} is not four numbers")
            return
        if not (x2 > x1 and y2 > y1):
            self.issue(row, f"degenerate box (xmin, ymin, xmax, ymax)=({x1}, {y1}, {x2}, {y2})")
            return
        height, width = self.sizes[str(path)]  # type: ignore[misc]
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            self.issue(
                row, f"box ({x1}, {y1}, {x2}, {y2}) lies outside its {width}x{height} image {path.name}"
            )
            return
        self.boxes[str(path)].append((x1, y1, x2, y2, label))

    def result(self) -> LabelSet:
        """The images seen (with or without boxes), the classes and the issues."""
        images = []
        for path, rows in self.boxes.items():
            arr = np.asarray(rows, np.float64).reshape(-1, 5)
            where = str(Path(path).absolute())  # workers run in another directory
            images.append(
                LabeledImage(
                    where,
                    None,
                    arr[:, :4].astype(np.float32),
                    arr[:, 4].astype(np.int64),
                    where,
                    self.sizes[path],
                )
            )
        return LabelSet(images, tuple(self.class_names), self.issues)


# A JSON document takes up to ~20x its size once parsed ("{}" is 3 bytes, a
# dict 64); COCO's own train2017 instances file is 448 MB.
MAX_COCO_BYTES = 512 << 20


def _coco_document(path: Path) -> dict[str, Any]:
    """The parsed COCO object, its three lists checked.

    Raises:
        LabelError: the file is over ``MAX_COCO_BYTES``, not JSON, nested too
            deeply to parse, or not a COCO object.
    """
    size = path.stat().st_size
    if size > MAX_COCO_BYTES:
        raise LabelError(
            f"{path}: {size} bytes, more than the {MAX_COCO_BYTES} a COCO label file may hold; "
            "split its images into several COCO files (aerialdet train takes several)"
        )
    try:
        data = json.loads(path.read_text())
    except RecursionError:
        raise LabelError(
            f"{path}: not valid JSON (nested too deeply); COCO labels are one JSON object"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise LabelError(f"{path}: not valid JSON ({exc}); COCO labels are one JSON object") from None
    if not isinstance(data, dict):
        raise LabelError(
            f"{path}: expected a COCO object with 'images', 'annotations' and 'categories', "
            f"got a JSON {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise LabelError(f"{path}: COCO '{key}' must be a list, got {type(data[key]).__name__}")
    for i, im in enumerate(data.get("images", [])):
        if not isinstance(im, dict) or not isinstance(im.get("file_name"), str) or "id" not in im:
            raise LabelError(f"{path}: images[{i}] needs 'id' and 'file_name' (the image path)")
    for i, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise LabelError(f"{path}: categories[{i}] needs 'id' and 'name'")
    return data


def _coco_box(ann: dict[str, Any]) -> tuple[float, float, float, float] | str:
    """``bbox`` (x, y, w, h) -> xyxy, or why it cannot be read."""
    bbox = ann.get("bbox")
    if bbox is None:
        return "has no 'bbox'"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return f"bbox {bbox!r} is not [x, y, width, height]"
    return x, y, x + w, y + h


def read_coco(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """COCO JSON: ``images``, ``annotations`` (``bbox`` = x, y, w, h), ``categories``.

    Raises:
        LabelError: not a COCO object, or an image or category without its fields.
    """
    data = _coco_document(path)
    cats = {c["id"]: c["name"] for c in data.get("categories", []) if isinstance(c["id"], (int, str))}
    images = {im["id"]: im for im in data.get("images", []) if isinstance(im["id"], (int, str))}
    b = LabelBuilder(path, class_names, fixed=class_names is not None)
    for im in data.get("images", []):
        b.image(path.parent / im["file_name"], f"image id {im['id']}")
    for i, ann in enumerate(data.get("annotations", [])):
        row = f"annotations[{i}]"
        if not isinstance(ann, dict):
            b.issue(row, f"expected an object, got {type(ann).__name__}")
            continue
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        im = images.get(image_id) if isinstance(image_id, (int, str)) else None
        if im is None:
            b.issue(row, f"unknown image_id {image_id!r}")
            continue
        if not isinstance(category_id, (int, str)) or category_id not in cats:
            b.issue(row, f"unknown category_id {category_id!r}")
            continue
        box = _coco_box(ann)
        if isinstance(box, str):
            b.issue(row, box)
            continue
        b.add(path.parent / im["file_name"], row, box, cats[category_id])
    return b.result()


def _voc_root(xml_file: Path) -> ET.Element:
    """The ``<annotation>`` element of a VOC file."""
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as exc:
        raise LabelError(f"{xml_file}: not valid XML ({exc}); is the file complete?") from None
    if root.tag != "annotation":
        raise LabelError(
            f"{xml_file}: not a Pascal VOC file (root element <{root.tag}>, expected <annotation>)"
        )
    return root


def read_voc(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """Pascal VOC XML: a file, or a folder of them (images relative to each XML).

    Raises:
        LabelError: a file is not valid VOC XML, or the folder holds none.
    """
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise LabelError(f"{path}: folder holds no .xml files; pass VOC XML files or a folder of them")
    b = LabelBuilder(path, class_names, fixed=class_names is not None)
    for xml_file in files:
        root = _voc_root(xml_file)
        filename = (root.findtext("filename") or "").strip()
        if not filename:
            b.issue(xml_file.name, "no <filename>: which image the boxes belong to is unknown")
            continue
        image = xml_file.parent / filename
        b.image(image, f"{xml_file.name}")
        for i, obj in enumerate(root.iter("object")):
            bb = obj.find("bndbox")
            box = [bb.findtext(k) if bb is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
            b.add(image, f"{xml_file.name} object {i}", box, (obj.findtext("name") or "").strip())
    return b.result()


CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


def read_csv(path: Path, class_names: Sequence[str] | None = None) -> LabelSet:
    """DeepForest CSV: ``image_path,xmin,ymin,xmax,ymax,label`` (row numbers 1-based, header = row 1).

    Raises:
        LabelError: not a text CSV, or columns missing.
    """
    b = LabelBuilder(path, class_names, fixed=class_names is not None)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = set(CSV_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise LabelError(
                    f"{path}: missing CSV columns {sorted(missing)}; expected {','.join(CSV_COLUMNS)}"
                )
            for i, rec in enumerate(reader, start=2):
                if any(rec.get(k) is None for k in CSV_COLUMNS):
                    b.issue(i, f"fewer than {len(CSV_COLUMNS)} fields")
                    continue
                box = (rec["xmin"], rec["ymin"], rec["xmax"], rec["ymax"])
                b.add(path.parent / rec["image_path"], i, box, rec["label"])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"{path}: not a readable CSV ({exc})") from None
    return b.result()


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


def largest_object_px(images: Sequence[LabeledImage]) -> float | None:
    """The largest side of any box in ``images`` (``LabeledImage``), px; None without boxes."""
    import numpy as np

    sides = [
        float(np.max(im.boxes_xyxy_px[:, 2:] - im.boxes_xyxy_px[:, :2]))
        for im in images
        if len(im.boxes_xyxy_px)
    ]
    return max(sides) if sides else None
