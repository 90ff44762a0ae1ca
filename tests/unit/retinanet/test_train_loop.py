import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retinanet.checkpoint import save_dir
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.fit import init_from_checkpoint
from retinanet.labeled_tiles import LabeledTiles, collate, read_labels, read_train_data
from retinanet.model import build_model
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_loop import (
    TrainConfig,
    ema_decay,
    evaluate_model,
    make_optimizer,
    train_one_epoch,
    weight_average,
)
from retinanet.train_report import METRICS_FILE, EpochProgress, read_metrics, summary_lines
from tests.conftest import write_voc

BANDS = BandConfig(mean=(100, 110, 80), std=(50, 50, 50))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("s")
    write_scenes(d, num_scenes=1, cfg=SynthConfig(size_px=256, seam_tile_px=128, seam_overlap_px=0), seed=9)
    return d / "labels.parquet"


def cfg(classes):
    return ModelConfig(
        class_names=classes,
        backbone="resnet18",
        anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
        band_config=BANDS,
        tile_size_px=128,
    )


def chip_batch():
    """One 64 px tile (the smallest a ResNet trains on alone) with a vehicle and a tree square.

    The loss tests train on it: a 128 px batch of two synthetic tiles took 8 s in fp32 and
    167 s in bf16 (no native bfloat16 on that CPU) on 2 cores.
    """
    image = torch.full((3, 64, 64), 90.0)
    image[:, 8:22, 6:20] = torch.tensor([150.0, 120.0, 90.0])[:, None, None]
    image[:, 30:48, 36:54] = torch.tensor([30.0, 170.0, 40.0])[:, None, None]
    boxes = torch.tensor([[6.0, 8.0, 20.0, 22.0], [36.0, 30.0, 54.0, 48.0]])
    return [image], [{"boxes": boxes, "labels": torch.tensor([0, 2])}]


def test_train_steps_reduce_loss_on_one_batch():
    torch.manual_seed(0)
    names = ("vehicle", "building", "tree")
    model = build_model(cfg(names))
    batch = chip_batch()
    # lr 1e-4: at 1e-3 the loss spiked (to 500+) on this batch before it fell
    tc = TrainConfig(lr=1e-4, warmup_steps=1)
    opt = make_optimizer(model, tc)
    first = train_one_epoch(model, opt, [batch], tc, start_step=0, total_steps=20)["loss"]
    for step in range(1, 6):
        last = train_one_epoch(model, opt, [batch], tc, start_step=step, total_steps=20)["loss"]
    assert last < first * 0.7
    metrics = evaluate_model(model, [batch], names)
    assert set(metrics) == {"vehicle", "building", "tree", "overall"}


def test_bf16_training_runs_the_network_in_bf16_and_keeps_weights_and_losses_float32():
    torch.manual_seed(0)
    model = build_model(cfg(("vehicle", "building", "tree")))
    batch = chip_batch()
    seen = {}

    def note(name, dtype):
        seen.setdefault(name, dtype)  # returns None: a hook's return value would replace the output

    model.backbone.body.conv1.register_forward_hook(lambda m, i, out: note("conv1", out.dtype))
    model.head.register_forward_hook(lambda m, i, out: note("head", out["cls_logits"].dtype))
    tc = TrainConfig(lr=1e-4, warmup_steps=1, precision="bf16")
    opt = make_optimizer(model, tc)
    first = train_one_epoch(model, opt, [batch], tc, start_step=0, total_steps=20)["loss"]
    for step in range(1, 6):
        last = train_one_epoch(model, opt, [batch], tc, start_step=step, total_steps=20)["loss"]
    # convolutions ran in bf16; the head's outputs reached the losses as float32 (the hook runs
    # after the test's own, so the test sees the raw bf16 and the loss code the cast)
    assert seen == {"conv1": torch.bfloat16, "head": torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(last) and last < first * 0.7  # it still learns
    fp32 = TrainConfig(lr=1e-4, warmup_steps=1)
    seen.clear()
    train_one_epoch(model, opt, [batch], fp32, start_step=6, total_steps=20)
    assert seen == {"conv1": torch.float32, "head": torch.float32}


def test_finetune_from_one_class_adds_a_second(synth, tmp_path):
    one = read_labels([synth], ("vehicle",), tile_size_px=128)
    assert any("unknown class" in str(i) for i in one.issues)  # other classes reported, not silently used
    old_cfg = cfg(("vehicle",))
    old = build_model(old_cfg)
    torch.nn.init.normal_(old.head.classification_head.cls_logits.weight)
    save_dir(tmp_path / "one", old, old_cfg)

    new_cfg = cfg(("vehicle", "building"))
    model = build_model(new_cfg)
    carried = init_from_checkpoint(model, new_cfg, str(tmp_path / "one"))
    assert carried == ["vehicle"]
    w_old = old.head.classification_head.cls_logits.weight
    w_new = model.head.classification_head.cls_logits.weight
    assert w_new.shape[0] == 9 * 2
    for a in range(9):  # vehicle rows copied, building rows keep the prior init
        assert torch.equal(w_new[a * 2], w_old[a])
    assert torch.sigmoid(model.head.classification_head.cls_logits.bias[1]).item() == pytest.approx(
        0.01, rel=1e-3
    )
    assert torch.equal(model.backbone.body.conv1.weight, old.backbone.body.conv1.weight)
    two = read_labels([synth], ("vehicle", "building"), tile_size_px=128)
    batch = collate([LabeledTiles(two.images, BANDS.bands)[0]])
    tc = TrainConfig(warmup_steps=1)
    out = train_one_epoch(model, make_optimizer(model, tc), [batch], tc, start_step=0, total_steps=2)
    assert np.isfinite(out["loss"])


def _voc_chip(folder, name, objects, size=64):
    """A PNG chip with bright squares and its VOC file: objects = [(class, x, y, side), ...]."""
    from PIL import Image

    pixels = np.full((size, size, 3), 90, np.uint8)
    for _, x, y, side in objects:
        pixels[y : y + side, x : x + side] = (30, 170, 40)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    boxes = [(x, y, x + side, y + side) for _, x, y, side in objects]
    return write_voc(folder / f"{name}.xml", f"{name}.png", boxes, labels=[cls for cls, *_ in objects])


def test_validation_on_voc_images_counts_their_boxes(tmp_path):
    # issue 11: the held-out VOC image reported num_gt 0 (its class was first seen in a
    # later file and dropped), so AP50 was -1 and best/ was never written
    a = _voc_chip(tmp_path, "a", [("Dead", 4, 4, 10)])
    b = _voc_chip(tmp_path, "b", [("Tree", 4, 4, 10), ("Tree", 30, 30, 12)])
    c = _voc_chip(tmp_path, "c", [("Tree", 8, 8, 10), ("Tree", 40, 10, 12), ("Dead", 20, 40, 8)])
    data = read_train_data([a, b], [c])
    assert data.class_names == ("Dead", "Tree") and data.issues == []
    assert data.objects_per_class(data.val) == {"Dead": 1, "Tree": 2}
    model = build_model(cfg(data.class_names))
    loader = DataLoader(LabeledTiles(data.val, (1, 2, 3)), batch_size=2, collate_fn=collate)
    metrics = evaluate_model(model, loader, data.class_names)
    assert metrics["overall"]["num_gt"] == 3 and metrics["Tree"]["num_gt"] == 2
    assert metrics["overall"]["ap50"] >= 0  # measured (AP -1 means "no ground truth")


def test_evaluate_without_images_reports_no_ground_truth():
    metrics = evaluate_model(build_model(cfg(("car",))), [], ("car",))
    assert metrics["overall"]["ap50"] == -1.0 and metrics["overall"]["num_gt"] == 0


def _metrics_row(epoch, ap50):
    return {"epoch": epoch, "global_step": 3 * (epoch + 1), "loss": 1.5 - 0.1 * epoch, "val_ap50": ap50}


def test_summary_names_best_only_when_it_was_written(tmp_path):
    run = tmp_path / "run"
    config = cfg(("car",))
    model = build_model(config)
    run.mkdir()
    (run / METRICS_FILE).write_text("".join(json.dumps(_metrics_row(e, -1.0)) + "\n" for e in range(2)))
    save_dir(run / "last", model, config, extra_meta={"epoch": 1, "metrics": _metrics_row(1, -1.0)})
    text = "\n".join(summary_lines(run))
    assert str(run / "best") not in text and "No best/" in text and f"checkpoint: {run / 'last'}" in text
    assert "trained 2 epoch(s), 6 steps" in text and "val AP50 n/a" in text
    assert "training.png" not in text  # not written here, so not named

    save_dir(run / "best", model, config, extra_meta={"epoch": 0, "metrics": _metrics_row(0, 0.25)})
    text = "\n".join(summary_lines(run))
    assert f"checkpoints: {run / 'best'} (val AP50 0.250, epoch 0); {run / 'last'} (last epoch)" in text


def test_metrics_progress_follows_complete_lines(tmp_path):
    import time

    path = tmp_path / METRICS_FILE
    assert read_metrics(path) == []
    with EpochProgress(path, 3, poll_seconds=0.01) as progress:
        path.write_text(
            json.dumps(_metrics_row(0, 0.5)) + "\n" + '{"epoch": 1, "glo'
        )  # 2nd line half-written
        deadline = time.time() + 5
        while progress._bar.n != 1 and time.time() < deadline:
            time.sleep(0.01)
        assert progress._bar.n == 1 and "val AP50 0.500" in str(progress._bar)
    assert [row["epoch"] for row in read_metrics(path)] == [0]


def test_summary_names_the_calibrated_score_thresholds(tmp_path):
    run = tmp_path / "run"
    config = cfg(("car", "tree"))
    meta = {"epoch": 2, "metrics": _metrics_row(2, 0.5), "score_thresholds": {"car": 0.31, "tree": 0.2}}
    save_dir(run / "best", build_model(config), config, extra_meta={**meta, "calibration": {"iou": 0.4}})
    text = "\n".join(summary_lines(run))
    assert "(val AP50 0.500, epoch 2, best-F1 score car 0.310, tree 0.200 at IoU 0.4)" in text


def test_a_shortened_last_epoch_stops_at_total_steps():
    model = build_model(cfg(("vehicle", "building", "tree")))
    batch = chip_batch()
    tc = TrainConfig(warmup_steps=1)
    out = train_one_epoch(model, make_optimizer(model, tc), [batch] * 5, tc, start_step=8, total_steps=10)
    assert out["steps"] == 2 and out["global_step"] == 10


def test_no_weight_average_unless_asked():
    assert weight_average(torch.nn.Linear(2, 2), TrainConfig()) is None
    with pytest.raises(ValueError, match="ema_half_life_steps"):
        TrainConfig(ema_half_life_steps=0)


def test_weight_average_weighs_each_step_by_half_per_half_life():
    """The average after 6 steps is sum(w_k 0.5^(age_k / h)) / sum(0.5^(age_k / h)), computed by hand."""
    half_life = 2
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = weight_average(net, TrainConfig(ema_half_life_steps=half_life))
    weights, means = [], []
    for n in range(6):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net(torch.randn(8, 2) + n)  # training mode: the running statistics move
        average.update_parameters(net)
        weights.append(net[0].weight.detach().clone())
        means.append(net[1].running_mean.clone())
    share = torch.tensor([0.5 ** ((5 - k) / half_life) for k in range(6)])
    share = share / share.sum()
    torch.testing.assert_close(average.module[0].weight.detach(), sum(s * w for s, w in zip(share, weights)))
    torch.testing.assert_close(average.module[1].running_mean, sum(s * m for s, m in zip(share, means)))
    assert int(average.module[1].num_batches_tracked) == 6  # an integer buffer follows the model
    # another half-life gives another average from the first steps on
    assert ema_decay(2, 3) != pytest.approx(ema_decay(8, 3))
    assert ema_decay(1, 1) == pytest.approx(1 / 3)  # weights 1/2 and 1: the older keeps 1/3
    assert ema_decay(3, 10**6) == pytest.approx(0.5 ** (1 / 3))


def test_train_one_epoch_updates_the_average_after_every_step():
    torch.manual_seed(0)
    model = build_model(cfg(("vehicle", "building", "tree")))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    batch = chip_batch()
    tc = TrainConfig(warmup_steps=1, ema_half_life_steps=50)
    average = weight_average(model, tc)
    train_one_epoch(
        model, make_optimizer(model, tc), [batch] * 3, tc, start_step=0, total_steps=3, average=average
    )
    assert int(average.n_averaged) == 3
    key = "head.classification_head.conv.0.0.weight"
    trained, averaged = model.state_dict()[key], average.module.state_dict()[key]
    assert not torch.equal(averaged, start[key]) and not torch.equal(averaged, trained)
