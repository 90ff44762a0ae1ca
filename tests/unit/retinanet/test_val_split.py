"""retinanet.val_split: held-out images hold every class, deterministically, or the split refuses."""

from __future__ import annotations

import numpy as np
import pytest

from retinanet.errors import LabelError
from retinanet.label_formats import LabeledImage, split_by_group
from retinanet.val_split import split_by_class

NAMES = ("Tree", "Car")


def _image(name, labels, group=None):
    boxes = np.tile(np.array([[1, 1, 5, 5]], np.float32), (len(labels), 1))
    return LabeledImage(
        f"/d/{name}.png", None, boxes, np.asarray(labels, np.int64), group or f"/d/{name}.png"
    )


def _classes(images):
    return {int(k) for im in images for k in im.labels}


# five images, Car in two of them: a blind draw of one holds no Car for most seeds
IMAGES = [_image("a", [0]), _image("b", [0, 0]), _image("c", [0, 1]), _image("d", [0]), _image("e", [1])]


@pytest.mark.parametrize("seed", range(8))
def test_both_sides_hold_every_class_for_every_seed(seed):
    train, val = split_by_class(IMAGES, NAMES, 0.2, seed)
    assert _classes(train) == _classes(val) == {0, 1}
    assert sorted(im.path for im in train + val) == sorted(im.path for im in IMAGES)
    assert split_by_class(IMAGES, NAMES, 0.2, seed) == (train, val)  # deterministic in the seed


def test_a_blind_draw_misses_a_class_for_some_seed():
    # what the split was before: this is what the repair fixes
    assert any(_classes(split_by_group(IMAGES, 0.2, s)[1]) != {0, 1} for s in range(8))


@pytest.mark.parametrize("seed", range(8))
def test_a_draw_that_already_holds_every_class_is_kept(seed):
    images = [_image(n, [0, 1]) for n in "abcde"]
    assert split_by_class(images, NAMES, 0.2, seed) == split_by_group(images, 0.2, seed)


def test_tiles_of_one_scene_stay_on_one_side():
    scene = [_image(f"s{i}", [0, 1] if i % 2 else [0], group="/d/s.tif") for i in range(4)]
    other = [_image(f"t{i}", [0, 1], group="/d/t.tif") for i in range(3)]
    train, val = split_by_class(scene + other, NAMES, 0.2, 0)
    assert {im.group for im in train}.isdisjoint({im.group for im in val})
    assert _classes(train) == _classes(val) == {0, 1}


def test_tiles_of_a_single_scene_are_split_by_class():
    tiles = [_image(f"s{i}", [1] if i in (2, 5) else [0], group="/d/s.tif") for i in range(10)]
    for seed in range(5):
        train, val = split_by_class(tiles, NAMES, 0.2, seed)
        assert _classes(train) == _classes(val) == {0, 1}


def test_a_class_labelled_in_one_image_only_is_refused_naming_it_and_its_file():
    images = [_image("a", [0]), _image("b", [0]), _image("c", [1, 1])]
    with pytest.raises(LabelError, match=r"Car only in /d/c.png") as err:
        split_by_class(images, NAMES, 0.2, 0)
    assert "\n" not in str(err.value) and "--map" in str(err.value)
