import numpy as np
import pytest
import torch

from retinanet.augment import (
    OverheadAugment,
    choose_crop,
    crop_boxes,
    hflip,
    photometric,
    resize,
    rot90,
    vflip,
)


def _object_image():
    image = torch.zeros(3, 40, 60)
    image[:, 5:15, 30:50] = 100.0  # one object, 20 x 10 px, off-centre
    return image, torch.tensor([[30.0, 5.0, 50.0, 15.0]])


def _box_covers_object_exactly(image, box, value=100.0, area=200):
    x1, y1, x2, y2 = box.round().int().tolist()
    inside = image[0, y1:y2, x1:x2]
    return inside.numel() == area and bool((inside == value).all()) and float(image[0].sum()) == value * area


@pytest.mark.parametrize(
    "op, expected_box, expected_shape",
    [  # worked by hand on the 60 x 40 image: box (30, 5, 50, 15)
        (hflip, [10, 5, 30, 15], (3, 40, 60)),  # x -> 60 - x
        (vflip, [30, 25, 50, 35], (3, 40, 60)),  # y -> 40 - y
        (rot90, [5, 10, 15, 30], (3, 60, 40)),  # (x, y) -> (y, 60 - x)
    ],
)
def test_each_geometric_op_moves_the_box_with_the_pixels(op, expected_box, expected_shape):
    image, boxes = _object_image()
    out, moved = op(image, boxes)
    assert tuple(out.shape) == expected_shape and moved[0].tolist() == expected_box
    assert _box_covers_object_exactly(out, moved[0])


def test_boxes_follow_the_pixels_through_flips_and_rotations():
    image, boxes = _object_image()
    target = {"boxes": boxes, "labels": torch.tensor([2])}
    seen_shapes, seen_boxes = set(), set()
    aug = OverheadAugment(jitter=0.0, hue_deg=0.0)
    gen = np.random.default_rng(0)
    for _ in range(100):
        out, t = aug(image, target, gen)
        seen_shapes.add(tuple(out.shape))
        seen_boxes.add(tuple(t["boxes"][0].round().int().tolist()))
        assert t["labels"].tolist() == [2] and t["boxes"].dtype == torch.float32
        assert _box_covers_object_exactly(out, t["boxes"][0])
    assert seen_shapes == {(3, 40, 60), (3, 60, 40)}  # 90-degree rotations happen
    assert len(seen_boxes) == 8  # the 8 symmetries of the square: all reached


def test_same_generator_seed_same_augmentation():
    image, boxes = _object_image()
    target = {"boxes": boxes, "labels": torch.tensor([0])}
    a = OverheadAugment()(image, target, np.random.default_rng([3, 1, 7]))
    b = OverheadAugment()(image, target, np.random.default_rng([3, 1, 7]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_photometric_jitter_changes_values_not_geometry_and_hue_keeps_grey():
    image = torch.full((3, 8, 8), 50.0)
    image[:, 2:4, 2:4] = 150.0
    out = photometric(image, np.random.default_rng(1), strength=0.2, hue_deg=0.0)
    assert out.shape == image.shape and not torch.equal(out, image)
    assert (out[:, 2:4, 2:4] > out[:, 0, 0].reshape(3, 1, 1)).all()
    # hue rotation: a grey pixel stays grey, a green one changes colour but keeps its mean
    grey_and_green = torch.tensor([[[80.0, 40.0]], [[80.0, 160.0]], [[80.0, 40.0]]])  # (3, 1, 2)
    rotated = photometric(grey_and_green, np.random.default_rng(2), strength=0.0, hue_deg=30.0)
    assert torch.allclose(rotated[:, 0, 0], torch.full((3,), 80.0), atol=1e-4)
    assert not torch.allclose(rotated[:, 0, 1], grey_and_green[:, 0, 1], atol=1.0)
    assert float(rotated[:, 0, 1].mean()) == pytest.approx(80.0, abs=1e-3)


def test_resize_scales_the_boxes_with_the_image():
    image = torch.zeros(1, 40, 60)
    image[:, 10:20, 30:50] = 100.0
    out, boxes = resize(image, torch.tensor([[30.0, 10.0, 50.0, 20.0]]), (80, 120))
    assert tuple(out.shape) == (1, 80, 120) and boxes[0].tolist() == [60, 20, 100, 40]
    assert (out[0, 22:38, 62:98] > 99).all() and out[0, :18].abs().max() < 1


def test_crop_boxes_clips_cut_boxes_and_drops_small_remnants():
    boxes = np.array(
        [
            [10, 10, 20, 20],  # wholly inside
            [25, 0, 45, 10],  # cut at the right edge: 15 of 20 px remain (75%)
            [38, 30, 48, 40],  # 2 of 10 px remain (20% < 40%): dropped
            [60, 60, 70, 70],  # outside
        ],
        np.float32,
    )
    out, labels = crop_boxes(boxes, np.array([0, 1, 2, 3]), (0, 0, 40, 40), min_visible=0.4)
    assert out.tolist() == [[10, 10, 20, 20], [25, 0, 40, 10]] and labels.tolist() == [0, 1]
    shifted, _ = crop_boxes(boxes, np.array([0, 1, 2, 3]), (5, 8, 40, 40))
    assert shifted[0].tolist() == [5, 2, 15, 12]  # window offset subtracted


def test_choose_crop_keeps_a_whole_object_and_stays_inside():
    boxes = np.array([[900, 700, 930, 730]], np.float32)
    gen = np.random.default_rng(0)
    for _ in range(50):
        col, row, w, h = choose_crop((1035, 1249), boxes, 256, gen, object_bias=1.0)
        assert (w, h) == (256, 256) and 0 <= col <= 1249 - 256 and 0 <= row <= 1035 - 256
        assert col <= 900 and col + 256 >= 930 and row <= 700 and row + 256 >= 730
    # an axis shorter than the crop is taken whole
    assert choose_crop((100, 400), np.zeros((0, 4)), 256, gen)[1:] == (0, 256, 100)
