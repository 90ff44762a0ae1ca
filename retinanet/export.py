"""A checkpoint -> an ONNX file of its network, and the decoding that turns the file's outputs into boxes.

What the ONNX file holds: the RetinaNet *network* (input normalisation,
backbone, FPN, classification and box-regression heads), one input and two
outputs:

==================  ==========================================================
``images``          float32 ``[B, C, H, W]``, raw scene units (the file
                    subtracts the checkpoint's mean and divides by its std);
                    ``B`` is dynamic, ``H`` and ``W`` are the export's tile
                    size (a multiple of 32, torchvision's padding unit)
``cls_logits``      float32 ``[B, HWA, K]``: per-anchor class logits
``bbox_regression`` float32 ``[B, HWA, 4]``: per-anchor box deltas (dx, dy,
                    dw, dh), torchvision's ``BoxCoder`` weights (1, 1, 1, 1)
==================  ==========================================================

What it leaves out: anchors, box decoding, score threshold, top-k and NMS.
They are data-dependent (a different number of boxes per tile) and stay in
torchvision: ``decode_detections`` runs them on the file's outputs exactly
as ``RetinaNet.forward`` does in eval mode, so eager and exported detections
agree (tests/unit/retinanet/test_export.py states the tolerance).  A
runtime without Python (TensorRT, ONNX Runtime in C++) re-implements those
steps; the anchor sizes, aspect ratios and thresholds it needs are in the
file's metadata (``metadata_props``) and in the checkpoint's ``meta.json``.

Importing this module loads torch; ``onnx`` and ``onnxscript`` (the
``export`` extra) are imported by ``export_onnx`` only.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet

from retinanet.checkpoint import load_dir
from retinanet.errors import CheckpointError

FORMATS = ("onnx",)  # what `aerialdet export --format` writes
_PAD_PX = 32  # torchvision's size_divisible for this model (retinanet.model.build_model)


class ExportError(CheckpointError):
    """An export that cannot be made (unsupported format, missing package, bad tile size)."""


class NetworkOutputs(nn.Module):
    """RetinaNet's normalisation + backbone + FPN + heads, returning the raw head tensors.

    Args:
        model: a torchvision RetinaNet (``retinanet.build_model``), eval mode.
    """

    mean: Tensor  # [1, C, 1, 1] buffers: exported as constants
    std: Tensor

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        channels = len(model.transform.image_mean)
        self.register_buffer("mean", torch.tensor(model.transform.image_mean).reshape(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(model.transform.image_std).reshape(1, channels, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Head outputs for raw ``images``.

        Args:
            images: ``Tensor[B, C, H, W]`` float32, scene units, ``H`` and ``W``
                multiples of 32.

        Returns:
            ``cls_logits`` ``Tensor[B, HWA, K]`` and ``bbox_regression``
            ``Tensor[B, HWA, 4]``.
        """
        normalised = (images - self.mean) / self.std  # as GeneralizedRCNNTransform.normalize
        features = list(self.backbone(normalised).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]


def level_sizes_hw(height_px: int, width_px: int) -> list[tuple[int, int]]:
    """Feature-map sizes of P3-P7 for a padded input of ``height_px`` x ``width_px``.

    Strides 8, 16, 32 (ResNet/MobileNet C3-C5), then P6 and P7 by 3x3
    stride-2 convolutions with padding 1 (``ceil(n / 2)``).

    Example:
        >>> level_sizes_hw(128, 96)
        [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]
    """
    sizes = [(height_px // s, width_px // s) for s in (8, 16, 32)]
    for _ in range(2):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def decode_detections(
    model: RetinaNet, image_size_hw: tuple[int, int], cls_logits: Tensor, bbox_regression: Tensor
) -> list[dict[str, Tensor]]:
    """Anchors, box decoding, thresholds, top-k and NMS on raw head outputs: ``RetinaNet.forward``'s eval tail.

    Args:
        model: the RetinaNet the outputs came from (its anchor generator,
            box coder and thresholds are used; its weights are not).
        image_size_hw: the input's ``(H, W)``, pixels (no padding beyond it).
        cls_logits: ``Tensor[B, HWA, K]`` (the ONNX file's first output).
        bbox_regression: ``Tensor[B, HWA, 4]`` (its second output).

    Returns:
        Per tile ``{"boxes": Tensor[N, 4] xyxy tile px, "scores": Tensor[N],
        "labels": Tensor[N]}``, as the eager model returns.

    Raises:
        ValueError: when the outputs' anchor count does not fit the image size.
    """
    batch = cls_logits.shape[0]
    sizes = level_sizes_hw(*image_size_hw)
    num_locations = sum(h * w for h, w in sizes)
    num_anchors = model.anchor_generator.num_anchors_per_location()[0]
    if cls_logits.shape[1] != num_locations * num_anchors:
        raise ValueError(
            f"cls_logits has {cls_logits.shape[1]} anchors, but a {image_size_hw} input gives "
            f"{num_locations * num_anchors}; pass the size the file was exported for"
        )
    # only the shapes of the feature maps and the image matter to the anchor generator
    features = [torch.empty(1, 1, h, w, dtype=cls_logits.dtype) for h, w in sizes]
    images = ImageList(torch.empty(batch, 1, *image_size_hw), [image_size_hw] * batch)
    anchors = model.anchor_generator(images, features)  # B x Tensor[HWA, 4]
    per_level = [h * w * num_anchors for h, w in sizes]
    head = {
        "cls_logits": list(torch.split(cls_logits, per_level, dim=1)),
        "bbox_regression": list(torch.split(bbox_regression, per_level, dim=1)),
    }
    split_anchors = [list(torch.split(a, per_level)) for a in anchors]
    detections: list[dict[str, Tensor]] = model.postprocess_detections(
        head, split_anchors, images.image_sizes
    )
    return detections


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What ``export_onnx`` wrote.

    Attributes:
        path: the ONNX file.
        tile_size_px: ``H`` = ``W`` of its input.
        seconds: time the export took.
    """

    path: Path
    tile_size_px: int
    seconds: float


def export_onnx(
    checkpoint_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tile_size_px: int | None = None,
) -> ExportResult:
    """Export a checkpoint's network to one ONNX file (weights inside), batch size dynamic.

    Args:
        checkpoint_dir: checkpoint directory (``model.pt`` + ``meta.json``).
        out_path: the ``.onnx`` file to write.
        tile_size_px: input height and width (default: the checkpoint's
            ``tile_size_px``); a multiple of 32.

    Returns:
        Where it went, the tile size and the time taken.

    Raises:
        ExportError: a tile size that is not a multiple of 32, or ``onnx`` /
            ``onnxscript`` missing.
        CheckpointError: a broken checkpoint.

    Example:
        >>> export_onnx("runs/demo/best", "model.onnx")  # doctest: +SKIP
        ExportResult(path=PosixPath('model.onnx'), tile_size_px=512, seconds=41.2)
    """
    _require_packages()
    loaded = load_dir(checkpoint_dir, device="cpu")
    size = tile_size_px or loaded.config.tile_size_px
    if size % _PAD_PX:
        raise ExportError(
            f"--tile-size-px must be a multiple of {_PAD_PX} for an ONNX export "
            f"(torchvision pads tiles to it), got {size}"
        )
    net = NetworkOutputs(loaded.model).eval()
    example = torch.zeros(1, loaded.config.band_config.num_channels, size, size)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and tracing notes
        torch.onnx.export(
            net,
            (example,),
            str(out),
            input_names=["images"],
            output_names=["cls_logits", "bbox_regression"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    _write_metadata(out, loaded.meta, size)
    return ExportResult(out, size, time.perf_counter() - start)


def _require_packages() -> None:
    """Fail in one line when the exporter's packages are missing."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ExportError(
                f"the ONNX export needs the '{package}' package: pip install 'aerialdet[export]'"
            ) from None


def _write_metadata(path: Path, meta: dict[str, object], tile_size_px: int) -> None:
    """Put what decoding needs (config, input layout) into the file's ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    props = {
        "aerialdet.config": json.dumps(meta.get("config", {}), sort_keys=True),
        "aerialdet.input": f"images float32 [B, C, {tile_size_px}, {tile_size_px}] raw scene units",
        "aerialdet.outputs": "cls_logits [B, HWA, K], bbox_regression [B, HWA, 4]; "
        "decode with retinanet.export.decode_detections",
    }
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
