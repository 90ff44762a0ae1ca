"""Scene size -> tile windows.  Window maths only, no pixels.

A scene of ``width_px x height_px`` is cut into tiles of ``tile_size_px``
with ``overlap_px`` shared between neighbours (stride = tile - overlap).
Tiles are walked in rows, top to bottom, left to right.  The last tile of a
row or column may reach past the scene's edge: it keeps the full tile size
and ``reading`` pads it (edge tiles are padded, never dropped).  A scene
smaller than one tile is one padded tile.

Each tile also gets a *core*: the cores partition the scene (every pixel lies
in exactly one core), interior core edges sit in the middle of the overlap.
An object no larger than the overlap whose centre lies in a tile's core is
seen whole by that tile; ``merging`` keeps a detection only from the tile
whose core holds its centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.types import TileSpec


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How scenes are cut into tiles.

    Attributes:
        tile_size_px: tile width and height, > 0.
        overlap_px: pixels shared by neighbouring tiles, 0 <= overlap < tile.
            Make it at least the largest object's size for seam-free merging.
        tile_rows_per_task: rows of tiles read by one Ray task.
    """

    tile_size_px: int = 1024
    overlap_px: int = 128
    tile_rows_per_task: int = 1

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

    @property
    def stride_px(self) -> int:
        """Distance between neighbouring tile origins."""
        return self.tile_size_px - self.overlap_px


def tile_starts(length_px: int, config: TilingConfig) -> list[int]:
    """Tile origins along one axis of ``length_px`` pixels.

    Example:
        >>> tile_starts(2000, TilingConfig(tile_size_px=1024, overlap_px=128))
        [0, 896, 1792]
    """
    if length_px <= 0:
        raise ValueError(f"scene length must be > 0 px, got {length_px}")
    extra = max(0, length_px - config.tile_size_px)
    num_tiles = 1 + math.ceil(extra / config.stride_px)
    return [k * config.stride_px for k in range(num_tiles)]


def _core_bounds(starts: list[int], length_px: int, config: TilingConfig) -> list[tuple[float, float]]:
    half = config.overlap_px / 2
    bounds = []
    for k, start in enumerate(starts):
        lo = 0.0 if k == 0 else start + half
        hi = float(length_px) if k == len(starts) - 1 else starts[k + 1] + half
        bounds.append((lo, hi))
    return bounds


def tile_scene(scene_uri: str, width_px: int, height_px: int, config: TilingConfig) -> list[TileSpec]:
    """All tiles of a scene, row-major.

    Args:
        scene_uri: the scene's URI, copied into each TileSpec.
        width_px: scene width.
        height_px: scene height.
        config: tile size and overlap.

    Returns:
        Tiles covering the scene; edge tiles have full size and
        ``valid_*_px`` < size where they reach past the scene.

    Example:
        >>> tiles = tile_scene("a.tif", 2000, 1000, TilingConfig(tile_size_px=1024, overlap_px=128))
        >>> [(t.col_off_px, t.row_off_px, t.valid_width_px, t.valid_height_px) for t in tiles]
        [(0, 0, 1024, 1000), (896, 0, 1024, 1000), (1792, 0, 208, 1000)]
    """
    cols = tile_starts(width_px, config)
    rows = tile_starts(height_px, config)
    col_cores = _core_bounds(cols, width_px, config)
    row_cores = _core_bounds(rows, height_px, config)
    size = config.tile_size_px
    tiles = []
    for r, row_off in enumerate(rows):
        for c, col_off in enumerate(cols):
            tiles.append(
                TileSpec(
                    scene_uri=scene_uri,
                    index=len(tiles),
                    col_off_px=col_off,
                    row_off_px=row_off,
                    width_px=size,
                    height_px=size,
                    valid_width_px=min(size, width_px - col_off),
                    valid_height_px=min(size, height_px - row_off),
                    core_xyxy_px=(col_cores[c][0], row_cores[r][0], col_cores[c][1], row_cores[r][1]),
                )
            )
    return tiles


def group_tile_rows(tiles: list[TileSpec], rows_per_group: int) -> Iterator[list[TileSpec]]:
    """Group a scene's row-major tiles into bands of ``rows_per_group`` tile rows.

    One Ray read task handles one group, so consecutive tiles share GDAL's
    block cache and the task count stays far below one per tile.
    """
    group: list[TileSpec] = []
    rows_seen: list[int] = []
    for tile in tiles:
        if not rows_seen or tile.row_off_px != rows_seen[-1]:
            if len(rows_seen) == rows_per_group:
                yield group
                group, rows_seen = [], []
            rows_seen.append(tile.row_off_px)
        group.append(tile)
    if group:
        yield group
