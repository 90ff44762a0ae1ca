"""Ray Train: worker failure recovery and resume on tiny synthetic data; the train CLI end to end.

A worker failure is a real one: ``WorkerKiller`` SIGKILLs a Ray Train worker
process of this test's own cluster once Ray Train has committed the
checkpoint of a given epoch (its ``checkpoint_manager_snapshot.json`` names
it), so the restart must continue from that committed checkpoint.  No hook
in the training code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import psutil
import pytest

from retinanet.checkpoint import load_dir, load_train_state
from retinanet.config import AERIAL_ANCHOR_SIZES_PX, BandConfig, ModelConfig
from retinanet.labeled_tiles import read_train_data
from retinanet.ray_train import RAY_DIR, RUN_NAME, TrainSpec, run_training
from retinanet.synth import SynthConfig, write_scenes
from retinanet.train_loop import TrainConfig

pytestmark = pytest.mark.integration
STEPS = 2  # steps per epoch
WORKER_TITLE = "ray::RayTrainWorker"  # the process title Ray gives a Ray Train worker actor


@pytest.fixture(scope="module")
def train_cluster():
    import ray

    # the controller polls the workers every 2 s by default: a checkpoint is committed sooner
    # after its report, so the kill below lands early in the next epoch
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}},
    )
    yield
    ray.shutdown()


def committed_epoch(out):
    """The epoch of the latest checkpoint Ray Train has committed for the run in ``out``, or None."""
    snapshot = out / RAY_DIR / RUN_NAME / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (FileNotFoundError, ValueError):  # not written yet, or being written
        return None
    return None if latest is None else latest["metrics"]["epoch"]


def train_workers():
    """The Ray Train worker processes of this test's cluster (descendants of this process)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith(WORKER_TITLE):
                found.append(proc)
        except psutil.Error:  # gone meanwhile
            pass
    return found


class WorkerKiller(threading.Thread):
    """SIGKILLs one Ray Train worker, once, as soon as the checkpoint of epoch ``after_epoch`` is committed.

    ``killed`` holds the pid and the epoch committed when it died; ``too_late``
    is set when a later epoch was already committed (the kill would prove less).
    """

    def __init__(self, out, after_epoch):
        super().__init__(daemon=True)
        self.out, self.after_epoch = out, after_epoch
        self.killed, self.too_late = None, None
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(0.05):
            epoch = committed_epoch(self.out)
            if epoch is None or epoch < self.after_epoch:
                continue
            if epoch > self.after_epoch:
                self.too_late = epoch
                return
            workers = train_workers()
            if workers:
                victim = max(workers, key=lambda p: p.pid)
                os.kill(victim.pid, signal.SIGKILL)
                self.killed = (victim.pid, epoch)
                return

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()
        assert self.too_late is None, f"epoch {self.too_late} was committed before a worker could be killed"
        assert self.killed is not None, "no Ray Train worker was killed"
        assert not psutil.pid_exists(self.killed[0])  # a worker really died


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


def data(labels):
    # read once, as the CLI does on the driver; 1 of 2 scenes held out
    return read_train_data([labels], tile_size_px=128, val_fraction=0.5, seed=0)


def epochs_logged(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_worker_killed_mid_run_finishes_from_last_checkpoint(train_cluster, labels, tmp_path):
    out = tmp_path / "run"
    with WorkerKiller(out, after_epoch=0) as killer:  # a worker dies early in epoch 1, once
        result = run_training(spec(labels, out, epochs=3, workers=2), data(labels))
    assert result.error is None
    assert killer.killed[1] == 0  # it died after epoch 0's checkpoint was committed
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


@pytest.mark.slow  # make test-all: the killed-and-resumed run's equal weights (make test) imply the optimizer's resume
def test_resume_continues_epochs_and_optimizer(train_cluster, labels, tmp_path):
    out = tmp_path / "run"
    run_training(spec(labels, out, epochs=2, workers=1), data(labels))  # "interrupted" after 2 of 4 epochs
    first = load_train_state(out / "last")
    assert first["epoch"] == 1
    steps_before = max(s["step"] for s in first["optimizer"]["state"].values())
    # same out dir = same RunConfig(name, storage_path)
    result = run_training(spec(labels, out, epochs=4, workers=1), data(labels))
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


@pytest.mark.parametrize(
    "ema",
    # the weight average's resume is also test_train_cli_resume_keeps_the_runs_weight_average: make test-all
    [pytest.param(None, id="trained-weights"), pytest.param(2, id="weight-average", marks=pytest.mark.slow)],
)
def test_killed_and_resumed_run_gives_the_same_weights_as_an_uninterrupted_one(
    train_cluster, labels, tmp_path, ema
):
    """issue 13: a resumed run replayed the data order and augmentation from the start (loss 1.9077 vs 1.8641).

    Both runs have the same spec; in one, a worker is killed early in epoch 1 (once epoch 0's
    checkpoint is committed) and the run fails (max_failures 0); run again, it resumes from the
    checkpoint of epoch 0.  The data order
    and augmentation are drawn from (seed, epoch, sample) and the checkpoint holds the optimizer
    and RNG states, so the weights match the uninterrupted run's.  With a moving average of the
    weights (what last/ then holds) the resumed run continues the average from the checkpoint too.
    """
    import dataclasses

    import torch

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    base = spec(labels, whole, epochs=2, workers=2)
    no_restart = {"max_failures": 0, "train": dataclasses.replace(base.train, ema_half_life_steps=ema)}
    run_training(
        TrainSpec(**{**spec(labels, whole, epochs=2, workers=2).__dict__, **no_restart}), data(labels)
    )
    with WorkerKiller(killed, after_epoch=0), pytest.raises(Exception, match="(?i)fail"):
        run_training(
            TrainSpec(**{**spec(labels, killed, epochs=2, workers=2).__dict__, **no_restart}), data(labels)
        )
    assert epochs_logged(killed) == [0]  # killed during epoch 1
    run_training(
        TrainSpec(**{**spec(labels, killed, epochs=2, workers=2).__dict__, **no_restart}), data(labels)
    )
    assert epochs_logged(killed) == [0, 1]
    a = torch.load(whole / "last" / "model.pt", weights_only=True)
    b = torch.load(killed / "last" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert load_train_state(killed / "last")["rng"]["torch"].dtype == torch.uint8  # RNG states saved
    assert load_dir(killed / "last").meta.get("weights") == (ema and "moving average, half-life 2 steps")


def _voc_chip(folder, name, objects, size=96):
    """A PNG chip with bright squares and its VOC file: objects = [(class, x, y, side), ...]."""
    from PIL import Image

    pixels = np.full((size, size, 3), 90, np.uint8)
    body = ""
    for cls, x, y, side in objects:
        pixels[y : y + side, x : x + side] = (30, 170, 40) if cls == "Tree" else (150, 120, 90)
        body += (
            f"<object><name>{cls}</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
            f"<xmax>{x + side}</xmax><ymax>{y + side}</ymax></bndbox></object>"
        )
    Image.fromarray(pixels).save(folder / f"{name}.png")
    (folder / f"{name}.xml").write_text(f"<annotation><filename>{name}.png</filename>{body}</annotation>")
    return str(folder / f"{name}.xml")


def test_train_cli_on_voc_chips_validates_and_is_quiet(tmp_path):
    """`aerialdet train` as a user runs it: its own private cluster, VOC labels, explicit --val.

    issue 11: "Dead" first seen in a.xml, "Tree" in b.xml: the Tree boxes were dropped, the
    validation image reported num_gt 0, best/ was never written yet the summary named it.
    issue 8: the output is one line up front, one progress bar, one summary; no Ray lines.
    """
    a = _voc_chip(tmp_path, "a", [("Dead", 8, 8, 12), ("Dead", 50, 20, 14)])
    b = _voc_chip(tmp_path, "b", [("Tree", 10, 40, 12), ("Tree", 60, 60, 16), ("Dead", 40, 8, 10)])
    c = _voc_chip(tmp_path, "c", [("Tree", 20, 20, 12), ("Dead", 60, 30, 12)])
    out = tmp_path / "run"
    args = [
        a,
        b,
        "--val",
        c,
        "--out",
        str(out),
        "--epochs",
        "2",
        "--max-steps-per-epoch",  # 2 steps, not the 25-step epoch floor: a quick test
        "2",
        "--batch-size",
        "1",
        "--cpus-per-worker",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_num_gt"] for r in rows] == [2, 2]  # the validation boxes are counted
    assert all(r["val_ap50"] >= 0 for r in rows)
    # best/ only when validation found something (AP50 > 0); else last/ and the reason (issue 24)
    found = max(r["val_ap50"] for r in rows) > 0
    assert (out / "best" / "meta.json").is_file() == found and (out / "no_best.txt").is_file() != found
    stdout = run.stdout.splitlines()
    assert stdout[0].startswith(
        "training on 2 image(s) with 5 objects (Dead 3, Tree 2); validating on 1 image(s)"
    )
    assert stdout[1].startswith("trained 2 epoch(s), 4 steps")
    if found:
        assert (
            stdout[2].startswith(f"checkpoints: {out / 'best'} (val AP50 ") and str(out / "last") in stdout[2]
        )
    else:
        assert stdout[2].startswith(f"checkpoint: {out / 'last'} (last epoch). No best/: "), stdout[2]
    assert stdout[3] == f"metrics: {out / 'metrics.jsonl'}, {out / 'training.png'}" and len(stdout) == 4
    # stderr holds the warnings said up front (5 objects, 4 steps: too little from scratch) and the
    # progress bar only: no Ray log lines, no worker prints, no colour codes
    lines = [s for s in run.stderr.replace("\r", "\n").splitlines() if s.strip()]
    warnings = [s for s in lines if s.startswith("warning: ")]
    assert any("5 training objects" in w for w in warnings) and any(
        "4 optimizer steps" in w for w in warnings
    )
    bar_states = [s for s in lines if s not in warnings]
    assert bar_states and all(s.startswith("train:") for s in bar_states), run.stderr[-3000:]
    assert "epoch 1" in bar_states[-1] and "val AP50" in bar_states[-1] and "\x1b[3" not in run.stderr
    assert (out / "_logs").is_dir()  # Ray's own logs went to a file under the run


def test_train_cli_resume_keeps_the_runs_weight_average(tmp_path):
    """`train --resume` without --ema continues the run's average; another --ema is refused in one line."""
    a = _voc_chip(tmp_path, "a", [("Tree", 8, 8, 12), ("Tree", 50, 20, 14)])
    b = _voc_chip(tmp_path, "b", [("Tree", 10, 40, 12), ("Tree", 60, 60, 16)])
    out = tmp_path / "run"
    common = [a, "--val", b, "--out", str(out), "--max-steps-per-epoch", "2", "--batch-size", "1"]
    common += ["--cpus-per-worker", "1", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def train(*extra):
        cmd = [sys.executable, "-m", "jobs.train", *common, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    first = train("--epochs", "1", "--ema", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = train("--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["resumed_from_epoch"] for r in rows] == [None, 0]
    assert json.loads((out / "train_spec.json").read_text())["train"]["ema_half_life_steps"] == 3
    assert load_dir(out / "last").meta["weights"] == "moving average, half-life 3 steps"
    refused = train("--epochs", "3", "--resume", "--ema", "0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "started with --ema 3; resume it with --ema 3 or leave --ema out" in refused.stderr
    assert len(json.loads("[" + ",".join((out / "metrics.jsonl").read_text().splitlines()) + "]")) == 2
