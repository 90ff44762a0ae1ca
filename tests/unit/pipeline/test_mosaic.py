"""Cross-scene merge (pipeline.mosaic): one owner for every point, one row for every object."""

from __future__ import annotations

import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import CRS
from rasterio.transform import Affine

from pipeline.job import DetectJob
from pipeline.mosaic import Footprints, owned_px, owned_region, scene_outline
from pipeline.mosaic_index import load_footprints, record_scenes
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.storage import LocalStore
from pipeline.tiling import TilingConfig
from pipeline.types import SceneInfo
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

UTM33 = CRS.from_epsg(32633)
GSD_M = 1.0
ORIGIN = (500000.0, 4000000.0)
# one painted ground: 24 blobs on a 600 x 400 px grid, objects in ground px (x1, y1, x2, y2, band)
GROUND = [
    (20 + 100 * c + 7 * r, 30 + 90 * r, 36 + 100 * c + 7 * r, 46 + 90 * r, (r + c) % 3)
    for r in range(4)
    for c in range(6)
]


def _info(uri: str, col0: int, row0: int, w: int, h: int) -> SceneInfo:
    transform = Affine(GSD_M, 0, ORIGIN[0] + col0 * GSD_M, 0, -GSD_M, ORIGIN[1] - row0 * GSD_M)
    return SceneInfo(uri, w, h, 3, "uint8", UTM33.to_wkt(), transform)


def _cut(folder: Path, name: str, col0: int, row0: int, w: int, h: int) -> Path:
    """A scene that sees the window (col0, row0, w, h) of the painted ground: the objects wholly inside it."""
    inside = [
        (x1 - col0, y1 - row0, x2 - col0, y2 - row0, b)
        for x1, y1, x2, y2, b in GROUND
        if x1 >= col0 and y1 >= row0 and x2 <= col0 + w and y2 <= row0 + h
    ]
    transform = Affine(GSD_M, 0, ORIGIN[0] + col0 * GSD_M, 0, -GSD_M, ORIGIN[1] - row0 * GSD_M)
    return write_scene(folder / name, inside, width=w, height=h, transform=transform)


def _record(store: LocalStore, infos: list[SceneInfo]) -> Footprints:
    return record_scenes(store, load_footprints(store), infos)


def test_owned_regions_partition_the_mosaic(tmp_path):
    infos = [
        _info(f"s{i}", col0, row0, 300, 250)
        for i, (col0, row0) in enumerate([(0, 0), (200, 0), (100, 150), (300, 150)])
    ]
    fp = _record(LocalStore(tmp_path), infos)
    regions = [owned_region(fp, i.uri) for i in infos]
    union = shapely.union_all(list(fp.polygons_m))
    assert sum(r.area for r in regions) == pytest.approx(union.area, rel=1e-9)
    for a, b in itertools.combinations(regions, 2):
        assert shapely.intersection(a, b).area < 1e-6 * union.area
    # each scene owns the points nearer its own centre than any other covering scene's
    point = shapely.Point(*scene_outline(infos[1], fp.crs_wkt).centroid.coords[0])
    assert regions[1].contains(point)


def test_repeat_coverage_and_later_generations_take_nothing(tmp_path):
    store = LocalStore(tmp_path)
    first = _record(store, [_info("a", 0, 0, 300, 300)])
    assert first.generations == (0,)
    both = _record(
        store, [_info("a", 0, 0, 300, 300), _info("b", 150, 0, 300, 300), _info("a2", 5, 5, 300, 300)]
    )
    assert dict(zip(both.uris, both.generations)) == {"a": 0, "a2": 1, "b": 1}
    a = both.polygons_m[both.position("a")]
    # "a" was recorded first: the later "b" owns only what "a" does not cover, and "a" keeps all of itself
    assert owned_region(both, "a").area == pytest.approx(a.area)
    assert shapely.intersection(owned_region(both, "b"), a).area < 1e-6 * a.area
    # "a2" sees 97 % of what "a" sees: repeat coverage, so "a" takes nothing from it (only its
    # same-generation neighbour "b" does)
    assert shapely.intersection(owned_region(both, "a2"), a).area > 0.4 * a.area
    assert load_footprints(store) == both  # read back exactly, by any later run


def _job(src: Path, out: Path, **kw: object) -> DetectJob:
    tiling = TilingConfig(tile_size_px=64, overlap_px=20)
    return DetectJob(
        source=str(src), out_dir=str(out), model=StandinLoader(), tiling=tiling, progress=False, **kw
    )


def _mosaic(folder: Path) -> list[Path]:
    """Three strips and a fourth scene over the painted ground, overlapping 25-50 %."""
    windows = [
        ("a.tif", 0, 0, 320, 400),
        ("b.tif", 200, 0, 260, 400),
        ("c.tif", 340, 0, 260, 220),
        ("d.tif", 320, 140, 280, 260),
    ]
    return [_cut(folder, *w) for w in windows]


def _ground_boxes() -> np.ndarray:
    xs = np.array(
        [
            [ORIGIN[0] + x1 * GSD_M, ORIGIN[1] - y2 * GSD_M, ORIGIN[0] + x2 * GSD_M, ORIGIN[1] - y1 * GSD_M]
            for x1, y1, x2, y2, _ in GROUND
        ]
    )
    return xs


def _matches(detections: gpd.GeoDataFrame) -> list[int]:
    """How many detections fall on each painted object (IoU > 0.5)."""
    truth = shapely.box(*_ground_boxes().T)
    counts = []
    for t in truth:
        geoms = np.asarray(detections.geometry.values)
        inter = shapely.area(shapely.intersection(t, geoms))
        union = shapely.area(shapely.union(t, geoms))
        counts.append(int(((inter / union) > 0.5).sum()))
    return counts


def test_an_object_seen_by_several_scenes_is_reported_once(tmp_path):
    _mosaic(tmp_path / "in")
    record = DetectRun(
        _job(tmp_path / "in", tmp_path / "out"), InlineExecutor(_job(tmp_path / "in", tmp_path / "out"))
    ).run()
    assert record.counts()["done"] == 4
    assert _matches(gpd.read_parquet(tmp_path / "out")) == [1] * len(GROUND)
    lines = {Path(s["uri"]).name: s for s in read_report(tmp_path / "out")["scenes"]}
    assert (
        sum(s["num_tiles_not_owned"] for s in lines.values()) > 0
    )  # tiles in others' parts were not inferred
    # today's behaviour, kept by --no-cross-scene-merge: the overlaps report their objects twice or more
    off = _job(tmp_path / "in", tmp_path / "off", cross_scene_merge=False)
    DetectRun(off, InlineExecutor(off)).run()
    counts = _matches(gpd.read_parquet(tmp_path / "off"))
    assert min(counts) >= 1 and max(counts) >= 2


def _rows(out: Path) -> list[tuple]:
    frame = gpd.read_parquet(out)
    return sorted(zip(frame["scene"], frame.geometry.to_wkb(), frame["label"]))


def _links(folder: Path, src: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(src / name)
    return folder


def test_the_answer_does_not_depend_on_arrival_order_or_on_which_run_did_which_scene(tmp_path):
    _mosaic(tmp_path / "in")
    for out, seed in (("one", 3), ("again", 11)):
        job = _job(tmp_path / "in", tmp_path / out)
        DetectRun(job, InlineExecutor(job, shuffle_seed=seed)).run()
    assert _rows(tmp_path / "one") == _rows(tmp_path / "again")
    # an output filled by two runs: the first lists two scenes (generation 0), then the source grows
    part = _links(tmp_path / "part", tmp_path / "in", ["a.tif", "d.tif"])
    first = _job(part, tmp_path / "two")
    DetectRun(first, InlineExecutor(first)).run()
    grown = _links(tmp_path / "grown", tmp_path / "in", ["a.tif", "b.tif", "c.tif", "d.tif"])
    second = _job(grown, tmp_path / "two")
    record = DetectRun(second, InlineExecutor(second, shuffle_seed=5)).run()
    assert record.counts()["done"] == 2 and record.counts()["exists"] == 2
    fp = load_footprints(LocalStore(tmp_path / "two"))
    assert fp is not None and sorted(fp.generations) == [0, 0, 1, 1]
    # b and c, added later, took nothing a or d had reported: still one row per object
    assert _matches(gpd.read_parquet(tmp_path / "two")) == [1] * len(GROUND)


def test_a_scene_in_another_utm_zone_shares_one_seam(tmp_path):
    infos = [_info("east", 0, 0, 400, 300)]
    # the same ground, seen by a scene georeferenced in the neighbouring zone (32632) over its west half
    west = infos[0]
    corners = scene_outline(west, CRS.from_epsg(32632).to_wkt()).bounds
    transform = Affine(GSD_M, 0, corners[0] - 150.0, 0, -GSD_M, corners[3])
    infos.append(SceneInfo("west", 300, 300, 3, "uint8", CRS.from_epsg(32632).to_wkt(), transform))
    fp = _record(LocalStore(tmp_path), infos)
    regions = [owned_region(fp, i.uri) for i in infos]
    assert shapely.intersection(*regions).area < 1e-6 * regions[0].area
    assert sum(r.area for r in regions) == pytest.approx(
        shapely.union_all(list(fp.polygons_m)).area, rel=1e-9
    )
    px = owned_px(fp, infos[1])
    assert px is not None and 0 < px.area < 300 * 300
