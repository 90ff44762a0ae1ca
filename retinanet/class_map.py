"""Label names -> the classes a run trains: ``--map``, ``--classes``, ``--single-class``.

Label files name their classes as their authors chose: DeepForest's NEON
sample data ships two files labelled ``Tree`` and one labelled
``Alive``/``Dead``.  Read as they are, they give a three-class model that
never sees an ``Alive`` box in training.  A ``ClassMap`` says what to train:

* ``rename`` (``--map Alive=Tree,Dead=Tree``): label names renamed before
  anything else; a rename applies once (``A=B,B=C`` sends ``A`` to ``B``).
* ``classes`` (``--classes Tree``): the classes to train, in id order.
  Labels that are neither one of them nor renamed to one are left out, each
  row a label issue (counted in the run's warnings and listed in
  ``OUT/label_issues.txt``), as ``--classes`` always did.
* ``single_class`` (``--single-class Tree``): every label becomes ``Tree``.

``labeled_tiles.read_train_data`` reads label files through a map
(``reading_classes``, then ``apply``); ``check_renamed`` refuses a
``--map`` name that no label file holds (a typo would otherwise train the
wrong classes without a word).  Plain code, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retinanet.errors import LabelError

if TYPE_CHECKING:
    from retinanet.label_formats import LabeledImage, LabelSet


def parse_rename(value: str) -> tuple[tuple[str, str], ...]:
    """``Alive=Tree,Dead=Tree`` -> ``(("Alive", "Tree"), ("Dead", "Tree"))``.

    Raises:
        ValueError: a pair without ``=``, an empty name, or a name renamed twice.
    """
    pairs: list[tuple[str, str]] = []
    for part in value.split(","):
        source, sep, target = (s.strip() for s in part.partition("="))
        if not (sep and source and target):
            raise ValueError(f"expected comma-separated LABEL=CLASS pairs, got {part.strip()!r} in {value!r}")
        if source in dict(pairs):
            raise ValueError(f"{source!r} is renamed twice in {value!r}")
        pairs.append((source, target))
    return tuple(pairs)


@dataclass(frozen=True)
class ClassMap:
    """Which label names train which class (see the module docstring).

    Attributes:
        classes: the classes to train, in id order; None: every (renamed) label, in the order first seen.
        rename: (label name, class) pairs applied before anything else.
        single_class: every label becomes this class (with neither ``rename`` nor other ``classes``).
    """

    classes: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] = ()
    single_class: str | None = None

    def __post_init__(self) -> None:
        if self.single_class is not None:
            if self.rename:
                raise ValueError("--single-class maps every label already: leave out --map")
            if self.classes is not None and tuple(self.classes) != (self.single_class,):
                raise ValueError(
                    f"--single-class {self.single_class} trains one class: leave out --classes "
                    f"{','.join(self.classes)}"
                )
        if self.classes is not None:
            outside = [f"{s}={t}" for s, t in self.rename if t not in self.classes]
            if outside:
                raise ValueError(
                    f"--map {','.join(outside)}: not a class of --classes {','.join(self.classes)}; "
                    "map to one of them or add it to --classes"
                )

    @property
    def trained(self) -> tuple[str, ...] | None:
        """The trained classes when the map fixes them (``classes`` or the single class), else None."""
        return (self.single_class,) if self.single_class is not None else self.classes

    def target(self, name: str) -> str:
        """The class a label named ``name`` trains (before ``classes`` leaves any out)."""
        if self.single_class is not None:
            return self.single_class
        return dict(self.rename).get(name, name)

    def reading_classes(self) -> tuple[str, ...] | None:
        """The label names the readers accept: the classes and the names renamed to them; None: all."""
        if self.single_class is not None or self.classes is None:
            return None
        sources = tuple(s for s, _ in self.rename if s not in self.classes)
        return self.classes + sources

    def apply(self, labels: LabelSet) -> LabelSet:
        """``labels`` (read with ``reading_classes``) with ids into the mapped classes."""
        from retinanet.label_formats import LabelSet

        mapped = [self.target(n) for n in labels.class_names]
        names = self.trained or tuple(dict.fromkeys(mapped))
        remap = np.array([names.index(m) for m in mapped], np.int64)
        images = [_relabelled(im, remap) for im in labels.images]
        return LabelSet(images, tuple(names), list(labels.issues))


def _relabelled(image: LabeledImage, remap: np.ndarray) -> LabeledImage:
    from dataclasses import replace

    return replace(image, labels=remap[image.labels]) if len(image.labels) else image


def boxed_names(labels: LabelSet) -> set[str]:
    """The class names of ``labels`` that have at least one box."""
    counts = np.bincount(
        np.concatenate([im.labels for im in labels.images] + [np.zeros(0, np.int64)]).astype(np.int64),
        minlength=len(labels.class_names),
    )
    return {name for name, n in zip(labels.class_names, counts, strict=True) if n}


def check_renamed(
    class_map: ClassMap, seen: set[str], files: Sequence[str | Path], issues: Sequence[object] = ()
) -> None:
    """Refuse ``--map`` names that no label file holds, in one line naming the files and what they hold.

    Args:
        class_map: the map.
        seen: label names with boxes (``boxed_names``).
        files: the label files read.
        issues: the rows left out (the first is quoted: it may name the label meant).

    Raises:
        LabelError: a renamed name has no box in ``files``.
    """
    unknown = [f"{s}={t}" for s, t in class_map.rename if s not in seen]
    if unknown:
        shown = str(files[0]) if len(files) == 1 else f"{files[0]} (and {len(files) - 1} more)"
        left_out = f"; {len(issues)} row(s) left out, first: {issues[0]}" if issues else ""
        raise LabelError(
            f"--map {','.join(unknown)}: no box in {shown} is labelled so (labels with boxes: "
            f"{', '.join(sorted(seen)) or 'none'}{left_out}); check the spelling (names are case-sensitive)"
        )
