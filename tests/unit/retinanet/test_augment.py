import torch

from retinanet.augment import OverheadAugment


def test_boxes_follow_the_pixels_through_flips_and_rotations():
    torch.manual_seed(0)
    image = torch.zeros(3, 40, 60)
    image[:, 5:15, 30:50] = 100.0  # one object, 20 x 10 px, off-centre
    target = {"boxes": torch.tensor([[30.0, 5.0, 50.0, 15.0]]), "labels": torch.tensor([2])}
    seen_shapes, seen_boxes = set(), set()
    aug = OverheadAugment(jitter=0.0)
    for _ in range(40):
        out, t = aug(image, target)
        x1, y1, x2, y2 = t["boxes"][0].round().int().tolist()
        seen_shapes.add(tuple(out.shape))
        seen_boxes.add((x1, y1, x2, y2))
        assert t["labels"].tolist() == [2] and t["boxes"].dtype == torch.float32
        inside = out[0, y1:y2, x1:x2]
        assert inside.numel() == 200 and (inside == 100).all()  # the box covers the object exactly
        assert out[0].sum() == 100 * 200  # and nothing of it lies outside
    assert seen_shapes == {(3, 40, 60), (3, 60, 40)}  # 90-degree rotations happen
    assert len(seen_boxes) >= 6  # flips and rotations give several placements


def test_jitter_changes_values_not_geometry():
    torch.manual_seed(1)
    image = torch.full((3, 8, 8), 50.0)
    image[:, 2:4, 2:4] = 150.0
    out, t = OverheadAugment(jitter=0.2).jitter(image, {"boxes": torch.zeros(0, 4)})
    assert out.shape == image.shape and not torch.equal(out, image)
    assert (out[:, 2:4, 2:4] > out[:, 0, 0].reshape(3, 1, 1)).all()
