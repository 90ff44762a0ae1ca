"""The only ``import ray.train``: RetinaNet training on Ray Train (V2), adapting ``retinanet.fit``.

``run_training(spec, data)`` builds a ``TorchTrainer`` whose workers run
``train_loop_per_worker``: it hands the plain loop (``retinanet.fit.fit``)
Ray Train's pieces and nothing else.  The label files are read once, on the
driver (``retinanet.labeled_tiles.read_train_data``), and the split images
reach the workers through Ray's object store.  Ray touch points are numbered:

# [1] prepare_data_loader: device placement (our ``EpochSampler`` shards the
#     training tiles by rank, in an order drawn from (seed, epoch))
# [2] prepare_model: DDP (gloo on CPU, nccl on GPU)
# [3] report + checkpoint (rank 0): ``ray.train.report`` every epoch, the
#     ``fit.Reporter`` of the workers
# [4] ray.train.get_checkpoint(): resume (re-run / FailureConfig restart)

Every worker trains on random tiles of ``ModelConfig.tile_size_px`` cut from
the images (``retinanet.labeled_tiles.TrainingTiles``), for
``TrainConfig.total_steps`` optimizer steps (else ``epochs`` epochs).

Outputs in ``out_dir``: ``last/`` (every epoch) and ``best/`` (the epoch
with the best validation AP50; written only when the validation images hold
boxes, since AP50 is undefined without them; its ``meta.json`` holds
``score_thresholds``, the best-F1 score per class at
``TrainConfig.calibration_iou``), checkpoint directories that
``aerialdet detect --model`` takes; ``metrics.jsonl`` and ``training.png``
(``retinanet.train_sink.RunDirectory``); and Ray
Train's own run state under ``out_dir/ray/`` (what ``--resume`` and worker
restarts continue from).  Workers print nothing: progress is the metrics
file, notes go to logging (Ray's worker log files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

# re-exported: callers of the Ray module before retinanet.fit / retinanet.train_spec existed
from retinanet.fit import init_from_checkpoint
from retinanet.train_sink import write_epoch
from retinanet.train_spec import SPEC_FILE, TrainSpec, spec_from_json, spec_to_json

if TYPE_CHECKING:
    from ray.train import Result

    from retinanet.labeled_tiles import TrainData

__all__ = [
    "RAY_DIR",
    "RUN_NAME",
    "TrainSpec",
    "init_from_checkpoint",
    "run_training",
    "spec_from_json",
    "spec_to_json",
    "train_loop_per_worker",
    "write_epoch",
]

RAY_DIR = "ray"
RUN_NAME = "train"


class _RayReporter:
    """``fit.Reporter`` of a Ray Train worker: every epoch is a ``ray.train.report``."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Report the epoch; rank 0's checkpoint directory becomes Ray Train's checkpoint to commit."""
        import ray.train

        checkpoint = (
            None if checkpoint_dir is None else ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        )
        ray.train.report(metrics, checkpoint=checkpoint)  # [3]


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """Ray Train worker body: ``fit.fit`` with Ray Train's placement, reporting and resume.

    Args:
        payload: ``{"spec": spec_to_json(spec), "data": ObjectRef[TrainData]}``.
    """
    import ray
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_data_loader, prepare_model

    from retinanet.fit import Worker, fit

    spec = spec_from_json(payload["spec"])
    data = ray.get(payload["data"])
    context = ray.train.get_context()
    torch.set_num_threads(max(1, spec.cpus_per_worker))
    worker = Worker(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=get_device(),
        prepare_model=prepare_model,  # [2]
        # our sampler shards and orders by (seed, epoch): Ray adds none
        prepare_loader=lambda loader: prepare_data_loader(  # [1]
            loader, add_dist_sampler=False, move_to_device=False
        ),
    )
    resume = ray.train.get_checkpoint()  # [4]
    fit(spec, data, _RayReporter(), resume=resume, worker=worker)


def run_training(spec: TrainSpec, data: TrainData) -> Result:
    """Run (or resume) training on the connected Ray cluster.

    Re-running with the same ``out_dir`` resumes from Ray Train's latest
    checkpoint (Ray Train V2 restores a run by its ``RunConfig(name,
    storage_path)``).  ``FailureConfig(max_failures)`` restarts the workers
    from the last committed checkpoint when one dies.

    Args:
        spec: the run's settings.
        data: the images, read once on the driver (``read_train_data``),
            with ids into ``spec.model.class_names``.

    Returns:
        Ray Train's ``Result``.

    Raises:
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out_dir = Path(spec.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = TrainSpec(**{**spec.__dict__, "out_dir": str(out_dir)})
    (out_dir / SPEC_FILE).write_text(json.dumps(spec_to_json(spec), indent=2))
    trainer = TorchTrainer(
        train_loop_per_worker,
        # the images travel through the object store, not inside the config Ray Train logs
        train_loop_config={"spec": spec_to_json(spec), "data": ray.put(data)},
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.num_workers,
            use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(out_dir / RAY_DIR),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()
