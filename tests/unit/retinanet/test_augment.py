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


# --- pinned outputs of the hand-written ops (before torchvision.transforms.v2): same seed, same sample
def _pinned_sample():
    g = torch.Generator().manual_seed(7)
    image = torch.rand(3, 24, 32, generator=g) * 1000.0  # raw units, not 0..1
    boxes = torch.tensor([[2.0, 3.0, 10.5, 9.0], [20.25, 1.0, 31.0, 22.0], [0.0, 0.0, 32.0, 24.0]])
    return image, {"boxes": boxes, "labels": torch.tensor([0, 1, 2])}


def _digest(t):
    import hashlib

    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


PINNED_AUGMENT = [  # seed -> shape, sha256 of the float32 pixels, boxes; seeds: the 8 (hflip, vflip, rot90)
    (
        0,
        (3, 32, 24),
        "971ef18218c5a2b9",
        [[15.0, 21.5, 21.0, 30.0], [2.0, 1.0, 23.0, 11.75], [0.0, 0.0, 24.0, 32.0]],
    ),
    (
        1,
        (3, 32, 24),
        "136aa50472ab6919",
        [[3.0, 21.5, 9.0, 30.0], [1.0, 1.0, 22.0, 11.75], [0.0, 0.0, 24.0, 32.0]],
    ),
    (
        2,
        (3, 24, 32),
        "b797a2b83a83c873",
        [[21.5, 15.0, 30.0, 21.0], [1.0, 2.0, 11.75, 23.0], [0.0, 0.0, 32.0, 24.0]],
    ),
    (
        4,
        (3, 24, 32),
        "26e589f72fe1d549",
        [[2.0, 3.0, 10.5, 9.0], [20.25, 1.0, 31.0, 22.0], [0.0, 0.0, 32.0, 24.0]],
    ),
    (
        8,
        (3, 32, 24),
        "358e0d07aa8d941b",
        [[3.0, 2.0, 9.0, 10.5], [1.0, 20.25, 22.0, 31.0], [0.0, 0.0, 24.0, 32.0]],
    ),
    (
        9,
        (3, 24, 32),
        "79d6e0bbae399fab",
        [[2.0, 15.0, 10.5, 21.0], [20.25, 2.0, 31.0, 23.0], [0.0, 0.0, 32.0, 24.0]],
    ),
    (
        20,
        (3, 32, 24),
        "03479086dc7d6fba",
        [[15.0, 2.0, 21.0, 10.5], [2.0, 20.25, 23.0, 31.0], [0.0, 0.0, 24.0, 32.0]],
    ),
    (
        29,
        (3, 24, 32),
        "2c9da34a1b2f9b8a",
        [[21.5, 3.0, 30.0, 9.0], [1.0, 1.0, 11.75, 22.0], [0.0, 0.0, 32.0, 24.0]],
    ),
]


@pytest.mark.parametrize(("seed", "shape", "pixels", "boxes"), PINNED_AUGMENT)
def test_a_seed_gives_the_same_augmentation_as_before(seed, shape, pixels, boxes):
    image, target = _pinned_sample()
    out, t = OverheadAugment()(image, target, np.random.default_rng(seed))
    assert (tuple(out.shape), _digest(out), t["boxes"].tolist()) == (shape, pixels, boxes)
    assert t["boxes"].dtype == torch.float32 and t["labels"].tolist() == [0, 1, 2]


def test_resize_gives_the_same_pixels_and_boxes_as_before():
    image, target = _pinned_sample()
    out, boxes = resize(image, target["boxes"], (17, 45))
    assert (tuple(out.shape), _digest(out)) == ((3, 17, 45), "44b819b73a97f120")
    assert boxes.tolist() == [
        [2.8125, 2.125, 14.765625, 6.375],
        [28.4765625, 0.7083333134651184, 43.59375, 15.583333015441895],
        [0.0, 0.0, 45.0, 17.0],
    ]


@pytest.mark.parametrize(
    ("window", "boxes", "labels"),
    [
        (None, [[0.0, 1.0, 8.5, 7.0]], [0]),  # choose_crop's window for seed 3: (2, 2, 16, 16)
        ((5, 2, 16, 16), [[0.0, 1.0, 5.5, 7.0]], [0]),
        ((18, 4, 14, 20), [[2.25, 0.0, 13.0, 18.0]], [1]),
    ],
)
def test_crops_give_the_same_boxes_as_before(window, boxes, labels):
    _, target = _pinned_sample()
    all_boxes = target["boxes"].numpy()
    if window is None:
        window = choose_crop((24, 32), all_boxes, 16, np.random.default_rng(3))
        assert window == (2, 2, 16, 16)
    b, lab = crop_boxes(all_boxes, np.array([0, 1, 2]), window)
    assert (b.tolist(), lab.tolist()) == (boxes, labels)
    assert b.dtype == np.float32 and lab.dtype == np.int64
