"""Labeled tiles -> one ``(image, target)`` Dataset, whatever the label format.

``read_labels`` reads any mix of label files (``retinanet.label_formats``:
COCO, Pascal VOC, DeepForest CSV; ``retinanet.geo_labels``: GeoParquet /
GeoPackage over GeoTIFF scenes) into one ``LabelSet``.  ``read_train_data``
does that once for a training run, splits off validation and checks that
there is something to train on; the result (``TrainData``) is what the
training workers receive, so label files are read once per run.

Every label format trains the same way: ``retinanet.training_tiles``
(``TrainingTiles``, ``EpochSampler``, ``LabeledTiles``, ``grid_tiles``) cuts
tiles out of the images, whose pixels ``retinanet.label_images`` reads
through ``pipeline.reading`` as detect reads them (``read_image``,
``check_bands``, ``band_stats`` over the pixels that have a value).  Both are
re-exported here, the names other modules import from this one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retinanet.errors import LabelError
from retinanet.label_formats import (
    IMAGE_EXTENSIONS,
    LabeledImage,
    LabelIssue,
    LabelSet,
    read_coco,
    read_csv,
    read_voc,
    split_by_group,
)
from retinanet.label_images import band_stats, check_bands, image_size, read_image
from retinanet.training_tiles import (
    EpochSampler,
    LabeledTiles,
    TileSampling,
    TrainingTiles,
    collate,
    epoch_images,
    grid_tiles,
    samples_per_image,
)

if TYPE_CHECKING:
    from retinanet.class_map import ClassMap

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelIssue",
    "LabelSet",
    "LabeledImage",
    "EpochSampler",
    "LabeledTiles",
    "TileSampling",
    "TrainData",
    "TrainingTiles",
    "band_stats",
    "check_bands",
    "collate",
    "epoch_images",
    "grid_tiles",
    "image_size",
    "read_image",
    "read_labels",
    "read_train_data",
    "samples_per_image",
    "split_by_group",
]


def read_labels(
    paths: Sequence[str | Path], class_names: Sequence[str] | None = None, *, tile_size_px: int = 512
) -> LabelSet:
    """Read one or more label files of any supported format into one LabelSet.

    Args:
        paths: label files (or folders of VOC XML).
        class_names: the classes, in id order; labels of other classes are
            issues.  None: every class found, in the order first seen (a later
            file may add classes; ids of earlier files stay valid).
        tile_size_px: tile size that GeoParquet/GeoPackage scenes are cut into.

    Raises:
        LabelError: a file of unknown format, or one that cannot be read.

    Example:
        >>> labels = read_labels(["a.xml", "b.xml"])  # doctest: +SKIP
        >>> labels.class_names, len(labels.images), labels.issues[:1]  # doctest: +SKIP
    """
    from retinanet.geo_labels import read_geo_labels

    images: list[LabeledImage] = []
    issues: list[LabelIssue] = []
    names: list[str] = list(class_names or [])
    for p in paths:
        path = Path(p)
        suffix = path.suffix.lower()
        if suffix == ".json":
            part = read_coco(path, class_names)
        elif suffix == ".xml" or path.is_dir():
            part = read_voc(path, class_names)
        elif suffix == ".csv":
            part = read_csv(path, class_names)
        elif suffix in (".parquet", ".gpkg"):
            part = read_geo_labels(path, class_names, tile_size_px=tile_size_px)
        else:
            raise LabelError(
                f"{path}: unknown label format {suffix!r}; use COCO .json, VOC .xml, DeepForest .csv, "
                ".parquet or .gpkg"
            )
        names += [n for n in part.class_names if n not in names]
        part = part.relabel(names)
        images.extend(part.images)
        issues.extend(part.issues)
    return LabelSet(images, tuple(names), issues)


@dataclass
class TrainData:
    """The labeled images of one training run, split, read once on the driver.

    Attributes:
        train: images to train on.
        val: held-out images (may hold no boxes: then AP cannot be measured).
        class_names: names of the label ids.
        issues: label rows left out, of training and validation files.
    """

    train: list[LabeledImage]
    val: list[LabeledImage]
    class_names: tuple[str, ...]
    issues: list[LabelIssue]

    def relabel(self, class_names: Sequence[str]) -> TrainData:
        """The same data with ids into ``class_names`` (a superset, e.g. a fine-tuned model's)."""
        train = LabelSet(self.train, self.class_names, []).relabel(class_names)
        val = LabelSet(self.val, self.class_names, []).relabel(class_names)
        return TrainData(train.images, val.images, train.class_names, list(self.issues))

    def objects_per_class(self, images: Sequence[LabeledImage]) -> dict[str, int]:
        """Boxes per class name in ``images`` (``self.train`` or ``self.val``)."""
        counts = Counter(int(k) for im in images for k in im.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}


def _files_named(paths: Sequence[str | Path]) -> str:
    first = str(paths[0]) if paths else "labels"
    return first if len(paths) <= 1 else f"{first} (and {len(paths) - 1} more)"


def _check_train_data(
    data: TrainData, labels: Sequence[str | Path], val_labels: Sequence[str | Path]
) -> None:
    """Refuse data that cannot train, naming the files and what to do."""
    files = _files_named(labels)
    first_issue = f"; first row left out: {data.issues[0]}" if data.issues else ""
    num_images = len(data.train) + (0 if val_labels else len(data.val))
    if num_images == 0:
        raise LabelError(
            f"{files}: no labeled image could be used ({len(data.issues)} rows left out{first_issue})"
        )
    if not any(len(im.labels) for im in data.train + ([] if val_labels else data.val)):
        raise LabelError(f"{files}: no usable label box ({len(data.issues)} rows left out{first_issue})")
    if not data.train:
        raise LabelError(
            f"{files}: only {num_images} labeled image ({data.val[0].path}), and it is held out for "
            "validation, so none is left to train on; add images, or give validation labels separately (--val)"
        )
    if val_labels and not data.val:
        raise LabelError(f"{_files_named(val_labels)}: no validation image could be used{first_issue}")


def _read_mapped(
    paths: Sequence[str | Path], class_map: ClassMap, tile_size_px: int
) -> tuple[LabelSet, set[str]]:
    """Label files read through ``class_map``: (the label set, the label names that had boxes)."""
    from retinanet.class_map import boxed_names

    raw = read_labels(paths, class_map.reading_classes(), tile_size_px=tile_size_px)
    return class_map.apply(raw), boxed_names(raw)


def read_train_data(
    labels: Sequence[str | Path],
    val_labels: Sequence[str | Path] = (),
    class_names: Sequence[str] | None = None,
    *,
    tile_size_px: int = 512,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_map: ClassMap | None = None,
) -> TrainData:
    """Read the label files of a run once and split off validation.

    Args:
        labels: training label files.
        val_labels: validation label files; empty: hold out whole scenes or
            images, every class on both sides (``val_split.split_by_class``).
        class_names: the classes in id order; None: those found in ``labels``
            (ignored with ``class_map``, which names them).
        tile_size_px: tile size that GeoParquet/GeoPackage scenes are cut into.
        val_fraction: share of groups held out without ``val_labels``.
        seed: split seed.
        class_map: label names -> trained classes (``--map``, ``--classes``,
            ``--single-class``); None: ``class_names`` as they are.

    Raises:
        LabelError: a file cannot be read, a ``--map`` name is in no file, a
            class cannot be on both sides of the split, or no image/box is left to train on.
    """
    from retinanet.class_map import ClassMap, check_renamed
    from retinanet.val_split import split_by_class

    if class_map is None:
        class_map = ClassMap(classes=None if class_names is None else tuple(class_names))
    train, seen = _read_mapped(labels, class_map, tile_size_px)
    if val_labels:
        kept = tuple((s, t) for s, t in class_map.rename if t in train.class_names)
        val_map = class_map if class_map.single_class else ClassMap(classes=train.class_names, rename=kept)
        val, val_seen = _read_mapped(val_labels, val_map, tile_size_px)
        check_renamed(class_map, seen | val_seen, [*labels, *val_labels], train.issues + val.issues)
        data = TrainData(train.images, val.images, train.class_names, train.issues + val.issues)
    else:
        check_renamed(class_map, seen, labels, train.issues)
        try:
            train_images, val_images = split_by_class(train.images, train.class_names, val_fraction, seed)
        except LabelError as exc:
            raise LabelError(f"{_files_named(labels)}: {exc}") from None
        data = TrainData(train_images, val_images, train.class_names, train.issues)
    _check_train_data(data, labels, val_labels)
    return data
