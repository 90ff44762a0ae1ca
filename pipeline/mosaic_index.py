"""The footprints an output's cross-scene merge decides by: ``OUT/_mosaic.<generation>.parquet``.

Every run over an output must give each point of the mosaic the same owner,
whichever scenes it happens to process, so the footprints are recorded in
the output once and read back by every later run (resume, a second driver,
a re-run after the source grew).  Each generation is one write-once file
(``OutputStore.write_bytes_once``): the scenes the first run listed are
generation 0; a later run that lists scenes no generation holds adds the
next one.  Of two drivers adding the same generation together, one write
wins and the other reads it and tries the next for what is still missing.

A file is GeoParquet: ``uri`` (string) and ``geometry`` (the footprint, in
the mosaic CRS, which its ``geo`` metadata carries as PROJJSON), so a
validator run over the whole output, or a GIS, reads it like the detections.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence

import geopandas
import pyarrow as pa
import shapely
from pyproj import CRS
from pyproj.exceptions import ProjError

from pipeline.errors import OutputError
from pipeline.mosaic import Footprints, centre_lonlat, mosaic_crs, scene_outline
from pipeline.storage import OutputStore
from pipeline.types import SceneInfo

PREFIX = "_mosaic."
_NAME = re.compile(r"_mosaic\.(\d{6})\.parquet$")


def generation_name(generation: int) -> str:
    """The file of one generation."""
    return f"{PREFIX}{generation:06d}.parquet"


def _read_generation(store: OutputStore, name: str) -> tuple[str, list[str], list[shapely.Polygon]]:
    try:
        frame = geopandas.read_parquet(io.BytesIO(store.read_bytes(name)))
        crs_wkt = frame.crs.to_wkt()
        uris = [str(u) for u in frame["uri"]]
        polygons = list(frame.geometry.values)
    except (OSError, KeyError, ValueError, AttributeError, pa.ArrowException) as exc:
        raise OutputError(
            f"{store.uri(name)} cannot be read ({type(exc).__name__}: {exc}); restore it, "
            "or write to a new --out (or pass --no-cross-scene-merge)"
        ) from None
    return crs_wkt, uris, polygons


def load_footprints(store: OutputStore) -> Footprints | None:
    """Every recorded generation, in order; None before the output's first run."""
    names = sorted(n for n in store.list_names(PREFIX) if _NAME.search(n))
    footprints: Footprints | None = None
    for name in names:
        crs_wkt, uris, polygons = _read_generation(store, name)
        if footprints is None:
            footprints = Footprints(crs_wkt, (), (), ())
        footprints = footprints.with_generation(uris, polygons)
    return footprints


def _encode(crs_wkt: str, uris: Sequence[str], polygons: Sequence[shapely.Polygon]) -> bytes:
    """One generation as GeoParquet (so a validator or a GIS reads it like the detections)."""
    frame = geopandas.GeoDataFrame({"uri": list(uris)}, geometry=list(polygons), crs=CRS.from_wkt(crs_wkt))
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False, write_covering_bbox=True)
    return sink.getvalue()


def _placeable(scene: SceneInfo) -> bool:
    """Whether a scene's footprint has a place on the globe (a local engineering CRS has none).

    Such a scene is left out of the mosaic; the run fails it on its own if it
    cannot reach the output's CRS either.
    """
    try:
        centre_lonlat(scene)
    except (ValueError, ProjError):
        return False
    return True


def record_scenes(store: OutputStore, known: Footprints | None, scenes: Sequence[SceneInfo]) -> Footprints:
    """``known`` plus ``scenes`` as a new generation, recorded in the output; what the output now holds.

    Args:
        store: the output.
        known: the generations already recorded (``load_footprints``).
        scenes: opened scenes no recorded generation holds.

    Raises:
        OutputError: a recorded generation cannot be read.
    """
    scenes = [s for s in scenes if _placeable(s)]
    while True:
        pending = [s for s in scenes if known is None or s.uri not in known]
        if not pending:
            return known if known is not None else Footprints(mosaic_crs(0.0, 0.0).to_wkt(), (), (), ())
        crs_wkt = known.crs_wkt if known is not None else mosaic_crs(*centre_lonlat(pending[0])).to_wkt()
        base = known if known is not None else Footprints(crs_wkt, (), (), ())
        polygons = [scene_outline(s, crs_wkt) for s in pending]
        generation = max(base.generations, default=-1) + 1
        store.write_bytes_once(
            generation_name(generation), _encode(crs_wkt, [s.uri for s in pending], polygons)
        )
        known = load_footprints(store)  # ours, or the generation another driver wrote first


def footprint_pass(
    store: OutputStore,
    listing: Iterable[tuple[str, str | None]],
    open_headers: Callable[[list[str]], list[SceneInfo | str]],
    *,
    batch: int = 256,
) -> Footprints:
    """The output's footprints, with every listed scene they lack opened and recorded as a new generation.

    Args:
        store: the output.
        listing: ``(uri, reason)`` as ``pipeline.sources.iter_listing`` yields them
            (a scene with a reason is skipped by the run, and here).
        open_headers: the executor's ``open_headers`` (a scene that does not open
            comes back as its error and is left out: the run fails it on its own).
        batch: headers opened per call.
    """
    known = load_footprints(store)
    fresh: list[SceneInfo] = []
    pending: list[str] = []

    def open_pending() -> None:
        fresh.extend(h for h in open_headers(pending) if isinstance(h, SceneInfo))
        pending.clear()

    for uri, reason in listing:
        if reason is None and (known is None or uri not in known):
            pending.append(uri)
            if len(pending) == batch:
                open_pending()
    if pending:
        open_pending()
    return record_scenes(store, known, fresh)
