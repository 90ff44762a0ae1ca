"""Frozen model configuration, stored in a checkpoint's ``meta.json``.

``ModelConfig`` is everything needed to rebuild the network and to turn raw
scene pixels into model input.  It is built from CLI flags in ``jobs/`` or
read back from a checkpoint; nothing else constructs it.

Anchors: the focal-loss paper uses base sizes 32, 64, 128, 256, 512 px on
P3-P7 with 3 scales per octave (2^0, 2^(1/3), 2^(2/3)) and aspect ratios
1:2, 1:1, 2:1, i.e. 9 anchors per location.  Aerial objects are small (a car
at 0.3 m ground sample distance is about 15 x 7 px), so ``AERIAL_ANCHOR_SIZES_PX``
halves every size; pass ``anchor_sizes_px`` to choose your own.

Focal loss: torchvision's classification head calls
``torchvision.ops.sigmoid_focal_loss`` with the paper's alpha 0.25 and
gamma 2; they are not configurable here on purpose.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

PAPER_ANCHOR_SIZES_PX: tuple[int, ...] = (32, 64, 128, 256, 512)
AERIAL_ANCHOR_SIZES_PX: tuple[int, ...] = (16, 32, 64, 128, 256)
PAPER_ANCHOR_SCALES: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
PAPER_ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)

# The largest tile edge a checkpoint may ask for: an 8192 px, 3-band float32
# tile is 768 MiB before the network's activations.
MAX_TILE_SIZE_PX = 8192


class Backbone(str, Enum):
    """Feature extractors under the FPN."""

    RESNET18 = "resnet18"
    RESNET34 = "resnet34"
    RESNET50 = "resnet50"
    MOBILENET_V3_LARGE = "mobilenet_v3_large"


class P6Input(str, Enum):
    """Where P6 is computed from: C5 (paper, torchvision v2) or P5 (torchvision v1, DeepForest)."""

    C5 = "c5"
    P5 = "p5"


class BoxLoss(str, Enum):
    """Box regression loss: L1 on encoded offsets (torchvision's RetinaNet) or GIoU on decoded boxes."""

    L1 = "l1"
    GIOU = "giou"


class NormLayer(str, Enum):
    """Batch norm kind: trainable (from scratch) or frozen (ImageNet-initialised releases)."""

    BATCH = "batch"
    FROZEN_BATCH = "frozen_batch"


BACKBONES: tuple[str, ...] = tuple(b.value for b in Backbone)
BOX_LOSSES: tuple[str, ...] = tuple(b.value for b in BoxLoss)


def _enum(kind: type[Enum], value: Any, field_name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = [m.value for m in kind]
        raise ValueError(f"ModelConfig.{field_name} must be one of {choices}, got {value!r}") from None


def _number_tuple(values: Any, field_name: str, *, positive: bool = False) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{field_name} must be a list of numbers, got {values!r}")
    out = tuple(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{field_name} must hold finite numbers, got {values!r}")
        if positive and v <= 0:
            raise ValueError(f"{field_name} must be > 0, got {values!r}")
    return out


def _int_in(value: Any, field_name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"ModelConfig.{field_name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BandConfig:
    """Which scene bands feed the model and how the model scales their raw values.

    The model's own transform computes ``(raw - mean[i]) / std[i]`` for input
    channel ``i`` (torchvision's ``image_mean``/``image_std``), with ``raw`` in
    the scene's own units (uint8 DN, uint16 DN or float reflectance), so the
    same model serves uint8, uint16 and float imagery and every caller passes
    raw values.

    Attributes:
        bands: 1-based band indexes of the scene, in model channel order.
        mean: per model channel, in raw units, finite.
        std: per model channel, in raw units, finite and > 0.
    """

    bands: tuple[int, ...] = (1, 2, 3)
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (64.0, 64.0, 64.0)

    def __post_init__(self) -> None:
        if isinstance(self.bands, (str, bytes)) or not self.bands:
            raise ValueError(f"BandConfig.bands must name at least one band, got bands={self.bands!r}")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.bands):
            raise ValueError(f"BandConfig.bands are 1-based integers, got bands={self.bands!r}")
        _number_tuple(self.mean, "BandConfig.mean")
        _number_tuple(self.std, "BandConfig.std", positive=True)
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise ValueError(
                "BandConfig.bands, mean and std must have the same length, got "
                f"bands={self.bands}, mean={self.mean}, std={self.std}"
            )

    @property
    def num_channels(self) -> int:
        """Number of model input channels (C)."""
        return len(self.bands)

    @classmethod
    def from_json(cls, data: Any) -> BandConfig:
        """Inverse of ``dataclasses.asdict``; any other shape is a ``ValueError``."""
        if not isinstance(data, dict) or set(data) != {"bands", "mean", "std"}:
            raise ValueError(f"band_config must be an object with bands, mean and std, got {data!r}")
        for key, value in data.items():
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"band_config.{key} must be a list, got {value!r}")
        return cls(bands=tuple(data["bands"]), mean=tuple(data["mean"]), std=tuple(data["std"]))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """RetinaNet hyper-parameters (focal-loss paper defaults) for aerial tiles.

    Attributes:
        class_names: foreground classes; label id ``i`` is ``class_names[i]``.
        backbone: the feature extractor.
        anchor_sizes_px: base anchor size per pyramid level P3..P7.
        anchor_scales: scales per octave, multiplied with each base size.
        aspect_ratios: height/width ratios.
        prior_probability: classifier bias prior (initial foreground prob).
        score_thresh: candidates below this score are dropped.
        topk_candidates: candidates kept per level before NMS.
        nms_thresh: IoU threshold of the per-tile NMS.
        detections_per_tile: cap on detections per tile after NMS.
        band_config: band order and scaling.
        tile_size_px: tile size the model was trained at (a training crop,
            not the detect tile size).
        gsd_m: ground sample distance of the training imagery, metres/pixel.
        p6_input: P6 from C5 (paper) or P5 (torchvision v1, DeepForest).
        norm_layer: trainable or frozen batch norm.
        box_loss: box regression loss: ``l1`` on the encoded offsets
            (torchvision's RetinaNet; the paper uses smooth L1) or ``giou``
            on the decoded boxes (torchvision's RetinaNet v2), which scores a
            box by its overlap with the labeled one.
    """

    class_names: tuple[str, ...] = ("object",)
    backbone: Backbone = Backbone.RESNET50
    anchor_sizes_px: tuple[int, ...] = PAPER_ANCHOR_SIZES_PX
    anchor_scales: tuple[float, ...] = PAPER_ANCHOR_SCALES
    aspect_ratios: tuple[float, ...] = PAPER_ASPECT_RATIOS
    prior_probability: float = 0.01
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_tile: int = 1000
    band_config: BandConfig = field(default_factory=BandConfig)
    tile_size_px: int = 1024
    gsd_m: float | None = None
    p6_input: P6Input = P6Input.C5
    norm_layer: NormLayer = NormLayer.BATCH
    box_loss: BoxLoss = BoxLoss.L1

    def __post_init__(self) -> None:
        names = self.class_names
        if (
            not isinstance(names, (tuple, list))
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(f"ModelConfig.class_names must be a list of non-empty names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"ModelConfig.class_names must be unique, got {names}")
        object.__setattr__(self, "backbone", _enum(Backbone, self.backbone, "backbone"))
        object.__setattr__(self, "p6_input", _enum(P6Input, self.p6_input, "p6_input"))
        object.__setattr__(self, "norm_layer", _enum(NormLayer, self.norm_layer, "norm_layer"))
        object.__setattr__(self, "box_loss", _enum(BoxLoss, self.box_loss, "box_loss"))
        if not isinstance(self.band_config, BandConfig):
            raise ValueError(f"ModelConfig.band_config must be a BandConfig, got {self.band_config!r}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        sizes = _number_tuple(self.anchor_sizes_px, "ModelConfig.anchor_sizes_px", positive=True)
        if len(sizes) != 5:
            raise ValueError(
                "ModelConfig.anchor_sizes_px needs one size per level P3..P7 (5), "
                f"got anchor_sizes_px={self.anchor_sizes_px}"
            )
        _number_tuple(self.anchor_scales, "ModelConfig.anchor_scales", positive=True)
        _number_tuple(self.aspect_ratios, "ModelConfig.aspect_ratios", positive=True)
        for name in ("prior_probability", "score_thresh", "nms_thresh"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                if not (name == "score_thresh" and value == 0):
                    raise ValueError(f"ModelConfig.{name} must be a number in (0, 1), got {value!r}")
        _int_in(self.topk_candidates, "topk_candidates", 1, 10**6)
        _int_in(self.detections_per_tile, "detections_per_tile", 1, 10**6)
        _int_in(self.tile_size_px, "tile_size_px", 32, MAX_TILE_SIZE_PX)
        if self.gsd_m is not None:
            _number_tuple((self.gsd_m,), "ModelConfig.gsd_m", positive=True)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (K)."""
        return len(self.class_names)

    @property
    def num_anchors_per_location(self) -> int:
        """Anchors per feature-map location (A = scales x ratios, 9 in the paper)."""
        return len(self.anchor_scales) * len(self.aspect_ratios)

    def anchor_sizes_per_level(self) -> tuple[tuple[float, ...], ...]:
        """Anchor sizes per level, as torchvision's ``AnchorGenerator`` takes them."""
        return tuple(tuple(float(base * s) for s in self.anchor_scales) for base in self.anchor_sizes_px)

    def replace(self, **changes: Any) -> ModelConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for ``meta.json`` (enums as their values)."""
        out = dataclasses.asdict(self)
        for key in ("backbone", "p6_input", "norm_layer", "box_loss"):
            out[key] = getattr(self, key).value
        return out

    @classmethod
    def from_json(cls, data: Any) -> ModelConfig:
        """Inverse of ``to_json``; unknown keys and wrong types are a ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"the model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "band_config":
                kwargs[key] = BandConfig.from_json(value)
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
