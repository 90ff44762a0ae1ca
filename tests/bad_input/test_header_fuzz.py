"""Issue 24: hostile raster headers, generated, through the plain detect lifecycle (no Ray).

A seeded, bounded set of GeoTIFFs written with rasterio varies what a header
can say: sizes (1 px wide or high included), dtypes (NBITS, complex), band
counts, block sizes (1-row strips to whole-scene strips, small tiles),
compressions, photometric interpretations, palettes, nodata, CRSs (and none,
GCPs only) and transforms (north-up, south-up, rotated).  Each scene holds
one bright square on a dark ground at a known pixel box.  Every scene must
end either ``done`` with the square found where its georeferencing puts it,
or ``failed`` with one line that names the file and the problem (never a
raw exception text, nor GDAL's "See previous exception"); a re-run of the
same command changes no outcome; no run may hang (an alarm stops it).
"""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine

from pipeline.job import DetectJob
from pipeline.reading import ReadConfig
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from pipeline.types import PixelRange
from tests.unit.pipeline.inline_executor import InlineExecutor

SEED = 24
NUM_SCENES = 36
OUT_CRS = "EPSG:32633"
TILING = TilingConfig(tile_size_px=64, overlap_px=16)
RAW_EXCEPTION = re.compile(
    r"(^|: )[A-Z]\w*(Error|Exception)\b|Traceback|See previous exception|not understood"
)
INT_DTYPES = ("uint8", "uint8", "uint8", "int8", "uint16", "int16", "uint32", "int32")
DTYPES = (*INT_DTYPES, "float32", "float64", "complex_int16", "complex64")


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def _hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a detect run took more than {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _transform(rng: random.Random) -> Affine:
    origin = Affine.translation(500000.0 + rng.randrange(0, 5000), 4000000.0 - rng.randrange(0, 5000))
    kind = rng.choice(["north-up", "north-up", "south-up", "rotated"])
    if kind == "south-up":
        return origin * Affine.scale(10.0, 10.0)
    if kind == "rotated":
        return origin * Affine.rotation(rng.choice([17.0, 30.0, 90.0])) * Affine.scale(10.0, -10.0)
    return origin * Affine.scale(10.0, -10.0)


def _values(dtype: str, nbits: int | None) -> tuple[float, float]:
    """(dark ground, bright square) in the scene's own units."""
    if dtype.startswith(("float", "complex")):
        return 0.0, 1.0
    if nbits:
        return 0.0, float(2**nbits - 1)
    return 0.0, float(min(np.iinfo(dtype).max, 3000))


def _size(rng: random.Random) -> tuple[int, int]:
    return rng.choice(
        [(1, 1), (1, 90), (90, 1), (7, 5), (33, 200), (130, 70), (64, 64), (97, 161), (150, 150)]
    )


def _layout(rng: random.Random, profile: dict[str, Any], dtype: str, count: int) -> dict[str, Any]:
    """Blocks, compression, photometric interpretation, interleave: what the header can say of its layout."""
    width, height = profile["width"], profile["height"]
    if rng.random() < 0.4 and width >= 16 and height >= 16:
        profile.update(tiled=True, blockxsize=rng.choice([16, 32, 64]), blockysize=rng.choice([16, 32, 64]))
    else:
        profile.update(blockysize=rng.choice([1, 3, height]))
    codecs = ["none", "deflate", "lzw", "packbits", "zstd", "lerc"]
    if dtype == "uint8" and count in (1, 3) and not profile.get("nbits"):
        codecs.append("jpeg")
    profile["compress"] = rng.choice(codecs)
    photometric = ["minisblack"]
    if dtype == "uint8" and count >= 3:
        photometric.append("rgb")
        if profile["compress"] == "jpeg":
            photometric.append("ycbcr")
    if dtype == "uint8" and count == 4:
        photometric.append("separated")
    if dtype == "uint8":
        photometric.append("miniswhite")
    profile["photometric"] = rng.choice(photometric)
    profile["interleave"] = rng.choice(["pixel", "band"])
    return profile


def _scene(rng: random.Random, path: Path) -> dict[str, Any]:
    """Write one hostile scene; return what it should give (its square's pixel box, CRS, transform)."""
    width, height = _size(rng)
    dtype = rng.choice(DTYPES)
    paletted = dtype in ("uint8", "uint16") and rng.random() < 0.2
    count = 1 if paletted else rng.choice([1, 1, 2, 3, 3, 4, 5])
    nbits = rng.choice([1, 2, 4]) if dtype == "uint8" and rng.random() < 0.2 else None
    nbits = 12 if dtype == "uint16" and not paletted and rng.random() < 0.2 else nbits
    transform, crs = _transform(rng), rng.choice([OUT_CRS, OUT_CRS, OUT_CRS, "EPSG:32634", None, "gcps"])
    profile: dict[str, Any] = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype)
    profile.update(nbits=nbits) if nbits else None
    profile = _layout(rng, profile, dtype, count)
    if paletted:
        profile.update(photometric="palette", compress=rng.choice(["none", "deflate"]))
    if crs == "gcps":
        corners = [(0, 0), (width, 0), (width, height)]
        gcps = [GroundControlPoint(r, c, *(transform * (c, r))) for c, r in corners]
        profile.update(gcps=gcps, crs=OUT_CRS)
    else:
        profile.update(crs=crs, transform=transform)
    low, high = (0.0, 1.0) if paletted else _values(dtype, nbits)  # palette entry 1 is white
    if rng.random() < 0.2 and not dtype.startswith("complex"):
        profile["nodata"] = high + 1 if dtype.startswith("float") or high + 1 <= np.iinfo(dtype).max else None
    side = min(12, width // 3, height // 3)
    box = (width // 3, height // 3, width // 3 + side, height // 3 + side) if side >= 3 else None
    data = np.full((count, height, width), low, dtype=np.dtype("complex64" if "complex" in dtype else dtype))
    if box is not None:
        data[:, box[1] : box[3], box[0] : box[2]] = high
    with rasterio.open(path, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
        dst.write(data.astype(np.complex64) if dtype == "complex_int16" else data)
        if paletted:
            table = {i: (rng.randrange(0, 60),) * 3 + (255,) for i in range(2, 16)}
            dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 255, 255, 255), **table})
    return {"box": box, "crs": crs, "transform": transform, "profile": profile}


def _expected_bounds(case: dict[str, Any]) -> tuple[float, ...]:
    """The square's bounds in the output CRS: its four pixel corners through the affine, reprojected."""
    x1, y1, x2, y2 = case["box"]
    xs, ys = zip(*(case["transform"] * (c, r) for c, r in [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]))
    if case["crs"] != OUT_CRS:
        xs, ys = Transformer.from_crs(case["crs"], OUT_CRS, always_xy=True).transform(xs, ys)
    return min(xs), min(ys), max(xs), max(ys)


def _run(src: Path, out: Path, rescale: str) -> dict[str, dict[str, Any]]:
    bands = (1, 2, 3) if rescale == "refuse" else (1, 1, 1)  # one-band scenes too
    job = DetectJob(
        source=str(src),
        out_dir=str(out),
        model=StandinLoader(),
        tiling=TILING,
        read=ReadConfig(bands=bands, model_input=PixelRange("uint8", 0.0, 255.0), rescale=rescale),
        to_crs=OUT_CRS,
        progress=False,
        window_scenes=8,
    )
    with _deadline(240):
        DetectRun(job, InlineExecutor(job, max_groups=8), log=lambda line: None).run()
    return {Path(s["uri"]).name: s for s in read_report(out)["scenes"]}


def _check_outcome(name: str, line: dict[str, Any], case: dict[str, Any], found: gpd.GeoDataFrame) -> None:
    where = f"{name} ({case['profile']})"
    assert line["status"] in ("done", "failed"), where
    if line["status"] == "failed":
        error = line["error"]
        assert error.startswith(line["uri"] + ": ") and "\n" not in error, where
        assert not RAW_EXCEPTION.search(error[len(line["uri"]) :]), f"{where}: {error}"
        return
    mine = found[found["scene"].str.endswith(name)] if len(found) else found
    if case["box"] is None:
        assert len(mine) == 0, where
        return
    assert len(mine) == 1, f"{where}: {len(mine)} detections, 1 square painted"
    got = mine.geometry.iloc[0].bounds
    tolerance = 1.5 * 10.0 * 2**0.5  # a pixel and a half of the 10 m grid, rotated
    assert np.allclose(got, _expected_bounds(case), atol=tolerance), (
        f"{where}: {got} vs {_expected_bounds(case)}"
    )


def test_hostile_headers_end_done_and_georeferenced_or_in_one_line_and_rerun_alike(tmp_path):
    rng = random.Random(SEED)
    cases: dict[str, dict[str, Any]] = {}
    outcomes: list[str] = []
    for rescale in ("refuse", "minmax"):
        src = tmp_path / rescale
        src.mkdir()
        for i in range(NUM_SCENES // 2):
            cases[f"{rescale}_{i:02d}.tif"] = _scene(rng, src / f"{rescale}_{i:02d}.tif")
        out = tmp_path / f"out_{rescale}"
        first = _run(src, out, rescale)
        assert set(first) == {name for name in cases if name.startswith(rescale)}
        found = (
            gpd.read_parquet(out)
            if any(s["status"] == "done" for s in first.values())
            else gpd.GeoDataFrame()
        )
        for name, line in first.items():
            _check_outcome(name, line, cases[name], found)
            outcomes.append(line["status"])
        again = _run(src, tmp_path / f"again_{rescale}", rescale)  # the same command, a fresh output
        for name, line in first.items():
            keys = ("status", "error", "note", "num_detections", "num_tiles")
            assert {k: again[name][k] for k in keys} == {k: line[k] for k in keys}, name
    assert "done" in outcomes and "failed" in outcomes  # the set exercises both ends
