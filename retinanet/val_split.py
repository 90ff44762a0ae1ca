"""Labeled images -> (training, validation) images that both hold every class.

Without ``--val`` a run holds out whole scenes or images
(``label_formats.split_by_group``: a fifth of them, drawn with the seed).
Drawn blindly, the held-out share can hold none of a class, or all of it:
DeepForest's NEON sample data (two files labelled ``Tree``, one
``Alive``/``Dead``) gave a validation image of ``Alive``/``Dead`` only, and
a training set without them, so every epoch validated at AP50 0.

``split_by_class`` starts from that draw and repairs it, class by class
(rarest first, ties by name), walking the units in the draw's own order:
a class missing from validation gets the first unit holding it moved there
(unless that takes the last training box of another class), a class missing
from training gets one moved back.  The result is deterministic in the
seed, and is the plain draw whenever that already holds every class on
both sides.  A class labelled in a single unit cannot be on both sides: the
split refuses, in one line naming the classes and their files.

Units are scenes (``LabeledImage.group``) when there are two or more, else
the images (tiles) of the one scene.  Plain numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from retinanet.errors import LabelError

if TYPE_CHECKING:
    from retinanet.label_formats import LabeledImage

_WHAT_TO_DO = (
    "merge or rename classes (--map A=B, --single-class NAME), leave them out (--classes), "
    "label them in another image, or give validation labels (--val)"
)


def _units(images: Sequence[LabeledImage], seed: int, val_fraction: float) -> tuple[list[list[int]], int]:
    """(image indices of each unit in the draw's order, units held out): ``split_by_group``'s draw."""
    groups = sorted({im.group for im in images})
    rng = np.random.default_rng(seed)
    if len(groups) >= 2:
        order = rng.permutation(groups).tolist()
        members = {g: [i for i, im in enumerate(images) if im.group == g] for g in groups}
        return [members[g] for g in order], max(1, round(len(groups) * val_fraction))
    order = rng.permutation(len(images)).tolist()
    return [[i] for i in order], max(1, round(len(images) * val_fraction))


def _covers(units: set[int], cls: int, classes_of: list[set[int]]) -> bool:
    return any(cls in classes_of[u] for u in units)


def _movable(unit: int, source: set[int], classes_of: list[set[int]]) -> bool:
    """Whether taking ``unit`` out of ``source`` keeps every class ``source`` covered."""
    rest = source - {unit}
    return all(_covers(rest, c, classes_of) for c in classes_of[unit] if _covers(source, c, classes_of))


def _move(cls: int, source: set[int], dest: set[int], classes_of: list[set[int]]) -> bool:
    """Move the first unit of ``source`` holding ``cls`` that can go to ``dest``; False when none can."""
    for unit in sorted(source):
        if cls in classes_of[unit] and _movable(unit, source, classes_of):
            source.discard(unit)
            dest.add(unit)
            return True
    return False


def _unit_name(images: Sequence[LabeledImage], members: list[int]) -> str:
    image = images[members[0]]
    return image.group if image.window is None or len(members) > 1 else f"{image.path} window {image.window}"


def _refuse_single(
    images: Sequence[LabeledImage],
    units: list[list[int]],
    holders: dict[int, list[int]],
    names: Sequence[str],
) -> None:
    """Refuse classes labelled in one unit only: they cannot be both trained and validated."""
    lone = [c for c, us in sorted(holders.items()) if len(us) == 1]
    if lone:
        where = "; ".join(f"{names[c]} only in {_unit_name(images, units[holders[c][0]])}" for c in lone)
        raise LabelError(
            f"cannot hold out validation images with every class: {where} (one image cannot be on both "
            f"sides); {_WHAT_TO_DO}"
        )


def split_by_class(
    images: Sequence[LabeledImage], class_names: Sequence[str], val_fraction: float, seed: int = 0
) -> tuple[list[LabeledImage], list[LabeledImage]]:
    """Hold out whole scenes (or images) so that training and validation both hold every class.

    Args:
        images: the labeled images (ids into ``class_names``).
        class_names: names of the ids, for the error.
        val_fraction: share of units to hold out (at least one; more when classes need it).
        seed: the draw's seed (``split_by_group``'s).

    Returns:
        (training images, validation images), each in ``images``' order.

    Raises:
        LabelError: a class is labelled in one unit only, or no repair keeps
            every class on both sides (one line naming the classes and files).
    """
    units, num_val = _units(images, seed, val_fraction)
    # positions into the draw's order, so the repair walks units in it
    classes_of = [{int(k) for i in members for k in images[i].labels} for members in units]
    holders: dict[int, list[int]] = {}
    for u, classes in enumerate(classes_of):
        for c in classes:
            holders.setdefault(c, []).append(u)
    val = set(range(min(num_val, len(units))))
    train = set(range(len(units))) - val
    if len(units) >= 2:
        _refuse_single(images, units, holders, class_names)
        for c in sorted(holders, key=lambda c: (len(holders[c]), class_names[c])):
            ok = _covers(val, c, classes_of) or _move(c, train, val, classes_of)
            ok = ok and (_covers(train, c, classes_of) or _move(c, val, train, classes_of))
            if not ok:
                raise LabelError(
                    f"cannot hold out validation images that leave class {class_names[c]} in training too "
                    f"(it is labelled in {', '.join(_unit_name(images, units[u]) for u in holders[c])}); "
                    + _WHAT_TO_DO
                )
    held = {i for u in val for i in units[u]}
    return [im for i, im in enumerate(images) if i not in held], [
        im for i, im in enumerate(images) if i in held
    ]


def unvalidated_classes(train: Sequence[LabeledImage], val: Sequence[LabeledImage]) -> list[int]:
    """Ids of classes with training boxes but no validation box (their AP is not measured)."""
    trained = {int(k) for im in train for k in im.labels}
    validated = {int(k) for im in val for k in im.labels}
    return sorted(trained - validated)


def unvalidated_warning(
    train: Sequence[LabeledImage], val: Sequence[LabeledImage], class_names: Sequence[str]
) -> list[str]:
    """A warning for classes trained but never validated (``--val`` labels without them), else nothing."""
    missing = [class_names[c] for c in unvalidated_classes(train, val)]
    if not missing or not any(len(im.labels) for im in val):
        return []  # no validation boxes at all: train_report's own warning says so
    return [
        f"warning: the validation images hold no box of class(es) {', '.join(missing)}: their AP is not "
        "measured, and best/ is chosen on the other classes only"
    ]
