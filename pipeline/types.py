"""The nouns shared by the stages.

Dimension letters: B tiles per batch, C bands, H/W tile height/width in
pixels, N detections, K classes.

Orders used everywhere:

* arrays ``(C, H, W)`` = band, row, column; sizes ``(height, width)``;
* pixel boxes ``xyxy`` = ``(col_min, row_min, col_max, row_max)``, x = column,
  edges on pixel corners (the box of pixel (row 0, col 0) is ``(0, 0, 1, 1)``);
* CRS bounds ``(xmin, ymin, xmax, ymax)`` = ``shapely.box`` arguments.

Frames: tile px --(+col_off_px, +row_off_px)--> scene px --(affine)--> CRS
(``pipeline.georef.tile_to_scene_px``, ``pipeline.georef.scene_px_to_crs``).

Glossary: *scene* = one source raster file; *tile* = a window of a scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from rasterio.transform import Affine
from rasterio.windows import Window

from pipeline.georef import as_affine

Batch: TypeAlias = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class TileSpec:
    """A window of a scene, in scene pixels.

    The window may extend past the scene's right/bottom edge for edge tiles
    that are padded to the full tile size; ``valid_width_px`` /
    ``valid_height_px`` say how much of it lies inside the scene.

    Attributes:
        scene_uri: the scene the tile belongs to.
        index: 0-based position of the tile in the scene's tile list.
        col_off_px: left edge, scene pixels.
        row_off_px: top edge, scene pixels.
        width_px: tile width (the array width after padding).
        height_px: tile height.
        valid_width_px: columns inside the scene (<= width_px).
        valid_height_px: rows inside the scene (<= height_px).
        core_xyxy_px: the tile's core in scene px; a detection is kept by the
            tile whose core holds its centre (see ``pipeline.merging``).
    """

    scene_uri: str
    index: int
    col_off_px: int
    row_off_px: int
    width_px: int
    height_px: int
    valid_width_px: int
    valid_height_px: int
    core_xyxy_px: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px", "valid_width_px", "valid_height_px"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TileSpec.{name} must be > 0, got {name}={getattr(self, name)}")
        if self.col_off_px < 0 or self.row_off_px < 0:
            raise ValueError(
                f"TileSpec offsets must be >= 0, got col_off_px={self.col_off_px}, "
                f"row_off_px={self.row_off_px}"
            )
        if self.valid_width_px > self.width_px or self.valid_height_px > self.height_px:
            raise ValueError(
                f"TileSpec valid size ({self.valid_width_px}x{self.valid_height_px}) exceeds tile "
                f"size ({self.width_px}x{self.height_px})"
            )

    def window(self) -> Window:
        """The clamped window to read (inside the scene)."""
        return Window(self.col_off_px, self.row_off_px, self.valid_width_px, self.valid_height_px)


@dataclass(frozen=True, slots=True)
class TileDetections:
    """Detections of one tile, column-wise, in tile pixels.

    Attributes:
        tile: where the tile lies in its scene.
        boxes_xyxy_px: float32 ``[N, 4]``, tile px, ``0 <= x1 < x2 <= W``.
        scores: float32 ``[N]`` in [0, 1].
        labels: int64 ``[N]`` 0-based class ids.
    """

    tile: TileSpec
    boxes_xyxy_px: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes_xyxy_px, dtype=np.float32).reshape(-1, 4)
        object.__setattr__(self, "boxes_xyxy_px", boxes)
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32).reshape(-1))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        if not (len(boxes) == len(self.scores) == len(self.labels)):
            raise ValueError(
                f"TileDetections fields differ in length for tile {self.tile.index} of "
                f"{self.tile.scene_uri}: boxes {len(boxes)}, scores {len(self.scores)}, "
                f"labels {len(self.labels)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, tile: TileSpec) -> TileDetections:
        """No detections: shape (0, 4), never None."""
        return cls(tile, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True)
class SceneInfo:
    """What the pipeline knows of a scene after opening its header.

    Attributes:
        uri: the scene's URI (local path or ``s3://``).
        width_px: scene width.
        height_px: scene height.
        count: number of bands.
        dtype: numpy dtype name of the bands.
        crs_wkt: the scene's CRS as WKT (``--assume-crs`` applied).
        transform: the scene's ``Affine`` (pixel corners): ``x, y = transform @
            (col, row)``.  Six numbers ``(a, b, c, d, e, f)`` are accepted
            and turned into an ``Affine``.
        nodata: the nodata value, or None.
        has_mask: whether the scene has a per-dataset/alpha mask.
        note: what the reader does to its pixels besides reading them
            (``pipeline.pixel_kinds``: palette expanded, rescaled, first
            image only), for the scene's report line; None: nothing.
    """

    uri: str
    width_px: int
    height_px: int
    count: int
    dtype: str
    crs_wkt: str
    transform: Affine
    nodata: float | None = None
    has_mask: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", as_affine(self.transform))


@dataclass(frozen=True, slots=True)
class PixelRange:
    """A kind of pixel values: what a model was trained on, or what a scene holds.

    Attributes:
        dtype: numpy dtype name (``uint8``, ``uint16``, ``float32``...).
        min_value: lowest value: for integers the lowest the dtype (narrowed
            by ``NBITS``) holds; for floats a measured one, or None (unknown).
        max_value: highest value, likewise.

    Example:
        >>> PixelRange("uint8", 0, 1).matches(PixelRange("uint8", 0, 255))
        False
    """

    dtype: str
    min_value: float | None
    max_value: float | None

    def matches(self, other: PixelRange) -> bool:
        """Same kind: equal dtypes, and equal ranges for integers (any two floats match)."""
        if np.issubdtype(np.dtype(self.dtype), np.floating) and np.issubdtype(
            np.dtype(other.dtype), np.floating
        ):
            return True
        return (self.dtype, self.min_value, self.max_value) == (other.dtype, other.min_value, other.max_value)

    def describe(self) -> str:
        """E.g. ``uint8 0..255``, ``uint8 0..1`` (1-bit), ``float32`` (range unknown)."""
        if self.min_value is None or self.max_value is None:
            return self.dtype
        return f"{self.dtype} {self.min_value:g}..{self.max_value:g}"
