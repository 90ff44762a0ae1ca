"""Detections of one scene's tiles -> one set of scene-pixel boxes.

Neighbouring tiles overlap, so an object near a seam is seen by two (or, on
a corner, four) tiles; one of them may see it truncated.  Plain IoU-NMS
misses a truncated box (a half box has IoU 0.5 with the whole one at best),
so the merge works in three steps, all vectorised:

1. shift tile boxes into scene pixels (float64);
2. ``strategy`` (``core`` is exact and fast; ``edge``/``iou`` are kept for
   comparison and run a whole-scene NMS):

   * ``"core"`` (default): keep a box only from the tile whose *core* holds
     its centre.  Cores partition the scene and sit ``overlap/2`` inside each
     interior tile edge, so an object no larger than the overlap whose centre
     is in a core is seen whole by that tile, and a truncated copy in the
     neighbour has its centre outside the neighbour's core;
   * ``"edge"``: drop boxes cut by an interior tile edge (the neighbour sees
     them whole);
   * ``"iou"``: keep everything (plain NMS only; for comparison);

3. class-aware (or ``class_agnostic``) IoU-NMS, then a suppression on
   intersection-over-smaller (IoS), where IoU fails on a box that contains a
   truncated copy of itself; both only over the boxes in a band along
   interior core edges (the only boxes that can meet another tile's boxes;
   inside a tile the model's own NMS already ran).

Figures that chose the default are in ``bench/RESULTS.md`` (``bench/merge_duplicates.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.choices import (
    MergeStrategy as MergeStrategy,  # re-exported; defined there so the CLI gets it without numpy
)
from pipeline.choices import values
from pipeline.georef import tile_to_scene_px
from pipeline.types import TileDetections

STRATEGIES: tuple[str, ...] = values(MergeStrategy)


@dataclass(frozen=True, slots=True)
class MergeConfig:
    """How tile detections are merged.

    Attributes:
        strategy: a ``MergeStrategy`` (its value, ``"core"``, ``"edge"`` or
            ``"iou"``, is accepted and converted).
        iou_threshold: IoU above which the lower-scoring box is suppressed.
        ios_threshold: intersection-over-smaller above which the lower-scoring
            of two seam boxes is suppressed.
        class_agnostic: suppress across classes too.
        edge_tolerance_px: a box side within this distance of an interior tile
            edge counts as cut by it (``edge`` strategy and seam selection).
    """

    strategy: MergeStrategy = MergeStrategy.CORE
    iou_threshold: float = 0.5
    ios_threshold: float = 0.7
    class_agnostic: bool = False
    edge_tolerance_px: float = 1.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "strategy", MergeStrategy(self.strategy))
        except ValueError:
            raise ValueError(
                f"MergeConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}"
            ) from None
        for name in ("iou_threshold", "ios_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"MergeConfig.{name} must be in (0, 1], got {value}")


@dataclass(frozen=True, slots=True)
class MergedBoxes:
    """Scene-pixel detections after merging.

    Attributes:
        boxes_xyxy_px: float64 ``[N, 4]`` scene px.
        scores: float32 ``[N]``.
        labels: int64 ``[N]``.
    """

    boxes_xyxy_px: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class _Candidates:
    """One scene's tile boxes, column-wise, with the geometry of the tile each came from.

    Attributes:
        boxes: float64 ``[N, 4]`` scene px.
        scores: float32 ``[N]``.
        labels: int64 ``[N]``.
        windows: float64 ``[N, 4]`` the valid window of the box's tile, scene px.
        cores: float64 ``[N, 4]`` the core of the box's tile, scene px.
        interior: bool ``[N, 4]`` which window edges (left, top, right, bottom)
            have another tile beyond them.
        tile_ids: int64 ``[N]`` the tile's index.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    windows: np.ndarray
    cores: np.ndarray
    interior: np.ndarray
    tile_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> _Candidates:
        """The rows selected by a bool mask or an index array."""
        return _Candidates(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


def _concat(tile_dets: Sequence[TileDetections]) -> _Candidates:
    """Stack all tiles' boxes in scene px, with each box's tile window and core."""
    parts = [_tile_candidates(td) for td in tile_dets if len(td)]
    if not parts:
        return _Candidates(
            np.zeros((0, 4)),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, 4)),
            np.zeros((0, 4)),
            np.zeros((0, 4), bool),
            np.zeros(0, np.int64),
        )
    return _Candidates(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in _Candidates.__dataclass_fields__)
    )


def _tile_candidates(td: TileDetections) -> _Candidates:
    """One tile's boxes in scene px, each with its tile's window, core and interior edges."""
    n, t = len(td), td.tile
    window = (t.col_off_px, t.row_off_px, t.col_off_px + t.valid_width_px, t.row_off_px + t.valid_height_px)
    core = t.core_xyxy_px
    # an edge is interior when the core does not reach it (another tile lies beyond)
    flags = [core[0] > t.col_off_px, core[1] > t.row_off_px, core[2] < window[2], core[3] < window[3]]
    return _Candidates(
        boxes=tile_to_scene_px(td.boxes_xyxy_px, t.col_off_px, t.row_off_px),
        scores=td.scores,
        labels=td.labels,
        windows=np.tile(np.asarray(window, np.float64), (n, 1)),
        cores=np.tile(np.asarray(core, np.float64), (n, 1)),
        interior=np.tile(np.asarray(flags, bool), (n, 1)),
        tile_ids=np.full(n, t.index, np.int64),
    )


def _cut_by_interior_edge(
    boxes: np.ndarray, windows: np.ndarray, interior: np.ndarray, tol: float
) -> np.ndarray:
    """[N] bool: box touches an interior edge of its own tile."""
    touches = np.stack(
        [
            boxes[:, 0] <= windows[:, 0] + tol,
            boxes[:, 1] <= windows[:, 1] + tol,
            boxes[:, 2] >= windows[:, 2] - tol,
            boxes[:, 3] >= windows[:, 3] - tol,
        ],
        axis=1,
    )
    near: np.ndarray = (touches & interior).any(axis=1)
    return near


def _centre_in_core(boxes: np.ndarray, cores: np.ndarray) -> np.ndarray:
    """[N] bool: box centre lies in its tile's half-open core [lo, hi)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    inside: np.ndarray = (cx >= cores[:, 0]) & (cx < cores[:, 2]) & (cy >= cores[:, 1]) & (cy < cores[:, 3])
    return inside


def ios_suppress(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    class_agnostic: bool,
    *,
    chunk: int = 256,
    axis: int = 0,
) -> np.ndarray:
    """Indexes kept after suppressing on intersection-over-smaller.

    "Fast NMS" form: a box is dropped if any higher-scoring box overlaps it
    with IoS above ``threshold``.  IoS is symmetric, so each overlapping pair
    is looked at once: boxes are sorted by their low edge along ``axis`` and
    each chunk is compared only with the boxes after it whose low edge lies
    before the chunk's farthest high edge; the lower-ranked box of a pair
    over the threshold is dropped.  Memory is ``chunk x (boxes in reach)``,
    not ``N x N``, and one large box does not widen every chunk's reach.

    Returns:
        int64 indexes into ``boxes`` of the kept boxes, by descending score.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    # rank 0 = highest score; ties broken by index, as a stable sort would
    rank = np.empty(n, np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(n)
    by_lo = np.argsort(boxes[:, axis], kind="stable")
    b = boxes[by_lo].astype(np.float64)
    suppressed = np.zeros(n, bool)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        reach = max(stop, int(np.searchsorted(b[:, axis], b[start:stop, axis + 2].max(), side="left")))
        over = _ios_over(b[start:stop], b[start:reach], threshold)  # (C, M): me x partner
        over &= np.arange(start, reach)[None, :] > np.arange(start, stop)[:, None]  # each pair once
        if not class_agnostic:
            lab = labels[by_lo]
            over &= lab[None, start:reach] == lab[start:stop, None]
        r = rank[by_lo]
        partner_higher = r[None, start:reach] < r[start:stop, None]
        suppressed[start:stop] |= (over & partner_higher).any(axis=1)
        suppressed[start:reach] |= (over & ~partner_higher).any(axis=0)
    kept = by_lo[~suppressed]
    return kept[np.argsort(rank[kept])]


def _ios_over(mine: np.ndarray, cand: np.ndarray, threshold: float) -> np.ndarray:
    """(C, M) bool: intersection over the smaller box above ``threshold``, xyxy boxes."""
    iw = np.minimum(mine[:, None, 2], cand[None, :, 2]) - np.maximum(mine[:, None, 0], cand[None, :, 0])
    ih = np.minimum(mine[:, None, 3], cand[None, :, 3]) - np.maximum(mine[:, None, 1], cand[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_m = (mine[:, 2] - mine[:, 0]) * (mine[:, 3] - mine[:, 1])
    area_c = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
    over: np.ndarray = inter > threshold * np.maximum(np.minimum(area_m[:, None], area_c[None, :]), 1e-9)
    return over


def _batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Indexes kept by torchvision's ``batched_nms`` in float64, by descending score (int64).

    torch is imported here, not at module level, so ``import pipeline.merging``
    stays light (the driver merges; only NMS needs torch).
    """
    import torch
    from torchvision.ops import batched_nms

    kept: np.ndarray = batched_nms(
        torch.as_tensor(boxes, dtype=torch.float64),
        torch.as_tensor(scores, dtype=torch.float64),
        torch.as_tensor(groups),
        iou_threshold,
    ).numpy()
    return kept


def _strategy_keep(c: _Candidates, config: MergeConfig) -> np.ndarray:
    """[N] bool: the boxes the strategy keeps before any suppression."""
    if config.strategy is MergeStrategy.CORE:
        return _centre_in_core(c.boxes, c.cores)
    if config.strategy is MergeStrategy.EDGE:
        return ~_cut_by_interior_edge(c.boxes, c.windows, c.interior, config.edge_tolerance_px)
    return np.ones(len(c), bool)


def _seam_groups(c: _Candidates, config: MergeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes near a seam line, one entry per (box, seam) pair.

    Only boxes near an interior core edge can meet a box of another tile (the
    model's own NMS already ran inside each tile), so suppression runs on that
    band alone: O(seam boxes), not O(scene boxes).  The band is as wide as the
    largest box plus how far a tile's window reaches past its core.  A box in
    the band joins the group of each seam line it is near (the x of a vertical
    core edge, the y of a horizontal one); boxes that can overlap across a seam
    share that seam's group.

    Returns:
        (member: int64 ``[M]`` box indexes, group: int64 ``[M]`` seam group
        (per class unless class-agnostic), seam_axis: int ``[M]`` 0 for a
        vertical seam, 1 for a horizontal one).
    """
    boxes, cores, interior = c.boxes, c.cores, c.interior
    margin = float(np.max(boxes[:, 2:] - boxes[:, :2])) + float(np.max(np.abs(cores - c.windows)))
    near = [
        (interior[:, 0] & (boxes[:, 0] < cores[:, 0] + margin), 0, cores[:, 0]),
        (interior[:, 2] & (boxes[:, 2] > cores[:, 2] - margin), 0, cores[:, 2]),
        (interior[:, 1] & (boxes[:, 1] < cores[:, 1] + margin), 1, cores[:, 1]),
        (interior[:, 3] & (boxes[:, 3] > cores[:, 3] - margin), 1, cores[:, 3]),
    ]
    if config.strategy is not MergeStrategy.CORE:
        # several whole copies of one object survive the edge/iou filters; a box
        # dropped in one seam group could be the copy kept in another, so these
        # comparison strategies take the exact (O(N^2)) path: one greedy NMS over all
        near = [(np.ones(len(boxes), bool), 0, np.zeros(len(boxes)))]
    member = np.concatenate([np.flatnonzero(mask) for mask, _, _ in near])
    if len(member) < 2:
        return member, np.zeros(len(member), np.int64), np.zeros(len(member), int)
    seam_key = np.concatenate(
        [np.stack([np.full(mask.sum(), axis), line[mask]], 1) for mask, axis, line in near]
    )
    group = np.unique(seam_key, axis=0, return_inverse=True)[1].reshape(-1)
    if not config.class_agnostic:
        group = group * (int(c.labels.max()) + 1) + c.labels[member]
    return member, group, seam_key[:, 0].astype(int)


def _seam_suppress(c: _Candidates, config: MergeConfig) -> np.ndarray:
    """[N] bool: boxes left after IoU-NMS, then IoS suppression, per seam group."""
    keep = np.ones(len(c), bool)
    member, group, seam_axis = _seam_groups(c, config)
    if len(member) < 2:
        return keep
    kept_members = _batched_nms(c.boxes[member], c.scores[member], group, config.iou_threshold)
    member_kept = np.zeros(len(member), bool)
    member_kept[kept_members] = True
    keep[member[~member_kept]] = False
    # intersection-over-smaller catches a box that contains a truncated copy of
    # itself; per seam group, sorted along the seam (y for a vertical seam)
    for g in np.unique(group):
        sel = (group == g) & keep[member]
        idx = member[sel]
        if len(idx) < 2:
            continue
        axis = 1 - int(seam_axis[sel][0]) if config.strategy is MergeStrategy.CORE else 0
        ios_kept = ios_suppress(
            c.boxes[idx], c.scores[idx], c.labels[idx], config.ios_threshold, config.class_agnostic, axis=axis
        )
        keep[idx[np.setdiff1d(np.arange(len(idx)), ios_kept)]] = False
    return keep


def merge_scene(tile_dets: Sequence[TileDetections], config: MergeConfig = MergeConfig()) -> MergedBoxes:
    """Merge one scene's tile detections into scene-pixel detections.

    Steps: shift to scene px (``_concat``), the strategy's filter
    (``_strategy_keep``), for ``class_agnostic`` a cross-class NMS inside each
    tile, then IoU-NMS and IoS suppression along the seams (``_seam_suppress``).

    Args:
        tile_dets: detections of the scene's tiles (any order; tiles with no
            detections may be left out).
        config: strategy and thresholds.

    Returns:
        Merged boxes in scene px (float64), sorted by descending score.

    Example:
        >>> from pipeline.tiling import TilingConfig, tile_scene
        >>> tiles = tile_scene("s.tif", 200, 100, TilingConfig(tile_size_px=128, overlap_px=32))
        >>> [t.col_off_px for t in tiles]  # the last tile ends at the scene's edge
        [0, 72]
        >>> # one object at scene px (90, 10)-(110, 30), whole in both tiles: tile 1 owns it
        >>> dets = [TileDetections(tiles[0], [[90, 10, 110, 30]], [0.9], [0]),
        ...         TileDetections(tiles[1], [[18, 10, 38, 30]], [0.8], [0])]
        >>> merge_scene(dets).boxes_xyxy_px.tolist()
        [[90.0, 10.0, 110.0, 30.0]]
    """
    c = _concat(tile_dets)
    c = c.take(_strategy_keep(c, config))
    if len(c) == 0:
        return MergedBoxes(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if config.class_agnostic:
        # the model's NMS is per class: suppress across classes inside each tile first
        # (batched_nms loops over tiles, so the cost is per tile, not per scene)
        c = c.take(_batched_nms(c.boxes, c.scores, c.tile_ids, config.iou_threshold))
    c = c.take(_seam_suppress(c, config))
    order = np.argsort(-c.scores, kind="stable")
    return MergedBoxes(c.boxes[order], c.scores[order].astype(np.float32), c.labels[order])
