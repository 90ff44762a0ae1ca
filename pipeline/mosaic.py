"""One answer where scenes overlap: which scene owns each point of a mosaic.

Neighbouring scenes and flight strips overlap by 10-60 %, so an object in an
overlap is seen by two or more scenes.  The cross-scene merge gives every
point of the mosaic one owner, the way the in-scene merge gives every point
of a scene one tile (``merging``'s ``core`` strategy): a scene keeps only
the detections whose centre lies in the part of the mosaic it owns.  The
owner of a point is decided from the scenes' footprints alone, so it does
not depend on which scene finished first, on which run did which scene, or
on the machine:

* among the scenes whose footprint holds the point, the one of the earliest
  *generation* owns it (the scenes a run found in the output's first listing
  are generation 0; scenes added to the source later join as generation 1,
  2, ..., and never take an area from a scene already done);
* within a generation, the scene whose footprint centre is nearest owns it
  (the seams are the perpendicular bisectors of neighbouring centres); equal
  distances go to the smaller URI.

Distances and bisectors are taken in one *mosaic CRS* per output, an
azimuthal equidistant projection centred on the first footprint (metres,
true to scale near the mosaic; scenes in two UTM zones meet on one seam).

Two scenes overlapping by more than ``repeat_overlap`` (default 0.9) of the
smaller footprint are repeat coverage of one place (a time series, or the
same file twice), not mosaic neighbours: neither takes an area from the
other, and each keeps all its detections.  ``--no-cross-scene-merge`` turns
the merge off for a whole run.

Frames: footprints and regions here are in the mosaic CRS (``_m`` suffix);
``region_in_scene_px`` maps a region into a scene's pixel frame (x = col,
y = row, pixel corners), where the finish keeps centres and the plan skips
tiles (``pipeline.mosaic_filter``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from pyproj import CRS, Transformer

from pipeline.types import SceneInfo, TileSpec

REPEAT_OVERLAP = 0.9
# points per footprint edge: a scene's edges stay within centimetres of their true curve
# once reprojected, so an object at a scene's edge is not lost to a straight-line footprint
EDGE_POINTS = 16

_LONLAT_WKT = CRS.from_user_input("OGC:CRS84").to_wkt()


@functools.lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    """One transformer per CRS pair (making one costs milliseconds; a bucket has few CRSs)."""
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def mosaic_crs(lon_deg: float, lat_deg: float) -> CRS:
    """The azimuthal equidistant CRS centred on (``lon_deg``, ``lat_deg``), in metres."""
    return CRS.from_proj4(f"+proj=aeqd +lat_0={lat_deg:.9f} +lon_0={lon_deg:.9f} +datum=WGS84 +units=m")


def scene_outline(scene: SceneInfo, dst_crs_wkt: str) -> shapely.Polygon:
    """A scene's footprint in ``dst_crs``, its edges densified (``EDGE_POINTS`` each) before reprojecting."""
    w, h = scene.width_px, scene.height_px
    steps = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    cols = np.concatenate([steps * w, np.full_like(steps, w), (1 - steps) * w, np.zeros_like(steps)])
    rows = np.concatenate([np.zeros_like(steps), steps * h, np.full_like(steps, h), (1 - steps) * h])
    t = scene.transform
    xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    xs, ys = _transformer(scene.crs_wkt, dst_crs_wkt).transform(xs, ys)
    ring = np.stack([np.asarray(xs), np.asarray(ys)], axis=1)
    if not np.isfinite(ring).all():
        raise ValueError(
            f"{scene.uri}: its footprint cannot be transformed to {CRS.from_wkt(dst_crs_wkt).name}"
        )
    polygon = shapely.make_valid(shapely.Polygon(ring))
    return polygon if isinstance(polygon, shapely.Polygon) else shapely.convex_hull(polygon)


def centre_lonlat(scene: SceneInfo) -> tuple[float, float]:
    """A scene's centre in OGC:CRS84 (lon, lat), the mosaic CRS's origin when it is the first.

    Raises:
        ValueError: the scene's CRS has no place on the globe (a local engineering CRS).
    """
    centre = scene_outline(scene, _LONLAT_WKT).centroid
    return float(centre.x), float(centre.y)


@dataclass(frozen=True)
class Footprints:
    """The footprints of every scene an output's mosaic holds, in its mosaic CRS.

    Attributes:
        crs_wkt: the mosaic CRS (``mosaic_crs``).
        uris: scene URIs, sorted within each generation.
        polygons_m: one footprint per URI, mosaic CRS metres.
        generations: the generation of each URI (0 for the first listing).
    """

    crs_wkt: str
    uris: tuple[str, ...]
    polygons_m: tuple[shapely.Polygon, ...]
    generations: tuple[int, ...]
    _tree: shapely.STRtree = field(init=False, repr=False, compare=False)
    _position: dict[str, int] = field(init=False, repr=False, compare=False)
    _site: np.ndarray = field(init=False, repr=False, compare=False)
    _heads: dict[tuple[int, int], int] = field(init=False, repr=False, compare=False)
    _taken: dict[tuple[int, int], shapely.Geometry | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tree", shapely.STRtree(list(self.polygons_m)))
        object.__setattr__(self, "_position", {uri: i for i, uri in enumerate(self.uris)})
        # scenes with the very same footprint (copies, links, a time series on one grid) are one site:
        # repeat coverage of each other, and one neighbour to the others
        sites: dict[bytes, int] = {}
        wkbs = shapely.to_wkb(list(self.polygons_m)) if self.polygons_m else []
        object.__setattr__(
            self, "_site", np.array([sites.setdefault(w, len(sites)) for w in wkbs], dtype=np.int64)
        )
        heads: dict[tuple[int, int], int] = {}
        for i in sorted(range(len(self.uris)), key=lambda k: self.uris[k]):
            heads.setdefault((int(self._site[i]), self.generations[i]), i)
        object.__setattr__(self, "_heads", heads)
        object.__setattr__(self, "_taken", {})  # (site, generation) -> what the neighbours own of it

    def __contains__(self, uri: object) -> bool:
        return uri in self._position

    def __len__(self) -> int:
        return len(self.uris)

    @property
    def crs(self) -> CRS:
        """The mosaic CRS."""
        return CRS.from_wkt(self.crs_wkt)

    def site_head(self, i: int) -> int:
        """The first position (smallest URI) of footprint ``i``'s site and generation."""
        return self._heads[(int(self._site[i]), self.generations[i])]

    def position(self, uri: str) -> int:
        """Where ``uri`` is in ``uris``."""
        return self._position[uri]

    def neighbours(self, uri: str) -> list[int]:
        """Positions of the footprints that intersect ``uri``'s, in URI order.

        Scenes of ``uri``'s own site (the same footprint) are left out, and of
        another site only the first URI of each generation is given: the
        others would take the same part.
        """
        i = self._position[uri]
        hits = np.asarray(self._tree.query(self.polygons_m[i], predicate="intersects"), dtype=np.int64)
        hits = hits[self._site[hits] != self._site[i]]
        first: dict[tuple[int, int], int] = {}
        for j in sorted(hits.tolist(), key=lambda j: self.uris[j]):
            first.setdefault((int(self._site[j]), self.generations[j]), j)
        return sorted(first.values(), key=lambda j: self.uris[j])

    def with_generation(self, uris: Sequence[str], polygons_m: Sequence[shapely.Polygon]) -> Footprints:
        """These footprints plus a new generation of scenes (sorted by URI)."""
        order = sorted(range(len(uris)), key=lambda k: uris[k])
        generation = max(self.generations, default=-1) + 1
        return Footprints(
            self.crs_wkt,
            self.uris + tuple(uris[k] for k in order),
            self.polygons_m + tuple(polygons_m[k] for k in order),
            self.generations + (generation,) * len(order),
        )


def _closer_half_plane(centre_b: shapely.Point, centre_a: shapely.Point, extent_m: float) -> shapely.Polygon:
    """The half-plane of points closer to ``centre_b`` than to ``centre_a``, as a polygon ``extent_m`` wide."""
    ax, ay, bx, by = centre_a.x, centre_a.y, centre_b.x, centre_b.y
    mx, my = (ax + bx) / 2, (ay + by) / 2
    nx, ny = bx - ax, by - ay
    norm = float(np.hypot(nx, ny))
    nx, ny = nx / norm, ny / norm
    px, py = -ny, nx  # along the bisector
    e = extent_m
    return shapely.Polygon(
        [
            (mx + px * e, my + py * e),
            (mx + px * e + nx * e, my + py * e + ny * e),
            (mx - px * e + nx * e, my - py * e + ny * e),
            (mx - px * e, my - py * e),
        ]
    )


def _taken_by(footprints: Footprints, a: int, b: int) -> shapely.Geometry | None:
    """The part of scene ``a``'s footprint that scene ``b`` owns, or None."""
    fa, fb = footprints.polygons_m[a], footprints.polygons_m[b]
    overlap = shapely.intersection(fa, fb)
    if overlap.is_empty or overlap.area > REPEAT_OVERLAP * min(fa.area, fb.area):
        return None  # touching only, or repeat coverage of one place
    ga, gb = footprints.generations[a], footprints.generations[b]
    if ga != gb:
        return overlap if gb < ga else None
    ca, cb = fa.centroid, fb.centroid
    if ca.equals_exact(cb, 1e-9):
        return overlap if footprints.uris[b] < footprints.uris[a] else None
    minx, miny, maxx, maxy = shapely.union(fa, fb).bounds
    extent_m = 4.0 * float(np.hypot(maxx - minx, maxy - miny)) + 1.0
    taken = shapely.intersection(overlap, _closer_half_plane(cb, ca, extent_m))
    return None if taken.is_empty else taken


def taken_region(footprints: Footprints, uri: str) -> shapely.Geometry | None:
    """What the neighbours of ``uri`` own of its footprint, in the mosaic CRS; None when nothing.

    The same for every scene of one site and generation (the first URI of
    the site stands for it), so it is computed once for them.
    """
    a = footprints.site_head(footprints.position(uri))
    key = (int(footprints._site[a]), footprints.generations[a])
    if key not in footprints._taken:
        taken = [
            t
            for b in footprints.neighbours(footprints.uris[a])
            if (t := _taken_by(footprints, a, b)) is not None
        ]
        footprints._taken[key] = shapely.union_all(taken) if taken else None
    return footprints._taken[key]


def owned_region(footprints: Footprints, uri: str) -> shapely.Geometry:
    """The part of the mosaic scene ``uri`` owns, in the mosaic CRS.

    Its footprint less what each overlapping neighbour owns (see the module's
    rules); the regions of a generation's scenes partition their union.
    """
    taken = taken_region(footprints, uri)
    region = footprints.polygons_m[footprints.position(uri)]
    return region if taken is None else shapely.difference(region, taken)


def region_in_scene_px(region_m: shapely.Geometry, scene: SceneInfo, mosaic_wkt: str) -> shapely.Geometry:
    """A mosaic-CRS region in ``scene``'s pixel frame (x = col, y = row), edges densified first."""
    extent = max(region_m.bounds[2] - region_m.bounds[0], region_m.bounds[3] - region_m.bounds[1])
    dense = shapely.segmentize(region_m, max(extent / 64.0, 1e-6))
    to_scene = _transformer(mosaic_wkt, scene.crs_wkt)
    inverse = ~scene.transform

    def to_px(coords: np.ndarray) -> np.ndarray:
        xs, ys = to_scene.transform(coords[:, 0], coords[:, 1])
        xs, ys = np.asarray(xs), np.asarray(ys)
        cols, rows = inverse.a * xs + inverse.b * ys + inverse.c, inverse.d * xs + inverse.e * ys + inverse.f
        return np.stack([np.asarray(cols), np.asarray(rows)], axis=1)

    return shapely.transform(dense, to_px)


def owned_px(footprints: Footprints, scene: SceneInfo) -> shapely.Geometry | None:
    """The part of ``scene``'s pixel rectangle it owns (scene px); None when it owns all of it.

    A scene the footprints do not hold (it failed to open when they were
    recorded) owns all of itself.
    """
    if scene.uri not in footprints:
        return None
    taken = taken_region(footprints, scene.uri)
    if taken is None:
        return None
    rect = shapely.box(0.0, 0.0, float(scene.width_px), float(scene.height_px))
    return shapely.difference(rect, region_in_scene_px(taken, scene, footprints.crs_wkt))


def centres_inside(boxes_xyxy_px: np.ndarray, region_px: shapely.Geometry) -> np.ndarray:
    """Which ``[N, 4]`` scene-px boxes have their centre in ``region_px`` (bool ``[N]``)."""
    boxes = np.asarray(boxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    xs, ys = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.asarray(shapely.contains_xy(region_px, xs, ys), dtype=bool)


def owned_tiles(
    plan: Iterable[TileSpec], region_px: shapely.Geometry, core: bool, skipped: list[int]
) -> Iterator[TileSpec]:
    """The tiles of ``plan`` that meet the part of the scene it owns; ``skipped[0]`` counts the others.

    Args:
        plan: the scene's tiles.
        region_px: what the scene owns (``owned_px``, native scene px; a
            ``pipeline.resolution.ResampledTile`` in model px is scaled to it).
        core: test the tile's core, not its whole square: exact under the
            ``core`` merge, where a tile keeps only boxes centred in its core.
        skipped: a one-item counter, incremented for each tile left out.
    """
    shapely.prepare(region_px)
    for tile in plan:
        if core:
            x0, y0, x1, y1 = tile.core_xyxy_px
        else:
            x0, y0 = tile.col_off_px, tile.row_off_px
            x1, y1 = x0 + tile.width_px, y0 + tile.height_px
        sx, sy = getattr(tile, "scale_x", 1.0), getattr(tile, "scale_y", 1.0)  # a tile in model px
        if shapely.intersects(region_px, shapely.box(x0 * sx, y0 * sy, x1 * sx, y1 * sy)):
            yield tile
        else:
            skipped[0] += 1
