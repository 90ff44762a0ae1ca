"""``TrainSpec``: everything a training run needs but the images, and its JSON form.

The driver builds one (``retinanet.train_plan``), writes it as
``OUT/train_spec.json`` (what ``--resume`` reads back) and sends its JSON to
every worker; ``retinanet.fit`` runs it.  Plain data: no torch, no Ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from retinanet.config import ModelConfig
from retinanet.train_loop import TrainConfig

SPEC_FILE = "train_spec.json"


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs but the images (JSON-able, sent to every worker).

    Attributes:
        labels: label files the images were read from (recorded in train_spec.json).
        out_dir: checkpoint directory root.
        model: model configuration (class names, bands, backbone, ...).
        train: optimisation settings.
        val_labels: explicit validation label files (else scenes were held out).
        init_checkpoint: checkpoint to fine-tune from.
        num_workers: Ray Train workers.
        use_gpu: one GPU per worker.
        max_failures: worker failures tolerated (restart from last checkpoint).
        cpus_per_worker: CPUs (and torch threads) per worker.
        backbone_weights: a torchvision ResNet state dict (e.g. ImageNet) to
            start the backbone from (from scratch and without ``init_checkpoint``).
        largest_object_px: the largest side of any training box, px; the
            checkpoints record it (``meta.json`` ``largest_object_px``) as the
            overlap detect should use.
        input_kind: the pixel kind of the training images, as the
            checkpoints' ``meta.json`` ``input`` records it
            (``retinanet.checkpoint_input``); empty when unknown.
        class_map: ``--map`` (label name, class) pairs the labels were read with
            (``retinanet.class_map``); a resumed run reads its labels with them.
        single_class: ``--single-class``: every label was read as this class.
        label_gsd_m: ``--label-gsd-m``: metres per pixel of plain (not
            georeferenced) images; a resumed run resamples them alike.
    """

    labels: tuple[str, ...]
    out_dir: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    val_labels: tuple[str, ...] = ()
    init_checkpoint: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    max_failures: int = 1
    cpus_per_worker: int = 1
    backbone_weights: str | None = None
    largest_object_px: float | None = None
    input_kind: dict[str, Any] = field(default_factory=dict)
    class_map: tuple[tuple[str, str], ...] = ()
    single_class: str | None = None
    label_gsd_m: float | None = None


def spec_to_json(spec: TrainSpec) -> dict[str, Any]:
    """JSON form of a TrainSpec (sent to workers, saved as train_spec.json)."""
    out = asdict(spec)
    out["model"] = spec.model.to_json()
    return out


def spec_from_json(data: dict[str, Any]) -> TrainSpec:
    """Inverse of ``spec_to_json``."""
    return TrainSpec(
        labels=tuple(data["labels"]),
        out_dir=data["out_dir"],
        model=ModelConfig.from_json(data["model"]),
        train=TrainConfig(**data["train"]),
        val_labels=tuple(data["val_labels"]),
        init_checkpoint=data["init_checkpoint"],
        num_workers=data["num_workers"],
        use_gpu=data["use_gpu"],
        max_failures=data["max_failures"],
        cpus_per_worker=data["cpus_per_worker"],
        backbone_weights=data.get("backbone_weights"),
        largest_object_px=data.get("largest_object_px"),
        input_kind=data.get("input_kind") or {},
        class_map=tuple((str(s), str(t)) for s, t in data.get("class_map", ())),
        single_class=data.get("single_class"),
        label_gsd_m=data.get("label_gsd_m"),
    )
