"""Ray Train: worker failure recovery and resume, on tiny synthetic data."""

from __future__ import annotations

import json
import os

import pytest

from retinanet.checkpoint import load_dir, load_train_state
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.ray_train import FAIL_ENV, FAIL_RANK_ENV, TrainSpec, run_training
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_loop import TrainConfig

pytestmark = pytest.mark.integration
STEPS = 2  # steps per epoch


@pytest.fixture(scope="module")
def train_cluster():
    import ray

    os.environ[FAIL_ENV] = str(STEPS + 1)  # rank 1 dies at the first step of epoch 1, once
    os.environ[FAIL_RANK_ENV] = "1"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {FAIL_ENV: os.environ[FAIL_ENV], FAIL_RANK_ENV: "1"}},
    )
    yield
    ray.shutdown()
    os.environ.pop(FAIL_ENV)
    os.environ.pop(FAIL_RANK_ENV)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    # 16 tiles per scene, 1 of 2 scenes held out: >= 4 steps of 2 tiles per worker
    write_scenes(d, num_scenes=2, cfg=SynthConfig(size_px=512, seam_tile_px=128, seam_overlap_px=0), seed=4)
    return str(d / "labels.parquet")


def spec(labels, out, *, epochs, workers):
    model = ModelConfig(
        class_names=("vehicle", "building", "tree"),
        backbone="resnet18",
        anchor_sizes_px=AERIAL_ANCHOR_SIZES_PX,
        band_config=BandConfig(mean=(100, 110, 80), std=(50, 50, 50)),
        tile_size_px=128,
    )
    return TrainSpec(
        labels=(labels,),
        out_dir=str(out),
        model=model,
        train=TrainConfig(
            epochs=epochs, batch_size=2, max_steps_per_epoch=STEPS, warmup_steps=2, val_fraction=0.5
        ),
        num_workers=workers,
        cpus_per_worker=1,
        max_failures=1,
    )


def epochs_logged(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_worker_killed_mid_run_finishes_from_last_checkpoint(train_cluster, labels, tmp_path):
    out = tmp_path / "run"
    result = run_training(spec(labels, out, epochs=3, workers=2))
    assert result.error is None
    assert (out / ".fault_injected").read_text() == str(STEPS + 1)  # a worker really died
    # epoch 0 ran once; after the restart training went on from its checkpoint, not from scratch
    assert epochs_logged(out) == [0, 1, 2]
    resumed = [
        json.loads(line)["resumed_from_epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert resumed == [None, 0, 0]
    state = load_train_state(out / "last")
    assert state["epoch"] == 2 and state["global_step"] == 3 * STEPS
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as d:
        assert json.loads(open(os.path.join(d, "meta.json")).read())["epoch"] == 2
    assert (out / "best" / "model.pt").exists() and (out / "training.png").stat().st_size > 1000


def test_resume_continues_epochs_and_optimizer(train_cluster, labels, tmp_path):
    out = tmp_path / "run"
    run_training(spec(labels, out, epochs=2, workers=1))  # "interrupted" after 2 of 4 epochs
    first = load_train_state(out / "last")
    assert first["epoch"] == 1
    steps_before = max(s["step"] for s in first["optimizer"]["state"].values())
    result = run_training(
        spec(labels, out, epochs=4, workers=1)
    )  # same out dir = same RunConfig(name, storage_path)
    assert result.error is None
    assert epochs_logged(out) == [0, 1, 2, 3]  # continued: no epoch ran twice
    resumed = [
        json.loads(line)["resumed_from_epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert resumed == [None, None, 1, 1]
    last = load_train_state(out / "last")
    assert last["global_step"] == 4 * STEPS
    # AdamW's per-parameter step counters went on from the saved optimizer state
    assert max(s["step"] for s in last["optimizer"]["state"].values()) == steps_before + 2 * STEPS
    assert load_dir(out / "last").config.class_names == ("vehicle", "building", "tree")
