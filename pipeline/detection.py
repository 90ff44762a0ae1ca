"""Model + raw tiles ``[B, C, H, W]`` -> ``list[TileDetections]`` (torch, no Ray).

The model is any callable with torchvision's detection interface: it takes a
list of float32 ``Tensor[C, H, W]`` in the scene's raw units and returns per
tile ``{"boxes": Tensor[N, 4] xyxy tile px, "scores": Tensor[N], "labels":
Tensor[N]}``.  The model scales its input itself (torchvision's
``image_mean``/``image_std``), so the pipeline knows nothing of a model's
normalisation and never imports one: a ``ModelLoader`` (built in ``jobs/``)
says what the model is and loads it where it runs.  Boxes are clipped to the
tile's valid area (the part inside the scene) and boxes left empty by the
clip are dropped.

Precision: ``detect_tiles(..., precision=...)`` runs the network under
``torch.autocast`` in bfloat16 or float16, or in float32.  ``Precision.AUTO``
is resolved where the model runs (``resolve_precision``): float16 on CUDA,
bfloat16 on a CPU with native bfloat16 arithmetic (AVX-512 BF16 or AMX,
detected at run time), else float32.  Only the network (backbone and heads)
runs in reduced precision: a model exposing a ``head`` module (torchvision's
single-stage detectors) has its head outputs cast back to float32, so box
decoding, score thresholds and NMS run in float32 (bfloat16 has 8 mantissa
bits: a coordinate near 1000 px would be rounded to 4 px).

Importing this module loads no torch; ``detect_tiles`` imports it on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from pipeline.choices import (
    Precision as Precision,  # re-exported; defined there so the CLI gets it without numpy
)
from pipeline.georef import clip_boxes_px
from pipeline.types import TileDetections, TileSpec

T = TypeVar("T")

if TYPE_CHECKING:
    import torch

DetectionModel = Callable[[list["torch.Tensor"]], list[dict[str, "torch.Tensor"]]]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), checked at run time."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: Precision | str, device: str) -> Precision:
    """The concrete precision for ``device``: ``auto`` becomes fp16 on CUDA, bf16 on a CPU that has it, else fp32.

    Explicit choices are kept (bf16 on a CPU without native support is
    emulated, and slow; fp16 on CPU runs where torch's CPU autocast has it).

    Example:
        >>> resolve_precision("fp32", "cuda")
        <Precision.FP32: 'fp32'>
        >>> resolve_precision("auto", "cuda:0")
        <Precision.FP16: 'fp16'>
    """
    precision = Precision(precision)
    if precision is not Precision.AUTO:
        return precision
    if device.startswith("cuda"):
        return Precision.FP16
    return Precision.BF16 if cpu_has_native_bf16() else Precision.FP32


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the pipeline needs to know of a model, without its weights.

    Attributes:
        model_id: written to each detection's ``model`` column.
        class_names: name of each label id.
        bands: 1-based scene bands the model takes, in channel order (the
            default of ``--bands``).
        score_thresholds: the operating score of each class (index = label
            id), calibrated on validation (best F1); detect keeps detections
            at or above it unless ``--min-score`` is given.  None: keep all.
        min_overlap_px: the tile overlap the model recommends: its largest
            training object's side, px (cores then hold every object whole;
            detect warns below it).  None: unknown.
        gsd_m: metres per pixel of the imagery the model was trained at:
            detect reads scenes at it (``pipeline.resolution``).  None: unknown.
    """

    model_id: str
    class_names: tuple[str, ...]
    bands: tuple[int, ...]
    score_thresholds: tuple[float, ...] | None = None
    min_overlap_px: int | None = None
    gsd_m: float | None = None


class ModelLoader(Protocol):
    """A picklable recipe for a model: sent to every model actor, loaded there.

    ``retinanet.predictor.CheckpointLoader`` loads a checkpoint directory;
    ``pipeline.standin.StandinLoader`` is the test stand-in.
    """

    @property
    def info(self) -> ModelInfo:
        """What the model is (no weights needed)."""
        ...

    def load(self, device: str) -> DetectionModel:
        """Build the model on ``device`` in eval mode."""
        ...


def detect_tiles(
    model: DetectionModel,
    images: np.ndarray,
    tiles: Sequence[TileSpec],
    *,
    device: str = "cpu",
    precision: Precision | str = Precision.FP32,
) -> list[TileDetections]:
    """Run the model on a batch of tiles.

    Args:
        model: torchvision-style detection model in eval mode, on ``device``.
        images: ``[B, C, H, W]`` raw scene units in any numeric dtype (uint8
            tiles travel as uint8; they become float32 here, on ``device``).
        tiles: B tile specs, in the order of ``images``.
        device: where to run.
        precision: arithmetic of the network (``auto`` is resolved for
            ``device`` by ``resolve_precision``).

    Returns:
        B ``TileDetections`` in tile pixels, clipped to each tile's valid area.

    Example:
        >>> from pipeline.standin import StandinLoader
        >>> from pipeline.tiling import TilingConfig, tile_scene
        >>> tiles = list(tile_scene("s.tif", 64, 64, TilingConfig(tile_size_px=64, overlap_px=0)))
        >>> images = np.zeros((1, 3, 64, 64), np.uint8)
        >>> images[0, 0, 8:16, 8:16] = 255
        >>> detect_tiles(StandinLoader().load("cpu"), images, tiles)[0].boxes_xyxy_px.tolist()
        [[8.0, 8.0, 16.0, 16.0]]
    """
    import torch

    if len(images) != len(tiles):
        raise ValueError(f"got {len(images)} images for {len(tiles)} tiles")
    if len(tiles) == 0:
        return []
    batch = to_device(images, device).float()
    with torch.inference_mode(), reduced_precision(model, device, precision):
        outputs = model(list(batch))
    return [_to_tile_detections(tile, out) for tile, out in zip(tiles, outputs)]


def batches_by_shape(
    items: Sequence[T], shape_of: Callable[[T], tuple[int, ...]], batch_size: int
) -> Iterator[list[T]]:
    """``items`` in batches of at most ``batch_size`` that share one image shape, in order within a shape.

    A model call stacks its tiles into one array: a small scene's clamped tile
    (``pipeline.tiling``, e.g. 320 x 224 px) never shares a batch with a full tile.

    Example:
        >>> list(batches_by_shape([(2, 2), (4, 4), (2, 2), (2, 2)], lambda s: s, 2))
        [[(2, 2), (2, 2)], [(2, 2)], [(4, 4)]]
    """
    by_shape: dict[tuple[int, ...], list[T]] = {}
    for item in items:
        by_shape.setdefault(tuple(shape_of(item)), []).append(item)
    for same in by_shape.values():
        for start in range(0, len(same), batch_size):
            yield same[start : start + batch_size]


def to_device(images: np.ndarray, device: str) -> torch.Tensor:
    """``images`` as a tensor on ``device``, in their own dtype (uint8 crosses to a GPU as uint8).

    On CUDA the host copy is page-locked (pinned) and the transfer is
    asynchronous (``non_blocking``): the model's first kernels queue behind it
    on the same stream, so nothing waits on the host.  Not run on a GPU in
    this project's CI (no device); on the CPU the array is shared, not copied.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if torch.device(device).type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def prepare_model(model: DetectionModel, device: str) -> DetectionModel:
    """Lay a loaded model out for inference on ``device``: channels_last convolution weights on CPU.

    oneDNN's convolutions run faster on NHWC (channels_last) weights: measured
    1.2x on 512 px tiles for a resnet18 RetinaNet in fp32 and in bf16 on 2 CPU
    cores (bench/RESULTS.md).  Inputs need no change: a convolution with
    channels_last weights gives channels_last outputs.  CUDA models are left
    as they are (not measured).  Models that are not ``torch.nn.Module``
    (stand-ins) are returned unchanged.
    """
    import torch

    if isinstance(model, torch.nn.Module) and torch.device(device).type == "cpu":
        return model.to(memory_format=torch.channels_last)
    return model


_AUTOCAST_DTYPES = {Precision.BF16: "bfloat16", Precision.FP16: "float16"}


def reduced_precision(model: DetectionModel, device: str, precision: Precision | str) -> ExitStack:
    """Context for one model call: autocast at ``precision``, head outputs back to float32.

    Returns an empty context for fp32.  A model with a ``head`` module gets a
    forward hook for the duration that casts the head's tensors to float32,
    so post-processing (box decoding, thresholds, NMS) stays in float32.
    """
    import torch

    stack = ExitStack()
    resolved = resolve_precision(precision, device)
    if resolved is Precision.FP32:
        return stack
    device_type = torch.device(device).type
    stack.enter_context(torch.autocast(device_type, dtype=getattr(torch, _AUTOCAST_DTYPES[resolved])))
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Module):
        stack.callback(head.register_forward_hook(lambda _m, _i, out: _to_float32(out)).remove)
    return stack


def _to_float32(value: Any) -> Any:
    """``value`` with every floating tensor in it (dicts, lists, tuples) as float32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _to_tile_detections(tile: TileSpec, out: dict[str, Any]) -> TileDetections:
    return clip_to_tile(
        tile,
        out["boxes"].detach().float().cpu().numpy(),
        out["scores"].detach().float().cpu().numpy(),
        out["labels"].detach().cpu().numpy(),
    )


def clip_to_tile(
    tile: TileSpec, boxes_xyxy_px: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> TileDetections:
    """Clip tile-pixel boxes to the part of the tile inside the scene; drop boxes left empty.

    Padding past the scene's edge holds no objects, so no box may reach into it.
    """
    boxes, keep = clip_boxes_px(
        np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4), tile.valid_width_px, tile.valid_height_px
    )
    return TileDetections(
        tile,
        boxes[keep],
        np.asarray(scores).reshape(-1)[keep],
        np.asarray(labels, np.int64).reshape(-1)[keep],
    )
