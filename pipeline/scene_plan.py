"""One scene's plan in a run: its tiles at the model's GSD, less those outside ``--aoi`` or owned by another scene.

``plan_scene`` is what ``pipeline.run.DetectRun`` calls for each opened
scene.  The tiles stay lazy where they can (``tiling.TilePlan``; the mosaic
filter is a generator), so a scene of 100,000 tiles costs the driver its
plan's few numbers, not one object per tile; ``--aoi`` lists the tiles that
meet the area.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely

from pipeline.aoi import aoi_in_scene_px, tiles_in_aoi
from pipeline.job import DetectJob
from pipeline.mosaic import Footprints, owned_px, owned_tiles
from pipeline.resolution import ReadScale
from pipeline.tiling import group_tile_rows, tile_scene
from pipeline.types import SceneInfo, TileSpec


@dataclass
class ScenePlan:
    """What a scene will be read as.

    Attributes:
        tiles: the tiles inside ``--aoi`` (all of the scene's without one);
            their number is the scene's ``num_tiles``.
        groups: the tile groups to submit (lazy), less the tiles another scene owns.
        outside_aoi: tiles ``--aoi`` left out.
        owned_px: the part of the scene it owns in the mosaic (shapely, scene
            px), or None when it owns all of itself.
        keep_px: the region the finish keeps detection centres in: ``owned_px``
            within ``--aoi`` (shapely, scene px), computed once here; None keeps all.
        not_owned: a one-item counter of the tiles left to the scenes that own
            them (filled as ``groups`` is walked).
    """

    tiles: Sequence[TileSpec]
    groups: Iterator[list[TileSpec]]
    outside_aoi: int = 0
    owned_px: Any = None
    keep_px: Any = None
    not_owned: list[int] = field(default_factory=lambda: [0])


def plan_scene(
    job: DetectJob, header: SceneInfo, read: ReadScale | None, footprints: Footprints | None
) -> ScenePlan:
    """The scene's plan (``tiles`` empty when no tile meets ``--aoi``: the caller skips the scene).

    Args:
        job: the run's tiling, AOI and merge settings.
        header: the opened scene.
        read: its read at the model's GSD (``pipeline.resolution.plan_read``), None for native pixels.
        footprints: the output's mosaic (``pipeline.mosaic_index``), None without the cross-scene merge.
    """
    tiles: Sequence[TileSpec] = tile_scene(header.uri, header.width_px, header.height_px, job.tiling, read)
    outside = 0
    if job.aoi is not None:
        tiles, outside = tiles_in_aoi(tiles, header, job.aoi)  # only the tiles that meet the area
    region = owned_px(footprints, header) if footprints is not None and tiles else None
    counter = [0]
    walked: Iterable[TileSpec] = tiles
    if region is not None:
        core = job.merge.strategy.value == "core"  # exact: such a tile's boxes all go to other scenes
        walked = owned_tiles(tiles, region, core, counter)
    groups = group_tile_rows(walked, job.tiling.tile_rows_per_task, job.tiling.max_tiles_per_task)
    keep = region
    if job.aoi is not None and tiles:  # one region for the finish: owned and inside the area
        area = aoi_in_scene_px(header, job.aoi)
        keep = area if region is None else shapely.intersection(region, area)
    return ScenePlan(tiles, groups, outside, region, keep, counter)
