"""Issue 24: inputs accepted silently that gave wrong answers, and the messages of scenes that cannot run.

Each scene is a real GeoTIFF written with rasterio and run through the plain
detect lifecycle (``pipeline.run.DetectRun`` with the in-process executor,
no Ray) or the one reader.  Before: a uint16 scene went through a uint8
model's normalisation, palette indexes were read as brightness (or refused
with a hint to pass ``--bands 1,1,1``, which reads them so), 1-bit data
read as 0/1 of 255, ``complex_int16`` raised a raw ``TypeError``, a
multi-image TIFF said nothing of its other images, corrupt pixels said "See
previous exception for details", a TIFF with an unknown codec was told to
pass ``--drivers``, and GCP-only, RPC-only and ungeoreferenced scenes were
all told to pass ``--assume-crs``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC
from rasterio.transform import Affine

from pipeline.errors import InvalidSceneError, TileReadError
from pipeline.job import DetectJob
from pipeline.reading import ReadConfig, open_scene, read_tiles
from pipeline.report import read_report
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig, tile_scene
from pipeline.types import PixelRange
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

UINT8 = PixelRange("uint8", 0.0, 255.0)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
TILING = TilingConfig(tile_size_px=64, overlap_px=16)
OBJECTS = [(10, 10, 30, 30, 0), (70, 40, 90, 60, 0)]


def _profile(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        driver="GTiff", width=128, height=96, count=1, dtype="uint8", crs="EPSG:32633", transform=TRANSFORM
    )
    return base | kw


def _objects_mask(height: int = 96, width: int = 128) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2, _ in OBJECTS:
        mask[y1:y2, x1:x2] = True
    return mask


def _run(path: Path, out: Path, read: ReadConfig):
    job = DetectJob(
        source=str(path), out_dir=str(out), model=StandinLoader(), tiling=TILING, read=read, progress=False
    )
    messages: list[str] = []
    DetectRun(job, InlineExecutor(job), log=messages.append).run()
    (scene,) = read_report(out)["scenes"]
    return scene, messages


def _reference_boxes(tmp_path: Path) -> list[list[float]]:
    """What the stand-in finds on the same objects painted in uint8 RGB."""
    import geopandas as gpd

    ref = write_scene(tmp_path / "ref.tif", OBJECTS, width=128, height=96)
    scene, _ = _run(ref, tmp_path / "ref_out", ReadConfig(model_input=UINT8))
    assert scene["status"] == "done" and scene["num_detections"] == 2
    return sorted(gpd.read_parquet(tmp_path / "ref_out").geometry.bounds.values.tolist())


def _bounds(out: Path) -> list[list[float]]:
    import geopandas as gpd

    return sorted(gpd.read_parquet(out).geometry.bounds.values.tolist())


def test_uint16_scene_is_refused_for_a_uint8_model_naming_both_kinds_and_the_option(tmp_path):
    path = write_scene(tmp_path / "u16.tif", OBJECTS, width=128, height=96, dtype="uint16")
    scene, messages = _run(path, tmp_path / "out", ReadConfig(model_input=UINT8))
    assert scene["status"] == "failed" and scene["num_tiles"] == 0  # at the header, before any tile
    error = scene["error"]
    assert str(path.resolve()) in error and "uint16 0..65535" in error and "uint8 0..255" in error
    assert "--rescale" in error and "\n" not in error
    assert any(error in m for m in messages)


@pytest.mark.parametrize("mode", ["minmax", "percentile"])
def test_rescale_stretches_a_uint16_scene_to_the_model_range_and_says_so(tmp_path, mode):
    expected = _reference_boxes(tmp_path)
    data = np.full((3, 96, 128), 300, np.uint16)
    data[:, _objects_mask()] = 3000
    if mode == "percentile":  # objects are 6.5% of the pixels: the 98th percentile is theirs
        data[:, 0, :50] = 0  # outliers below the 2nd percentile and above the 98th, clipped
        data[:, 15, 15] = 65535  # (min/max would take 0..65535 and lose the objects)
    path = tmp_path / f"u16_{mode}.tif"
    with rasterio.open(path, "w", **_profile(count=3, dtype="uint16")) as dst:
        dst.write(data)
    scene, _ = _run(path, tmp_path / "out", ReadConfig(model_input=UINT8, rescale=mode))
    assert scene["status"] == "done", scene
    assert f"--rescale {mode}" in scene["note"] and "uint16 0..65535" in scene["note"]
    assert "uint8 0..255" in scene["note"]
    assert _bounds(tmp_path / "out") == expected
    again, _ = _run(path, tmp_path / "out2", ReadConfig(model_input=UINT8, rescale=mode))
    assert again["note"] == scene["note"] and _bounds(tmp_path / "out2") == expected  # same scale each run


def test_paletted_scene_is_expanded_to_rgb_for_a_three_band_model(tmp_path):
    expected = _reference_boxes(tmp_path)
    index = np.zeros((1, 96, 128), np.uint8)
    index[0, _objects_mask()] = 7  # palette entry 7 is bright red, 0 is black
    path = tmp_path / "pal.tif"
    with rasterio.open(path, "w", **_profile(photometric="palette")) as dst:
        dst.write(index)
        dst.write_colormap(1, {0: (0, 0, 0, 255), 7: (255, 0, 0, 255)})
    scene, _ = _run(path, tmp_path / "out", ReadConfig(model_input=UINT8))
    assert scene["status"] == "done", scene
    assert scene["note"] == "palette expanded to RGB"
    assert _bounds(tmp_path / "out") == expected


def test_paletted_scene_is_refused_for_a_one_band_model(tmp_path):
    path = tmp_path / "pal1.tif"
    with rasterio.open(path, "w", **_profile(photometric="palette")) as dst:
        dst.write(np.zeros((1, 96, 128), np.uint8))
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255)})
    with pytest.raises(InvalidSceneError, match=r"pal1.tif: a paletted scene .* colour-table indexes"):
        open_scene(str(path), ReadConfig(bands=(1,), model_input=UINT8))


def test_one_bit_scene_reads_as_0_and_255_not_0_and_1(tmp_path):
    path = tmp_path / "bits.tif"
    data = np.zeros((1, 96, 128), np.uint8)
    data[0, _objects_mask()] = 1
    with rasterio.open(path, "w", **_profile(nbits=1)) as dst:
        dst.write(data)
    config = ReadConfig(bands=(1,), model_input=UINT8)
    info = open_scene(str(path), config)
    (read, *_) = read_tiles(str(path), tile_scene(str(path), 128, 96, TilingConfig(128, 0)), config)
    assert info.note == "palette expanded to grey"
    assert read.image is not None and sorted(np.unique(read.image)) == [0, 255]
    assert (read.image[0, :96, :128] == 255).sum() == _objects_mask().sum()


@pytest.mark.parametrize("dtype", ["complex_int16", "complex64"])
def test_complex_scene_is_refused_in_one_line(tmp_path, dtype):
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", **_profile(dtype=dtype)):
        pass
    scene, _ = _run(path, tmp_path / "out", ReadConfig(bands=(1, 1, 1), model_input=UINT8))
    assert scene["status"] == "failed"
    assert scene["error"].startswith(f"{path.resolve()}: pixels are complex ({dtype}")
    assert "TypeError" not in scene["error"] and "not understood" not in scene["error"]


def test_multi_image_tiff_is_read_from_its_first_image_and_says_so(tmp_path):
    path = write_scene(tmp_path / "multi.tif", OBJECTS, width=128, height=96)
    with rasterio.open(path, "r+") as src:
        profile, pixels = src.profile, src.read()
    page = tmp_path / "page2.tif"
    with rasterio.open(page, "w", **profile) as dst:
        dst.write(pixels // 2)
    import subprocess

    subprocess.run(["gdal_translate", "-q", str(page), str(path), "-co", "APPEND_SUBDATASET=YES"], check=True)
    scene, _ = _run(path, tmp_path / "out", ReadConfig(model_input=UINT8))
    assert scene["status"] == "done" and scene["num_detections"] == 2
    assert "only the first of its 2 images is read" in scene["note"]


def _strip_tiff(path: Path, **kw: object) -> Path:
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **_profile(**kw)) as dst:
        dst.write(rng.integers(0, 255, (1, 96, 128), dtype=np.uint8))
    return path


def test_corrupt_pixels_keep_gdals_cause(tmp_path):
    path = _strip_tiff(tmp_path / "corrupt.tif", compress="deflate")
    raw = bytearray(path.read_bytes())
    raw[400:1400] = bytes(1000)  # inside the compressed strips
    path.write_bytes(bytes(raw))
    config = ReadConfig(bands=(1,))
    with pytest.raises(TileReadError) as err:
        list(read_tiles(str(path), tile_scene(str(path), 128, 96, TilingConfig(128, 0)), config))
    assert "IReadBlock failed" in str(err.value) and "TIFFReadEncodedStrip() failed" in str(err.value)
    assert "See previous exception" not in str(err.value)


def _codec_tiff(path: Path) -> Path:
    """A complete TIFF whose compression tag names a codec this GDAL lacks."""
    _strip_tiff(path)
    raw = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", raw, entry)[0] == 259:  # Compression
            struct.pack_into("<H", raw, entry + 8, 34933)  # a codec this GDAL does not have
    path.write_bytes(bytes(raw))
    return path


def test_a_tiff_with_a_codec_gdal_lacks_is_not_told_to_pass_drivers(tmp_path):
    path = _codec_tiff(tmp_path / "codec.tif")
    with pytest.raises(InvalidSceneError) as err:
        open_scene(str(path), ReadConfig(bands=(1,)))
    message = str(err.value)
    assert "codec.tif" in message and "missing codec" in message and "It is a TIFF" in message
    assert "--drivers" not in message


def test_a_tiff_object_with_a_codec_gdal_lacks_is_not_told_to_pass_drivers(s3_server, tmp_path):
    import boto3

    local = _codec_tiff(tmp_path / "codec.tif")
    client = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="odd")
    client.upload_file(str(local), "odd", "scenes/codec.tif")
    client.put_object(Bucket="odd", Key="scenes/text.tif", Body=b"not a tiff at all")
    with pytest.raises(InvalidSceneError) as err:
        open_scene("s3://odd/scenes/codec.tif", ReadConfig(bands=(1,)))
    assert "missing codec" in str(err.value) and "It is a TIFF" in str(err.value)
    assert "--drivers" not in str(err.value)
    with pytest.raises(InvalidSceneError, match="Other formats need --drivers"):  # not a TIFF: as before
        open_scene("s3://odd/scenes/text.tif", ReadConfig(bands=(1,)))


def test_gcp_only_rpc_only_and_ungeoreferenced_scenes_get_different_lines(tmp_path):
    plain = _profile()
    del plain["crs"], plain["transform"]
    gcps = [GroundControlPoint(0, 0, 500000, 4000000), GroundControlPoint(96, 128, 501280, 3999040)]
    gcps.append(GroundControlPoint(0, 128, 501280, 4000000))
    with rasterio.open(tmp_path / "gcp.tif", "w", **plain, gcps=gcps, crs=CRS.from_epsg(32633)) as dst:
        dst.write(np.ones((1, 96, 128), np.uint8))
    zero = [0.0] * 20
    rpc = RPC(0, 100, 45, 0.1, [1.0, *zero[1:]], [0, 1.0, *zero[2:]], 48, 48, 10, 0.1,
              [1.0, *zero[1:]], [0, 0, 1.0, *zero[3:]], 64, 64)  # fmt: skip
    with rasterio.open(tmp_path / "rpc.tif", "w", **plain, rpcs=rpc) as dst:
        dst.write(np.ones((1, 96, 128), np.uint8))
    with rasterio.open(tmp_path / "none.tif", "w", **plain) as dst:
        dst.write(np.ones((1, 96, 128), np.uint8))
    lines = {}
    for name in ("gcp.tif", "rpc.tif", "none.tif"):
        with pytest.raises(InvalidSceneError) as err:
            open_scene(str(tmp_path / name), ReadConfig(bands=(1,)))
        lines[name] = str(err.value)
    assert "3 ground control points (GCPs)" in lines["gcp.tif"] and "gdalwarp" in lines["gcp.tif"]
    assert "RPCs" in lines["rpc.tif"] and "gdalwarp -rpc" in lines["rpc.tif"]
    assert "no georeferencing at all" in lines["none.tif"] and "--assume-crs" in lines["none.tif"]
    for name in ("gcp.tif", "rpc.tif"):
        assert "cannot help" in lines[name] and "to process it anyway" not in lines[name]


def test_local_crs_scene_fails_before_inference_naming_its_crs(tmp_path):
    """Already so (pipeline.output.check_reachable): pinned here with the other messages."""
    src = tmp_path / "in"
    write_scene(src / "a_utm.tif", OBJECTS, width=128, height=96)
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    write_scene(src / "b_local.tif", OBJECTS, width=128, height=96, crs=local)
    write_scene(src / "c_wgs.tif", OBJECTS, width=128, height=96, crs="EPSG:32634")
    job = DetectJob(
        source=str(src), out_dir=str(tmp_path / "out"), model=StandinLoader(), tiling=TILING, progress=False
    )
    DetectRun(job, InlineExecutor(job), log=lambda m: None).run()
    by = {Path(s["uri"]).name: s for s in read_report(tmp_path / "out")["scenes"]}
    assert by["a_utm.tif"]["status"] == by["c_wgs.tif"]["status"] == "done"
    line = by["b_local.tif"]
    assert line["status"] == "failed" and line["num_tiles"] == 0
    assert "site grid" in line["error"] and "--to-crs" in line["error"]
