"""Scene size -> tile windows.  Window maths only, no pixels.

A scene of ``width_px x height_px`` is cut into tiles of ``tile_size_px``
with at least ``overlap_px`` shared between neighbours (stride = tile -
overlap).  Tiles are walked in rows, top to bottom, left to right.  The last
tile of a row or column is shifted back to end on the scene's edge, so it
overlaps its neighbour by more than ``overlap_px`` rather than reaching past
the edge: the model never sees padding inside a scene (a trained model draws
false boxes along a padded edge).  Only a scene smaller than one tile is one
padded tile, and that tile is clamped to the scene: its side is the
scene's side rounded up to ``size_multiple_px`` (the model's stride), so a
300 x 200 px scene costs a 320 x 224 px forward pass, not 1024 x 1024.

A scene read at the model's GSD (``pipeline.resolution``) is planned in model
pixels: ``tile_scene(..., read=ReadScale)`` plans its model-pixel size and
gives ``ResampledTile``s, which know their native windows.

``tile_scene`` returns a ``TilePlan``: a lazy, indexable sequence of
``TileSpec`` that computes each tile from its index, so no plan holds one
object per tile.  ``check_scene_size`` refuses a scene over ``max_scene_px``
before anything is planned or read.

Each tile also gets a *core*: the cores partition the scene (every pixel lies
in exactly one core), interior core edges sit in the middle of the overlap.
An object no larger than the overlap whose centre lies in a tile's core is
seen whole by that tile; ``merging`` keeps a detection only from the tile
whose core holds its centre.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from pipeline.errors import InvalidSceneError
from pipeline.resolution import ReadScale, ResampledTile
from pipeline.types import TileSpec

# 10 gigapixels (100,000 x 100,000 px, 12,500 tiles of 1024/128 px): far above any
# single aerial scene seen so far, far below a header that lies about its size.
DEFAULT_MAX_SCENE_PX = 10_000_000_000
# 100,000 tiles of 1024/128 px cover a 283,000 px square: 8x a 10-gigapixel square scene's 12,500
DEFAULT_MAX_TILES_PER_SCENE = 100_000


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How scenes are cut into tiles.

    Attributes:
        tile_size_px: tile width and height, > 0.
        overlap_px: pixels shared by neighbouring tiles, 0 <= overlap < tile.
            Make it at least the largest object's size for seam-free merging.
        tile_rows_per_task: rows of tiles read by one Ray task.
        max_tiles_per_task: at most this many tiles per read task, so a read
            task's memory (and its output block) does not grow with the
            scene's width: a 32768 px row is 37 tiles of 1024 px, 111 MB of
            uint8 RGB; 8 tiles are 24 MB.
        max_scene_px: largest scene (width x height pixels) that is planned;
            ``check_scene_size`` refuses larger ones.
        max_tiles_per_scene: most tiles one scene may plan; a degenerate shape
            (2,147,483,647 x 1 px passes the pixel limit and planned 2.4
            million tiles) is refused by ``check_scene_size``.
        size_multiple_px: a scene side shorter than a tile gets a tile of that
            side rounded up to this (the model's largest stride: RetinaNet's
            FPN pads inputs to a multiple of 32), never more than the tile.
    """

    tile_size_px: int = 1024
    overlap_px: int = 128
    tile_rows_per_task: int = 1
    max_tiles_per_task: int = 8
    max_scene_px: int = DEFAULT_MAX_SCENE_PX
    max_tiles_per_scene: int = DEFAULT_MAX_TILES_PER_SCENE
    size_multiple_px: int = 32

    def __post_init__(self) -> None:
        if self.tile_size_px <= 0:
            raise ValueError(f"tile_size_px must be > 0, got tile_size_px={self.tile_size_px}")
        if not 0 <= self.overlap_px < self.tile_size_px:
            raise ValueError(
                f"overlap_px must be in [0, tile_size_px), got overlap_px={self.overlap_px}, "
                f"tile_size_px={self.tile_size_px}"
            )
        if self.tile_rows_per_task < 1:
            raise ValueError(f"tile_rows_per_task must be >= 1, got {self.tile_rows_per_task}")
        if self.max_tiles_per_task < 1:
            raise ValueError(f"max_tiles_per_task must be >= 1, got {self.max_tiles_per_task}")
        if self.max_scene_px < 1:
            raise ValueError(f"max_scene_px must be >= 1, got max_scene_px={self.max_scene_px}")
        if self.max_tiles_per_scene < 1:
            raise ValueError(f"max_tiles_per_scene must be >= 1, got {self.max_tiles_per_scene}")
        if self.size_multiple_px < 1:
            raise ValueError(f"size_multiple_px must be >= 1, got {self.size_multiple_px}")

    @property
    def stride_px(self) -> int:
        """Distance between neighbouring tile origins."""
        return self.tile_size_px - self.overlap_px

    def clamped_size_px(self, length_px: int) -> int:
        """Tile side along an axis of ``length_px``: the tile, or the scene rounded up to ``size_multiple_px``.

        Example:
            >>> [TilingConfig(tile_size_px=1024).clamped_size_px(n) for n in (1, 300, 1000, 5000)]
            [32, 320, 1024, 1024]
        """
        multiple = self.size_multiple_px
        return min(self.tile_size_px, max(1, math.ceil(length_px / multiple)) * multiple)


def tile_starts(length_px: int, config: TilingConfig) -> list[int]:
    """Tile origins along one axis of ``length_px`` pixels.

    The last origin is ``length_px - tile_size_px`` (the last tile ends on
    the edge) when the scene is longer than a tile.

    Example:
        >>> tile_starts(1920, TilingConfig(tile_size_px=1024, overlap_px=128))
        [0, 896]
        >>> tile_starts(2000, TilingConfig(tile_size_px=1024, overlap_px=128))
        [0, 896, 976]
    """
    if length_px <= 0:
        raise ValueError(f"scene length must be > 0 px, got {length_px}")
    extra = max(0, length_px - config.tile_size_px)
    num_tiles = 1 + math.ceil(extra / config.stride_px)
    return [min(k * config.stride_px, extra) for k in range(num_tiles)]


def _core_bounds(starts: list[int], length_px: int, config: TilingConfig) -> list[tuple[float, float]]:
    """Core ``(lo, hi)`` of each tile along one axis: interior edges in the middle of each overlap."""
    edges = [(nxt + start + config.tile_size_px) / 2 for start, nxt in zip(starts, starts[1:])]
    return list(zip([0.0, *edges], [*edges, float(length_px)]))


@dataclass(frozen=True, slots=True)
class TilePlan(Sequence[TileSpec]):
    """The tiles of one scene, row-major, made on demand.

    Behaves as a read-only list of ``TileSpec`` (``len``, ``plan[i]``,
    ``plan[-1]``, slices, iteration) but stores only the tile origins along
    each axis, so planning a 200,000 x 200,000 px scene costs kilobytes, not
    one object per tile.  ``plan[i].index == i``.

    Attributes:
        scene_uri: the scene's URI, copied into each TileSpec.
        width_px: scene width (model pixels when ``read`` is given).
        height_px: scene height.
        config: tile size and overlap.
        read: the scene's read at the model's GSD: tiles are then
            ``ResampledTile``s in model pixels.  None: native pixels.
    """

    scene_uri: str
    width_px: int
    height_px: int
    config: TilingConfig
    read: ReadScale | None = None
    _cols: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _rows: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _col_cores: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)
    _row_cores: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = tile_starts(self.width_px, self.config)
        rows = tile_starts(self.height_px, self.config)
        object.__setattr__(self, "_cols", tuple(cols))
        object.__setattr__(self, "_rows", tuple(rows))
        object.__setattr__(self, "_col_cores", tuple(_core_bounds(cols, self.width_px, self.config)))
        object.__setattr__(self, "_row_cores", tuple(_core_bounds(rows, self.height_px, self.config)))

    @property
    def num_cols(self) -> int:
        """Tiles per row."""
        return len(self._cols)

    @property
    def num_rows(self) -> int:
        """Rows of tiles."""
        return len(self._rows)

    def __len__(self) -> int:
        return len(self._cols) * len(self._rows)

    @overload
    def __getitem__(self, index: int) -> TileSpec: ...

    @overload
    def __getitem__(self, index: slice) -> list[TileSpec]: ...

    def __getitem__(self, index: int | slice) -> TileSpec | list[TileSpec]:
        if isinstance(index, slice):
            return [self._tile(i) for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"tile index {index} out of range for {len(self)} tiles of {self.scene_uri}")
        return self._tile(i)

    def __iter__(self) -> Iterator[TileSpec]:
        return (self._tile(i) for i in range(len(self)))

    def _tile(self, index: int) -> TileSpec:
        r, c = divmod(index, len(self._cols))
        col_off, row_off = self._cols[c], self._rows[r]
        width, height = (
            self.config.clamped_size_px(self.width_px),
            self.config.clamped_size_px(self.height_px),
        )
        fields = dict(
            scene_uri=self.scene_uri,
            index=index,
            col_off_px=col_off,
            row_off_px=row_off,
            width_px=width,
            height_px=height,
            valid_width_px=min(width, self.width_px - col_off),
            valid_height_px=min(height, self.height_px - row_off),
            core_xyxy_px=(
                self._col_cores[c][0],
                self._row_cores[r][0],
                self._col_cores[c][1],
                self._row_cores[r][1],
            ),
        )
        if self.read is None:
            return TileSpec(**fields)  # type: ignore[arg-type]
        return ResampledTile(
            **fields,  # type: ignore[arg-type]
            scale_x=self.read.scale_x,
            scale_y=self.read.scale_y,
            native_width_px=round(self.width_px * self.read.scale_x),
            native_height_px=round(self.height_px * self.read.scale_y),
        )


def tile_scene(
    scene_uri: str, width_px: int, height_px: int, config: TilingConfig, read: ReadScale | None = None
) -> TilePlan:
    """All tiles of a scene, row-major, planned lazily.

    Args:
        scene_uri: the scene's URI, copied into each TileSpec.
        width_px: scene width, native pixels.
        height_px: scene height, native pixels.
        config: tile size and overlap (model pixels when ``read`` is given).
        read: read the scene at the model's GSD: the plan covers
            ``read.model_width_px x read.model_height_px`` model pixels with
            ``ResampledTile``s.  None: native pixels.

    Returns:
        A ``TilePlan``: indexable by tile index, with ``len``; edge tiles have
        full size and ``valid_*_px`` < size where they reach past the scene;
        a scene side shorter than a tile gets a clamped tile side.

    Example:
        >>> tiles = tile_scene("a.tif", 2000, 1000, TilingConfig(tile_size_px=1024, overlap_px=128))
        >>> [(t.col_off_px, t.row_off_px, t.valid_width_px, t.valid_height_px) for t in tiles]
        [(0, 0, 1024, 1000), (896, 0, 1024, 1000), (976, 0, 1024, 1000)]
        >>> [(t.width_px, t.height_px) for t in tile_scene("s.tif", 300, 200, TilingConfig())]
        [(320, 224)]
    """
    if read is not None and not read.is_native:  # a scene at the model's GSD is read as it is
        return TilePlan(scene_uri, read.model_width_px, read.model_height_px, config, read)
    return TilePlan(scene_uri, width_px, height_px, config)


def check_scene_size(scene_uri: str, width_px: int, height_px: int, config: TilingConfig) -> None:
    """Refuse a scene larger than ``config.max_scene_px`` pixels, before planning it.

    A corrupt or hostile header can claim any size (a 2.6 MB sparse file
    claimed 200,000 x 200,000 px: 40 gigapixels, hours of work).

    Raises:
        InvalidSceneError: naming the file, its size, the limit and ``--max-scene-px``.

    Example:
        >>> check_scene_size("ok.tif", 50_000, 50_000, TilingConfig())  # 2.5 gigapixels: fine
    """
    num_px = width_px * height_px
    if num_px > config.max_scene_px:
        raise InvalidSceneError(
            f"{scene_uri}: scene is {width_px:,} x {height_px:,} px ({num_px:,} pixels), over the limit of "
            f"{config.max_scene_px:,} pixels; pass --max-scene-px {num_px} to process it anyway"
        )
    num_tiles = _num_starts(width_px, config) * _num_starts(height_px, config)
    if num_tiles > config.max_tiles_per_scene:
        raise InvalidSceneError(
            f"{scene_uri}: scene is {width_px:,} x {height_px:,} px, which plans {num_tiles:,} tiles of "
            f"{config.tile_size_px} px, over the limit of {config.max_tiles_per_scene:,}; pass "
            f"--max-tiles-per-scene {num_tiles} to process it anyway"
        )


def _num_starts(length_px: int, config: TilingConfig) -> int:
    """``len(tile_starts(length_px, config))`` without building the list."""
    return 1 + math.ceil(max(0, length_px - config.tile_size_px) / config.stride_px)


def group_tile_rows(
    tiles: Iterable[TileSpec], rows_per_group: int, max_tiles: int | None = None
) -> Iterator[list[TileSpec]]:
    """Group a scene's row-major tiles into bands of ``rows_per_group`` tile rows, at most ``max_tiles`` each.

    One Ray read task handles one group, so consecutive tiles share GDAL's
    block cache and the task count stays far below one per tile; ``max_tiles``
    splits a band of a wide scene so a task's memory stays bounded.  Lazy: a
    ``TilePlan`` is walked one group at a time.
    """
    group: list[TileSpec] = []
    rows_seen: list[int] = []
    for tile in tiles:
        new_row = not rows_seen or tile.row_off_px != rows_seen[-1]
        if (new_row and len(rows_seen) == rows_per_group) or (max_tiles and len(group) == max_tiles):
            yield group
            group, rows_seen = [], []
        if not rows_seen or tile.row_off_px != rows_seen[-1]:
            rows_seen.append(tile.row_off_px)
        group.append(tile)
    if group:
        yield group
