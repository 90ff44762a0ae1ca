"""Issue 21, training side: labels at several GSDs train one model at one GSD, which the checkpoint records.

Real GeoTIFFs (``retinanet.synth`` at 0.15 m and 0.6 m, and one painted by
hand), ``plan_training`` as ``aerialdet train`` calls it, and ``fit``
in-process (no Ray, one step of resnet18 on 64 px tiles).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from jobs.train import train_command, train_options
from retinanet.checkpoint import read_config, resolve_checkpoint
from retinanet.label_formats import LabeledImage
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_plan import plan_training

VEHICLE_M = (2.0, 4.5)  # retinanet.synth's vehicle sides on the ground


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Label files of two synthetic scenes at 0.15 m and two at 0.6 m, 120 m across each."""
    root = tmp_path_factory.mktemp("mixed")
    files = []
    for gsd_m, size_px, x0 in ((0.15, 800, 500000.0), (0.6, 200, 510000.0)):
        cfg = SynthConfig(size_px=size_px, gsd_m=gsd_m, origin_xy=(x0, 5000000.0), density_scale=3.0)
        write_scenes(root / f"at_{gsd_m}", num_scenes=2, cfg=cfg, seed=int(gsd_m * 100))
        files.append(str(root / f"at_{gsd_m}" / "labels.parquet"))
    return files


def _opts(tmp_path, labels, *args):
    argv = [*labels, "--out", str(tmp_path / "run"), "--classes", "vehicle", "--tile-size-px", "64", *args]
    return train_options(train_command.make_context("train", argv).params)


def _native_gsd_m(path):
    with rasterio.open(path) as src:
        return abs(src.transform.a)


def test_the_plan_trains_at_the_median_gsd_of_the_scenes_or_the_option(tmp_path, mixed):
    plan = plan_training(_opts(tmp_path, mixed, "--steps", "2"))
    assert plan.spec.model.gsd_m == pytest.approx(0.375)  # median of 0.15, 0.15, 0.6, 0.6
    assert any("training at 0.375 m/px (median" in line for line in plan.lines)
    plan = plan_training(_opts(tmp_path, mixed, "--steps", "2", "--gsd-m", "0.3"))
    assert plan.spec.model.gsd_m == 0.3
    sizes = {}
    for im in plan.data.train + plan.data.val:
        factor = _native_gsd_m(im.path) / 0.3
        assert im.size_hw == (round(im.window[3] * factor), round(im.window[2] * factor))
        sizes.setdefault(factor, set()).add(im.size_hw)
    # the 0.15 m scenes are 2x finer: cut into 128 px windows (64 model px), not 64 px ones (32)
    assert max(sizes[0.5]) == (64, 64) and max(sizes[2.0]) == (256, 256)
    native = plan_training(_opts(tmp_path, mixed, "--steps", "2", "--native-resolution"))
    assert native.spec.model.gsd_m is None
    assert native.lines[0].startswith("training on") and not any("m/px" in line for line in native.lines)
    assert {type(im) for im in native.data.train} == {LabeledImage}
    assert max(im.size_hw for im in native.data.train + native.data.val) == (64, 64)


def test_fine_tuning_trains_at_the_init_checkpoints_gsd(tmp_path, mixed):
    from retinanet.checkpoint import save_dir
    from retinanet.model import build_model

    plan = plan_training(_opts(tmp_path, mixed, "--steps", "2", "--gsd-m", "0.5"))
    save_dir(tmp_path / "init", build_model(plan.spec.model), plan.spec.model)
    tuned = plan_training(_opts(tmp_path / "t", mixed, "--steps", "2", "--init", str(tmp_path / "init")))
    assert tuned.spec.model.gsd_m == 0.5
    assert any("(--init;" in line for line in tuned.lines)


def test_label_boxes_and_pixels_scale_exactly(tmp_path):
    # 300 x 200 px at 0.1 m (columns) x 0.2 m (rows), trained at 0.4 m: 75 x 100 model px, 4 x 2 native per model
    from retinanet.label_images import read_pixels
    from retinanet.train_gsd import resample_image

    pixels = np.zeros((1, 200, 300), np.uint8)
    pixels[0, 20:60, 40:80] = 200  # the labeled object, native px
    path = tmp_path / "a.tif"
    profile = {"driver": "GTiff", "width": 300, "height": 200, "count": 1, "dtype": "uint8"}
    with rasterio.open(
        path, "w", **profile, crs="EPSG:32633", transform=Affine(0.1, 0, 5e5, 0, -0.2, 5e6)
    ) as dst:
        dst.write(pixels)
    item = LabeledImage(str(path), None, np.array([[40, 20, 80, 60]], np.float32), np.zeros(1, np.int64), "a")
    model = resample_image(item, (0.1, 0.2), 0.4)
    assert model.size_hw == (100, 75)
    np.testing.assert_array_equal(model.boxes_xyxy_px, [[10, 10, 20, 30]])
    read = read_pixels(model, (1,))
    assert read.pixels.shape == (1, 100, 75)
    rows, cols = np.nonzero(read.pixels[0] == 200)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (10, 30, 10, 20)
    assert (read.pixels[0] == 200).sum() == 10 * 20  # averaging 4 x 2 native px: no blur at the box edges
    crop = read_pixels(model, (1,), (8, 8, 16, 16)).pixels[0]  # a training tile, model px
    assert crop.shape == (16, 16) and (crop == 200).sum() == 14 * 10  # rows 2:16, cols 2:12 of the crop
    np.testing.assert_array_equal(np.nonzero(crop[:, 5] == 200)[0], np.arange(2, 16))


def test_labels_at_two_gsds_train_on_tiles_at_one(tmp_path, mixed):
    from retinanet.fit import fit
    from retinanet.labeled_tiles import TileSampling, TrainingTiles

    opts = _opts(tmp_path, mixed, "--no-augment")
    plan = plan_training(dataclasses.replace(opts, steps=1, max_steps_per_epoch=1, batch_size=1))
    gsd_m = plan.spec.model.gsd_m
    tiles = TrainingTiles(plan.data.train, (1, 2, 3), TileSampling(64, (1.0, 1.0)), seed=1)
    long_sides_m: dict[float, list[float]] = {}
    for sample in range(len(tiles)):
        image, target = tiles[sample]
        assert max(image.shape[1:]) <= 64
        item = plan.data.train[int(tiles.image_of_sample[sample])]
        boxes = target["boxes"].numpy()
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        whole = sides[(boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < 64) & (boxes[:, 3] < 64)]
        long_sides_m.setdefault(_native_gsd_m(item.path), []).extend(whole * gsd_m)
    assert sorted(long_sides_m) == [0.15, 0.6]
    for native_gsd_m, metres in long_sides_m.items():
        # a vehicle is 4.5 m long at every native GSD: the same model px (within one native px of rounding)
        assert abs(np.median(metres) - VEHICLE_M[1]) <= native_gsd_m + 1e-6, (native_gsd_m, np.median(metres))
    spec = dataclasses.replace(plan.spec, train=dataclasses.replace(plan.spec.train, epochs=1, total_steps=1))

    class Quiet:
        def report(self, metrics, checkpoint_dir):
            pass

    fit(spec, plan.data, Quiet())
    ckpt, _ = resolve_checkpoint(tmp_path / "run")
    assert read_config(ckpt).gsd_m == pytest.approx(0.375)  # detect --model RUN reads at it, no option


def test_plain_images_take_label_gsd_m_or_are_used_as_they_are(tmp_path):
    from PIL import Image

    from retinanet.label_images import read_pixels
    from retinanet.train_gsd import GsdChoice, at_gsd, gsd_lines

    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[8:24, 16:48] = 255
    Image.fromarray(pixels).save(tmp_path / "chip.png")
    item = LabeledImage(
        str(tmp_path / "chip.png"), None, np.array([[16, 8, 48, 24]], np.float32), np.zeros(1, np.int64), "c"
    )
    sides = {item.path: None}
    assert at_gsd([item], GsdChoice(0.3, "--gsd-m"), sides, None) == [item]
    assert "--label-gsd-m" in gsd_lines(GsdChoice(0.3, "--gsd-m"), sides, None)[1]
    (half,) = at_gsd([item], GsdChoice(0.3, "--gsd-m"), sides, 0.15)
    assert half.size_hw == (32, 32)
    np.testing.assert_array_equal(half.boxes_xyxy_px, [[8, 4, 24, 12]])
    read = read_pixels(half, (1, 2, 3))
    assert read.pixels.shape == (3, 32, 32) and read.valid.all()
    rows, cols = np.nonzero(read.pixels[0] == 255)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (4, 12, 8, 24)


def test_native_resolution_and_gsd_m_together_are_a_one_line_usage_error(tmp_path):
    from click.testing import CliRunner

    args = [str(tmp_path), "--out", str(tmp_path / "run"), "--gsd-m", "0.3", "--native-resolution"]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2 and "pass one" in result.output and "Traceback" not in result.output
