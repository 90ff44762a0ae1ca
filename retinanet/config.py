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
from dataclasses import dataclass, field
from typing import Any

PAPER_ANCHOR_SIZES_PX: tuple[int, ...] = (32, 64, 128, 256, 512)
AERIAL_ANCHOR_SIZES_PX: tuple[int, ...] = (16, 32, 64, 128, 256)
PAPER_ANCHOR_SCALES: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
PAPER_ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)

BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large")
P6_INPUTS: tuple[str, ...] = ("c5", "p5")
NORM_LAYERS: tuple[str, ...] = ("batch", "frozen_batch")


@dataclass(frozen=True, slots=True)
class BandConfig:
    """Which scene bands feed the model and how raw values are scaled.

    Model input for band ``i`` is ``(raw - mean[i]) / std[i]``, with ``raw`` in
    the scene's own units (uint8 DN, uint16 DN or float reflectance), so the
    same code serves uint8, uint16 and float imagery.

    Attributes:
        bands: 1-based band indexes of the scene, in model channel order.
        mean: per model channel, in raw units.
        std: per model channel, in raw units, > 0.
    """

    bands: tuple[int, ...] = (1, 2, 3)
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    std: tuple[float, ...] = (64.0, 64.0, 64.0)

    def __post_init__(self) -> None:
        if not self.bands:
            raise ValueError("BandConfig.bands must name at least one band, got bands=()")
        if any(b < 1 for b in self.bands):
            raise ValueError(f"BandConfig.bands are 1-based, got bands={self.bands}")
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise ValueError(
                "BandConfig.bands, mean and std must have the same length, got "
                f"bands={self.bands}, mean={self.mean}, std={self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"BandConfig.std must be > 0, got std={self.std}")

    @property
    def num_channels(self) -> int:
        """Number of model input channels (C)."""
        return len(self.bands)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """RetinaNet hyper-parameters (focal-loss paper defaults) for aerial tiles.

    Attributes:
        class_names: foreground classes; label id ``i`` is ``class_names[i]``.
        backbone: one of ``BACKBONES``.
        anchor_sizes_px: base anchor size per pyramid level P3..P7.
        anchor_scales: scales per octave, multiplied with each base size.
        aspect_ratios: height/width ratios.
        prior_probability: classifier bias prior (initial foreground prob).
        score_thresh: candidates below this score are dropped.
        topk_candidates: candidates kept per level before NMS.
        nms_thresh: IoU threshold of the per-tile NMS.
        detections_per_tile: cap on detections per tile after NMS.
        band_config: band order and scaling.
        tile_size_px: tile size the model was trained at (detect default).
        gsd_m: ground sample distance of the training imagery, metres/pixel.
        p6_input: P6 is computed from C5 (paper, torchvision v2) or from P5
            (torchvision v1 ``retinanet_resnet50_fpn``, DeepForest).
        norm_layer: ``batch`` (trainable, from scratch) or ``frozen_batch``
            (torchvision/DeepForest releases trained from ImageNet weights).
    """

    class_names: tuple[str, ...] = ("object",)
    backbone: str = "resnet50"
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
    p6_input: str = "c5"
    norm_layer: str = "batch"

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("ModelConfig.class_names must hold at least one class")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"ModelConfig.class_names must be unique, got {self.class_names}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"ModelConfig.backbone must be one of {BACKBONES}, got backbone={self.backbone!r}"
            )
        if self.p6_input not in P6_INPUTS:
            raise ValueError(f"ModelConfig.p6_input must be one of {P6_INPUTS}, got {self.p6_input!r}")
        if self.norm_layer not in NORM_LAYERS:
            raise ValueError(f"ModelConfig.norm_layer must be one of {NORM_LAYERS}, got {self.norm_layer!r}")
        if len(self.anchor_sizes_px) != 5:
            raise ValueError(
                "ModelConfig.anchor_sizes_px needs one size per level P3..P7 (5), "
                f"got anchor_sizes_px={self.anchor_sizes_px}"
            )
        if self.detections_per_tile < 1:
            raise ValueError(f"ModelConfig.detections_per_tile must be >= 1, got {self.detections_per_tile}")

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
        """Plain-JSON form for ``meta.json``."""
        out = dataclasses.asdict(self)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_json``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "band_config":
                kwargs[key] = BandConfig(**{k: tuple(v) for k, v in value.items()})
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
