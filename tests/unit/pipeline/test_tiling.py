import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidSceneError
from pipeline.tiling import TilingConfig, check_scene_size, group_tile_rows, tile_scene, tile_starts
from pipeline.types import TileSpec


@pytest.mark.parametrize(
    ("length", "size", "overlap", "expected"),
    [
        # scene smaller than one tile: one padded tile
        (100, 256, 32, [0]),
        # exactly one tile
        (256, 256, 32, [0]),
        # one pixel more: a second tile, shifted back to end on the edge (no padding)
        (257, 256, 32, [0, 1]),
        # stride divides the rest exactly: the last tile ends on the edge anyway
        (2048, 1024, 128, [0, 896, 1024]),
        (1920, 1024, 128, [0, 896]),
        # the last tile shifted back: it overlaps its neighbour by more than 128 px
        (3000, 1024, 128, [0, 896, 1792, 1976]),
        # no overlap
        (300, 100, 0, [0, 100, 200]),
    ],
)
def test_tile_starts(length, size, overlap, expected):
    assert tile_starts(length, TilingConfig(tile_size_px=size, overlap_px=overlap)) == expected


def test_edge_tiles_end_on_the_scene_edge_and_only_small_scenes_are_padded():
    tiles = tile_scene("s.tif", 300, 130, TilingConfig(tile_size_px=128, overlap_px=28))
    assert [(t.col_off_px, t.row_off_px) for t in tiles] == [
        (0, 0),
        (100, 0),
        (172, 0),
        (0, 2),
        (100, 2),
        (172, 2),
    ]
    assert all((t.valid_width_px, t.valid_height_px) == (128, 128) for t in tiles)
    # cores split the larger overlaps in their middle: cols 100..128 -> 114, 172..228 -> 200
    assert [t.core_xyxy_px[0] for t in tiles[:3]] == [0.0, 114.0, 200.0]
    assert [t.core_xyxy_px[1] for t in tiles[::3]] == [0.0, 65.0]
    small = tile_scene("s.tif", 100, 60, TilingConfig(tile_size_px=128, overlap_px=28))
    assert len(small) == 1 and (small[0].valid_width_px, small[0].valid_height_px) == (100, 60)


@pytest.mark.parametrize(
    "bad", [dict(tile_size_px=0), dict(overlap_px=-1), dict(tile_size_px=64, overlap_px=64)]
)
def test_bad_config_raises_naming_field(bad):
    with pytest.raises(ValueError, match="tile_size_px|overlap_px"):
        TilingConfig(**bad)


# any scene up to 3000 px a side, any tile size and overlap
SCENES_AND_TILINGS = given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    size=st.integers(16, 700),
    overlap_frac=st.floats(0, 0.9),
)


@settings(max_examples=60, deadline=None)
@SCENES_AND_TILINGS
def test_tiles_cover_scene_and_cores_partition_it(width, height, size, overlap_frac):
    cfg = TilingConfig(tile_size_px=size, overlap_px=int(size * overlap_frac))
    tiles = tile_scene("s", width, height, cfg)
    # every tile starts inside the scene and its valid part stays inside
    for t in tiles:
        assert 0 <= t.col_off_px < width and 0 <= t.row_off_px < height
        assert t.col_off_px + t.valid_width_px <= width and t.row_off_px + t.valid_height_px <= height
    # cores partition the scene: their areas add up, each lies inside its tile window
    area = sum(
        (t.core_xyxy_px[2] - t.core_xyxy_px[0]) * (t.core_xyxy_px[3] - t.core_xyxy_px[1]) for t in tiles
    )
    assert area == pytest.approx(width * height)
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [width, height], size=(50, 2))
    cores = np.array([t.core_xyxy_px for t in tiles])
    inside = (
        (pts[:, None, 0] >= cores[None, :, 0])
        & (pts[:, None, 0] < cores[None, :, 2])
        & (pts[:, None, 1] >= cores[None, :, 1])
        & (pts[:, None, 1] < cores[None, :, 3])
    )
    assert (inside.sum(axis=1) == 1).all()
    for t in tiles:
        assert t.core_xyxy_px[0] >= t.col_off_px and t.core_xyxy_px[2] <= t.col_off_px + t.valid_width_px


def test_group_tile_rows():
    tiles = tile_scene("s", 300, 300, TilingConfig(tile_size_px=128, overlap_px=28))  # 3 x 3
    groups = list(group_tile_rows(tiles, 2))
    assert [len(g) for g in groups] == [6, 3]
    assert [t.index for g in groups for t in g] == list(range(9))


def test_group_tile_rows_caps_tiles_per_group():
    # a wide scene: one row of 37 tiles would be one read task holding all of them
    tiles = tile_scene("s", 32768, 2000, TilingConfig(tile_size_px=1024, overlap_px=128))
    per_row = len(tile_starts(32768, TilingConfig(tile_size_px=1024, overlap_px=128)))
    groups = list(group_tile_rows(tiles, 1, max_tiles=8))
    assert per_row == 37 and max(len(g) for g in groups) == 8
    assert [t.index for g in groups for t in g] == list(range(len(tiles)))
    assert all(len({t.row_off_px for t in g}) == 1 for g in groups)  # a group never spans rows
    rows = len(tile_starts(2000, TilingConfig(tile_size_px=1024, overlap_px=128)))
    assert len(list(group_tile_rows(tiles, 1))) == rows  # no cap: one group per row


def _eager_tiles(scene_uri, width_px, height_px, config):
    """The list the planner built before it was lazy (kept here as the reference).

    Cores split each overlap in its middle (the last tile ends on the scene edge, so its overlap is wider).
    """
    cols, rows = tile_starts(width_px, config), tile_starts(height_px, config)

    def cores(starts, length):
        mid = [(s + config.tile_size_px + nxt) / 2 for s, nxt in zip(starts, starts[1:])]
        return [
            (0.0 if k == 0 else mid[k - 1], float(length) if k == len(starts) - 1 else mid[k])
            for k in range(len(starts))
        ]

    col_cores, row_cores = cores(cols, width_px), cores(rows, height_px)
    size, tiles = config.tile_size_px, []
    # issue 26: a side shorter than a tile gets the scene's side rounded up to 32 px (never past the tile)
    size_w = size if width_px >= size else min(size, -(-width_px // 32) * 32)
    size_h = size if height_px >= size else min(size, -(-height_px // 32) * 32)
    for r, row_off in enumerate(rows):
        for c, col_off in enumerate(cols):
            tiles.append(
                TileSpec(
                    scene_uri,
                    len(tiles),
                    col_off,
                    row_off,
                    size_w,
                    size_h,
                    min(size_w, width_px - col_off),
                    min(size_h, height_px - row_off),
                    (col_cores[c][0], row_cores[r][0], col_cores[c][1], row_cores[r][1]),
                )
            )
    return tiles


@settings(max_examples=60, deadline=None)
@SCENES_AND_TILINGS
def test_lazy_plan_gives_the_tiles_the_list_gave(width, height, size, overlap_frac):
    cfg = TilingConfig(tile_size_px=size, overlap_px=int(size * overlap_frac))
    plan = tile_scene("s.tif", width, height, cfg)
    expected = _eager_tiles("s.tif", width, height, cfg)
    assert len(plan) == len(expected) == plan.num_rows * plan.num_cols
    assert list(plan) == expected
    assert [plan[i] for i in range(len(plan))] == expected
    assert plan[-1] == expected[-1] and plan[1:3] == expected[1:3]


def test_200k_header_plans_in_kilobytes():
    # issue 13: a 2.6 MB sparse GeoTIFF claiming 200,000 x 200,000 px planned 797,449 TileSpecs (1.2 GB)
    cfg = TilingConfig(tile_size_px=256, overlap_px=32)
    tracemalloc.start()
    try:
        plan = tile_scene("huge.tif", 200_000, 200_000, cfg)
        num_tiles = len(plan)
        last = plan[num_tiles - 1]
        first_group = next(group_tile_rows(plan, 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert num_tiles == 893 * 893 == 797_449
    # the last tile ends on the scene's edge, unpadded
    assert (last.index, last.col_off_px, last.row_off_px) == (797_448, 200_000 - 256, 200_000 - 256)
    assert (last.valid_width_px, last.valid_height_px) == (256, 256)
    assert len(first_group) == 893 and first_group[-1].index == 892
    assert peak < 2_000_000, f"planning used {peak:,} bytes"


def test_plan_index_errors_name_the_scene():
    plan = tile_scene("a.tif", 300, 130, TilingConfig(tile_size_px=128, overlap_px=28))  # 3 x 2
    assert plan[-6] == plan[0] and plan[0].index == 0
    with pytest.raises(IndexError, match=r"tile index 6 .*6 tiles of a\.tif"):
        plan[6]
    with pytest.raises(IndexError):
        plan[-7]


def test_scene_over_the_limit_is_refused_naming_file_size_limit_and_option():
    cfg = TilingConfig(max_scene_px=1_000_000)
    check_scene_size("ok.tif", 1000, 1000, cfg)  # exactly the limit
    with pytest.raises(InvalidSceneError) as info:
        check_scene_size("big.tif", 200_000, 200_000, cfg)
    message = str(info.value)
    assert "big.tif" in message and "200,000 x 200,000 px" in message
    assert "1,000,000 pixels" in message and "--max-scene-px 40000000000" in message
    with pytest.raises(InvalidSceneError, match="huge.tif"):  # the default refuses issue 13's header
        check_scene_size("huge.tif", 200_000, 200_000, TilingConfig())
    check_scene_size("50k.tif", 50_000, 50_000, TilingConfig())  # a real large scene passes
    with pytest.raises(ValueError, match="max_scene_px"):
        TilingConfig(max_scene_px=0)


def test_degenerate_shapes_are_refused_by_their_tile_count():
    # issue 24: 2,147,483,647 x 1 px is 2.1 gigapixels (under the pixel limit) but 2.4 million tiles
    with pytest.raises(InvalidSceneError) as info:
        check_scene_size("strip.tif", 2_147_483_647, 1, TilingConfig())
    message = str(info.value)
    assert (
        "strip.tif" in message and "2,396,745 tiles" in message and "--max-tiles-per-scene 2396745" in message
    )
    with pytest.raises(InvalidSceneError, match="669,643 tiles"):  # the 16 x 600,000,000 px strip
        check_scene_size("tall.tif", 16, 600_000_000, TilingConfig())
    check_scene_size("50k.tif", 50_000, 50_000, TilingConfig())  # 3,136 tiles: fine
    cfg = TilingConfig(max_tiles_per_scene=4)
    check_scene_size("four.tif", 1920, 1920, cfg)  # exactly 2 x 2 tiles
    assert len(tile_scene("four.tif", 1920, 1920, cfg)) == 4
    with pytest.raises(ValueError, match="max_tiles_per_scene"):
        TilingConfig(max_tiles_per_scene=0)
