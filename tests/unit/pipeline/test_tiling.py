import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tiling import TilingConfig, group_tile_rows, tile_scene, tile_starts


@pytest.mark.parametrize(
    ("length", "size", "overlap", "expected"),
    [
        # scene smaller than one tile: one padded tile
        (100, 256, 32, [0]),
        # exactly one tile
        (256, 256, 32, [0]),
        # one pixel more: a second, padded tile
        (257, 256, 32, [0, 224]),
        # stride divides the rest exactly
        (2048, 1024, 128, [0, 896, 1792]),
        # no overlap
        (300, 100, 0, [0, 100, 200]),
    ],
)
def test_tile_starts(length, size, overlap, expected):
    assert tile_starts(length, TilingConfig(tile_size_px=size, overlap_px=overlap)) == expected


def test_edge_tiles_are_padded_not_dropped():
    tiles = tile_scene("s.tif", 300, 130, TilingConfig(tile_size_px=128, overlap_px=28))
    assert [(t.col_off_px, t.row_off_px) for t in tiles] == [
        (0, 0),
        (100, 0),
        (200, 0),
        (0, 100),
        (100, 100),
        (200, 100),
    ]
    last = tiles[-1]
    assert (last.width_px, last.height_px) == (128, 128)
    assert (last.valid_width_px, last.valid_height_px) == (100, 30)


@pytest.mark.parametrize(
    "bad", [dict(tile_size_px=0), dict(overlap_px=-1), dict(tile_size_px=64, overlap_px=64)]
)
def test_bad_config_raises_naming_field(bad):
    with pytest.raises(ValueError, match="tile_size_px|overlap_px"):
        TilingConfig(**bad)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    size=st.integers(16, 700),
    overlap_frac=st.floats(0, 0.9),
)
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
