"""Every label format trains and validates the same way: random tiles, whole-image validation, best/ written."""

import json

import geopandas as gpd
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from retinanet.checkpoint import load_dir
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.label_formats import LabeledImage
from retinanet.labeled_tiles import (
    EpochSampler,
    LabeledTiles,
    TileSampling,
    TrainingTiles,
    collate,
    grid_tiles,
    read_train_data,
)
from retinanet.model import build_model
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_loop import TrainConfig, evaluate_model, min_epoch_tiles, schedule, steps_per_epoch
from retinanet.train_sink import write_epoch
from tests.conftest import write_voc

SQUARES = [(10, 12, 14), (50, 40, 18), (30, 70, 12)]  # (x, y, side)


def _chip(folder, name, size=96, squares=SQUARES):
    pixels = np.full((size, size, 3), 90, np.uint8)
    for x, y, side in squares:
        pixels[y : y + side, x : x + side] = (30, 170, 40)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    return [(x, y, x + side, y + side) for x, y, side in squares]


def _coco(d):
    images, anns = [], []
    for i in range(3):
        for box in _chip(d, f"c{i}"):
            anns.append(
                {"image_id": i, "category_id": 1, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
            )
        images.append({"id": i, "file_name": f"c{i}.png"})
    (d / "l.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "Tree"}]})
    )
    return [d / "l.json"]


def _voc(d):
    files = []
    for i in range(3):
        files.append(write_voc(d / f"v{i}.xml", f"v{i}.png", _chip(d, f"v{i}")))
    return files


def _csv(d):
    rows = ["image_path,xmin,ymin,xmax,ymax,label"]
    for i in range(3):
        rows += [f"d{i}.png,{a},{b},{c},{e},Tree" for a, b, c, e in _chip(d, f"d{i}")]
    (d / "l.csv").write_text("\n".join(rows) + "\n")
    return [d / "l.csv"]


def _geoparquet(d):
    write_scenes(d, num_scenes=2, cfg=SynthConfig(size_px=256, seam_tile_px=128, seam_overlap_px=0), seed=5)
    return [d / "labels.parquet"]


def _geopackage(d):
    (parquet,) = _geoparquet(d)
    gdf = gpd.read_parquet(parquet)
    gdf[["label", "scene", "geometry"]].to_file(d / "labels.gpkg")
    return [d / "labels.gpkg"]


FORMATS = {
    "COCO": _coco,
    "VOC": _voc,
    "DeepForest CSV": _csv,
    "GeoParquet": _geoparquet,
    "GeoPackage": _geopackage,
}


def _config(class_names):
    return ModelConfig(
        class_names=class_names,
        backbone="resnet18",
        anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
        band_config=BandConfig(mean=(100, 110, 80), std=(50, 50, 50)),
        tile_size_px=128,
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_validation_counts_boxes_and_writes_best_for_every_format(tmp_path, fmt):
    labels = FORMATS[fmt](tmp_path)
    data = read_train_data(labels, tile_size_px=128, val_fraction=0.5, seed=0)
    assert data.train and data.val and data.issues == []
    config = _config(data.class_names)
    model = build_model(config)
    # a few steps on training tiles, as a worker runs them
    tiles = TrainingTiles(data.train, (1, 2, 3), TileSampling(tile_size_px=128), seed=0)
    batch = collate([tiles[(0, i)] for i in range(min(2, len(tiles)))])
    assert all(len(t["boxes"]) == len(t["labels"]) for t in batch[1])
    val = DataLoader(LabeledTiles(grid_tiles(data.val, 128), (1, 2, 3)), batch_size=2, collate_fn=collate)
    ev = evaluate_model(model, val, data.class_names, calibration_iou=0.4)
    assert ev["overall"]["num_gt"] == sum(len(im.labels) for im in data.val) > 0
    assert ev["overall"]["ap50"] >= 0 and set(ev["calibration"]) == set(data.class_names)
    metrics = {
        "epoch": 0,
        "loss": 1.0,
        "val_ap50": ev["overall"]["ap50"],
        "val_map": ev["overall"]["map"],
        "val_num_gt": ev["overall"]["num_gt"],
        "score_thresholds": {k: v["score_threshold"] for k, v in ev["calibration"].items()},
        "calibration": {"iou": 0.4, "per_class": ev["calibration"]},
    }
    state = {"epoch": 0, "global_step": 1, "best_ap50": -1.0}
    write_epoch(tmp_path / "run", model, config, metrics, state, tmp_path / "tmp")
    # issue 24: AP50 0.0 from random weights cannot rank epochs, so best/ needs AP50 > 0; last/ holds
    # the same calibration either way
    assert (tmp_path / "run" / "best").is_dir() == (metrics["val_ap50"] > 0)
    meta = load_dir(tmp_path / "run" / "last").meta
    assert set(meta["score_thresholds"]) == set(data.class_names) and meta["calibration"]["iou"] == 0.4


def test_no_validation_boxes_writes_last_only(tmp_path):
    config = _config(("Tree",))
    metrics = {"epoch": 0, "loss": 1.0, "val_ap50": -1.0, "val_map": -1.0, "val_num_gt": 0}
    write_epoch(tmp_path / "run", build_model(config), config, metrics, {"best_ap50": -1.0}, tmp_path / "t")
    assert (tmp_path / "run" / "last" / "meta.json").is_file() and not (tmp_path / "run" / "best").exists()


def _big_image(tmp_path, size_hw=(1035, 1249)):
    """A 1249 x 1035 px image with 12 x 12 px objects on a 100 px grid (value 200 on 50)."""
    h, w = size_hw
    pixels = np.full((h, w, 3), 50, np.uint8)
    boxes = []
    for y in range(20, h - 20, 100):
        for x in range(20, w - 20, 100):
            pixels[y : y + 12, x : x + 12] = 200
            boxes.append((x, y, x + 12, y + 12))
    Image.fromarray(pixels).save(tmp_path / "big.png")
    boxes = np.array(boxes, np.float32)
    return LabeledImage(str(tmp_path / "big.png"), None, boxes, np.zeros(len(boxes), np.int64), "big", (h, w))


def test_a_large_image_gives_many_tiles_whose_boxes_sit_on_the_objects(tmp_path):
    big = _big_image(tmp_path)
    tiles = TrainingTiles([big], (1, 2, 3), TileSampling(tile_size_px=256, scale_range=(1.0, 1.0)), seed=3)
    assert len(tiles) == 25  # 5 x 5 tiles of 256 px cover 1249 x 1035 px
    assert steps_per_epoch(len(tiles), TrainConfig(batch_size=4)) == 7
    for i in range(len(tiles)):
        image, target = tiles[(0, i)]
        assert tuple(image.shape) == (3, 256, 256)
        for x1, y1, x2, y2 in target["boxes"].round().int().tolist():
            patch = image[0, y1:y2, x1:x2]
            assert (
                patch.numel() and (patch == 200).all()
            )  # the (possibly clipped) box holds object pixels only
        whole = (image[0] == 200).sum() == sum(
            (b[2] - b[0]) * (b[3] - b[1]) for b in target["boxes"].tolist()
        )
        assert whole or len(target["boxes"]) < 9  # an object cut to a sliver was dropped, not kept
    # the same (epoch, sample) gives the same tile; another epoch another one
    assert torch.equal(tiles[(0, 4)][0], tiles[(0, 4)][0]) and not torch.equal(
        tiles[(0, 4)][0], tiles[(1, 4)][0]
    )


def test_scale_jitter_and_augmentation_keep_boxes_on_objects(tmp_path):
    from retinanet.augment import OverheadAugment

    big = _big_image(tmp_path)
    sampling = TileSampling(tile_size_px=256, scale_range=(0.7, 1.4))
    tiles = TrainingTiles([big], (1, 2, 3), sampling, OverheadAugment(jitter=0.0, hue_deg=0.0), seed=1)
    sizes = set()
    for i in range(len(tiles)):
        image, target = tiles[(2, i)]
        sizes.add(image.shape[-1])
        for x1, y1, x2, y2 in target["boxes"].tolist():
            inner = image[0, int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
            assert inner.numel() == 0 or inner.mean() > 150  # bilinear edges aside, the box is on the object
    assert max(sizes) - min(sizes) <= 4 and all(250 <= s <= 262 for s in sizes)  # resized back to ~256 px


def test_small_chips_are_used_whole_without_an_epoch_floor(tmp_path):
    boxes = _chip(tmp_path, "chip", size=96)
    item = LabeledImage(
        str(tmp_path / "chip.png"), None, np.array(boxes, np.float32), np.zeros(3, np.int64), "c", (96, 96)
    )
    tiles = TrainingTiles([item, item], (1, 2, 3), TileSampling(tile_size_px=128, scale_range=(1.0, 1.0)))
    assert len(tiles) == 2
    image, target = tiles[(0, 0)]
    assert (
        tuple(image.shape) == (3, 96, 96) and target["boxes"].tolist() == np.array(boxes, np.float32).tolist()
    )


def test_a_small_data_set_fills_the_shortest_epoch_with_fresh_crops(tmp_path):
    big = _big_image(tmp_path)
    config = TrainConfig(batch_size=4, min_steps_per_epoch=10)
    sampling = TileSampling(tile_size_px=256, scale_range=(1.0, 1.0))
    tiles = TrainingTiles([big], (1, 2, 3), sampling, seed=3, min_tiles=min_epoch_tiles(config))
    assert len(tiles) == 40 and steps_per_epoch(len(tiles), config) == 10  # 25 tiles cover the image
    crops = [tiles[(0, i)][1]["boxes"] for i in (0, 25, 26)]  # sample 25 repeats the image: a new crop
    assert not all(torch.equal(crops[0], c) for c in crops[1:])
    two_workers = TrainingTiles([big], (1, 2, 3), sampling, min_tiles=min_epoch_tiles(config, num_workers=2))
    assert len(two_workers) == 80
    plenty = TrainingTiles([big], (1, 2, 3), sampling, min_tiles=10)
    assert len(plenty) == 25  # enough tiles: nothing repeated


def test_the_epoch_floor_keeps_each_images_share():
    from retinanet.labeled_tiles import epoch_images

    big, chip = (1035, 1249), (256, 256)  # 25 tiles and 1 tile of 256 px
    assert np.bincount(epoch_images([big, chip], 256, min_tiles=52)).tolist() == [50, 2]
    assert np.bincount(epoch_images([big, chip], 256, min_tiles=50)).tolist() == [48, 2]  # not [49, 1]
    assert sorted(np.bincount(epoch_images([chip] * 10, 256, min_tiles=15)).tolist()) == [1] * 5 + [2] * 5


def test_a_resumed_run_trains_the_steps_left_whatever_its_epochs_are_now():
    from retinanet.train_loop import epochs_to_run

    assert epochs_to_run(0, 0, 300, 25) == range(0, 12)
    assert epochs_to_run(21, 147, 300, 25) == range(21, 28)  # was 7-step epochs: 153 steps left, 7 epochs
    assert epochs_to_run(5, 300, 300, 25) == range(5, 5)  # done


def test_epoch_sampler_shards_and_repeats_by_epoch():
    a0 = list(EpochSampler(10, rank=0, num_replicas=2, seed=1))
    a1 = list(EpochSampler(10, rank=1, num_replicas=2, seed=1))
    assert sorted(i for _, i in a0 + a1) == list(range(10)) and len(a0) == 5
    again = EpochSampler(10, rank=0, num_replicas=2, seed=1)
    assert list(again) == a0  # a restarted worker draws the same order
    again.set_epoch(1)
    assert [i for _, i in again] != [i for _, i in a0] and {e for e, _ in again} == {1}


def test_schedule_in_steps_with_epochs_implied():
    assert schedule(25, TrainConfig(batch_size=4, epochs=3)) == (3, 21)
    assert schedule(25, TrainConfig(batch_size=4, total_steps=30)) == (
        5,
        30,
    )  # 7 steps per epoch: 5 epochs, last cut
    assert schedule(25, TrainConfig(batch_size=4, total_steps=30), num_workers=2) == (8, 30)


def test_grid_tiles_cut_only_very_large_validation_images(tmp_path):
    big = _big_image(tmp_path)
    assert grid_tiles([big], 256) == [big]  # 1249 px: whole
    tiles = grid_tiles([big], 512, max_side_px=1000)
    assert len(tiles) == 9 and tiles[-1].window == (1024, 1024, 225, 11)
    assert sum(len(t.labels) for t in tiles) == len(big.labels)  # the grid cuts no object here
