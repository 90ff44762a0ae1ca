"""retinanet.fit: the plain epoch loop run in-process (no Ray) with a recording reporter."""

import contextlib
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet.checkpoint import load_dir, load_train_state
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.fit import RunDirectory, Worker, close_epoch, fit
from retinanet.labeled_tiles import read_train_data
from retinanet.model import build_model
from retinanet.train_loop import TrainConfig, make_optimizer, weight_average
from retinanet.train_report import METRICS_FILE, PLOT_FILE, read_metrics
from retinanet.train_sink import write_epoch
from retinanet.train_spec import TrainSpec
from tests.conftest import write_voc

BANDS = BandConfig(mean=(100, 110, 80), std=(50, 50, 50))


def cfg(classes, tile_size_px=128):
    return ModelConfig(
        class_names=classes,
        backbone="resnet18",
        anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
        band_config=BANDS,
        tile_size_px=tile_size_px,
    )


def _chip(folder, name, squares, size=64):
    """A 64 px PNG chip with green squares (x, y, side) and its VOC file of Tree boxes."""
    pixels = np.full((size, size, 3), 90, np.uint8)
    for x, y, side in squares:
        pixels[y : y + side, x : x + side] = (30, 170, 40)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    return write_voc(folder / f"{name}.xml", f"{name}.png", [(x, y, x + s, y + s) for x, y, s in squares])


class RecordingReporter:
    """A ``fit.Reporter`` that keeps every call, and a copy of each checkpoint (``fit`` deletes it)."""

    def __init__(self, keep_dir):
        self.keep_dir = keep_dir
        self.calls = []

    def report(self, metrics, checkpoint_dir):
        kept = None
        if checkpoint_dir is not None:
            kept = shutil.copytree(checkpoint_dir, self.keep_dir / f"reported_{len(self.calls)}")
        self.calls.append((metrics, kept))


class DirectoryCheckpoint:
    """Opens like ``ray.train.Checkpoint``: ``as_directory()``, and no use as a path."""

    def __init__(self, path):
        self.path = path

    def as_directory(self):
        return contextlib.nullcontext(str(self.path))

    def __fspath__(self):
        raise TypeError("use as_directory()")  # what ray.train.Checkpoint does


@pytest.fixture
def tiny_run(tmp_path):
    """One 64 px training chip and one validation chip; a spec of one 1-step epoch."""
    train = _chip(tmp_path, "a", [(6, 8, 14), (36, 30, 18)])
    val = _chip(tmp_path, "b", [(10, 30, 16), (40, 6, 12)])
    data = read_train_data([train], [val], tile_size_px=64)
    train_cfg = TrainConfig(epochs=1, batch_size=1, max_steps_per_epoch=1, warmup_steps=1, augment=False)
    spec = TrainSpec(
        labels=(), out_dir=str(tmp_path / "run"), model=cfg(data.class_names, 64), train=train_cfg
    )
    return spec, data


def test_the_plain_loop_reports_each_epoch_with_its_checkpoint_and_resumes_from_it(tiny_run, tmp_path):
    spec, data = tiny_run
    run = tmp_path / "run"
    reporter = RecordingReporter(tmp_path)
    fit(spec, data, reporter)
    assert len(reporter.calls) == 1  # once per epoch
    metrics, checkpoint = reporter.calls[0]
    assert metrics["epoch"] == 0 and metrics["global_step"] == 1 and metrics["resumed_from_epoch"] is None
    assert metrics["val_num_gt"] == 2 and np.isfinite(metrics["loss"])
    assert "val_per_class" not in metrics and "score_thresholds" not in metrics  # scalars only
    state = load_train_state(checkpoint)  # what resuming reads: optimizer, RNG, epoch, step
    assert state["epoch"] == 0 and state["global_step"] == 1 and state["optimizer"]["state"]
    assert load_dir(checkpoint).config.class_names == ("Tree",)
    assert [row["epoch"] for row in read_metrics(run / METRICS_FILE)] == [0]
    assert (run / "last" / "meta.json").is_file()
    # issue 24: best/ only when validation AP50 is above 0 (one step from random weights finds little)
    assert (
        (run / "best" / "meta.json").is_file() == (metrics["val_ap50"] > 0) != (run / "no_best.txt").is_file()
    )
    assert (run / PLOT_FILE).stat().st_size > 1000  # the plot, drawn by train_report

    # resume from the committed checkpoint: only the next epoch runs, counting on from its step
    longer = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=2))
    resumed = RecordingReporter(tmp_path / "again")
    (tmp_path / "again").mkdir()
    fit(longer, data, resumed, resume=DirectoryCheckpoint(checkpoint))
    assert [(m["epoch"], m["global_step"], m["resumed_from_epoch"]) for m, _ in resumed.calls] == [(1, 2, 0)]
    assert [row["epoch"] for row in read_metrics(run / METRICS_FILE)] == [0, 1]
    steps = [s["step"] for s in load_train_state(resumed.calls[0][1])["optimizer"]["state"].values()]
    assert max(steps) == 2  # AdamW went on from the saved optimizer state


def test_other_ranks_report_without_a_checkpoint_and_write_nothing(tiny_run, tmp_path):
    spec, data = tiny_run
    reporter = RecordingReporter(tmp_path)
    fit(spec, data, reporter, worker=Worker(rank=1, world_size=2))
    assert [(m["epoch"], ckpt) for m, ckpt in reporter.calls] == [(0, None)]
    assert "val_ap50" not in reporter.calls[0][0]  # rank 0 validates
    assert not (tmp_path / "run").exists()


def test_the_run_directory_forgets_epochs_whose_checkpoint_was_never_committed(tmp_path):
    spec = TrainSpec(labels=(), out_dir=str(tmp_path), model=cfg(("tree",)))
    rows = [{"epoch": e, "loss": 1.0} for e in range(3)]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    RunDirectory(spec).trim(1)  # resuming from epoch 0's checkpoint: epochs 1 and 2 run again
    assert [row["epoch"] for row in read_metrics(tmp_path / METRICS_FILE)] == [0]


def test_checkpoints_hold_the_average_and_the_resume_state_the_trained_weights(tmp_path):
    config = cfg(("tree",))
    trained, averaged = build_model(config), build_model(config)  # two different random draws
    metrics = {"epoch": 0, "loss": 1.0, "val_ap50": 0.5, "val_map": 0.2, "val_num_gt": 3}
    state = {"epoch": 0, "global_step": 5, "best_ap50": -1.0, "average": {"n_averaged": torch.tensor(5)}}
    resume_dir, _ = write_epoch(
        tmp_path / "run", trained, config, metrics, state, tmp_path / "t", evaluated=averaged
    )
    key = "head.regression_head.bbox_reg.weight"
    for part in ("best", "last"):
        torch.testing.assert_close(
            load_dir(tmp_path / "run" / part).model.state_dict()[key], averaged.state_dict()[key]
        )
    torch.testing.assert_close(load_dir(resume_dir).model.state_dict()[key], trained.state_dict()[key])
    assert int(load_train_state(resume_dir)["average"]["n_averaged"]) == 5
    assert "average" not in load_train_state(tmp_path / "run" / "last")  # last/'s weights are the average


def test_validation_measures_the_average_not_the_trained_weights(tmp_path):
    config = cfg(("tree",))
    model = build_model(config)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(-50.0)  # the trained weights find nothing
    tc = TrainConfig(ema_half_life_steps=5)
    average = weight_average(model, tc)
    average.update_parameters(model)
    with torch.no_grad():
        average.module.head.classification_head.cls_logits.bias.fill_(50.0)  # the average boxes every anchor
        average.module.head.regression_head.bbox_reg.weight.zero_()
        average.module.head.regression_head.bbox_reg.bias.zero_()
    image = torch.full((3, 128, 128), 100.0)
    target = {"boxes": torch.tensor([[32.0, 32.0, 64.0, 64.0]]), "labels": torch.tensor([0])}
    spec = TrainSpec(labels=(), out_dir=str(tmp_path / "run"), model=config, train=tc)
    metrics = {"epoch": 0, "global_step": 1, "loss": 1.0}
    trainees = (model, make_optimizer(model, tc), average)
    close_epoch(trainees, [([image], [target])], spec, metrics, -1.0, tmp_path / "t", "cpu")
    assert metrics["val_recall"] == 1.0  # the average's anchors: one of them is the box
    trainees = (model, make_optimizer(model, tc), None)
    close_epoch(trainees, [([image], [target])], spec, dict(metrics), -1.0, tmp_path / "t2", "cpu")
    raw = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert raw["val_recall"] == 0.0  # the same call without the average measures the trained weights
