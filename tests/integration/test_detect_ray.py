"""Detect end to end through a real local Ray cluster, with the BlobDetector stand-in."""

from __future__ import annotations

from pathlib import Path

import boto3
import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from rasterio.transform import Affine

from pipeline.merging import MergeConfig
from pipeline.ray_stages import DetectConfig, DetectJob, run_detect
from pipeline.report import read_report
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.integration.conftest import standin_detect_args

pytestmark = pytest.mark.integration

# tile 128, overlap 32: tile origins 0, 96, 192; cores split at 112 and 208
TILING = TilingConfig(tile_size_px=128, overlap_px=32)
OBJECTS = [
    (110, 20, 130, 36, 0),  # crosses the core seam x=112 and tile 0's right edge x=128
    (104, 104, 120, 120, 1),  # centred exactly on the four-tile corner (112, 112)
    (90, 200, 100, 210, 2),  # in the horizontal overlap rows 192..224
    (200, 190, 215, 215, 0),  # crosses x=208 and y=208
    (10, 10, 20, 20, 1),  # one tile only
    (280, 280, 300, 300, 2),  # in the padded last tile, touching the scene corner
]
NORTH_UP = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0)
ROTATED = Affine(0.0, 0.5, 500000.0, 0.5, 0.0, 4000000.0)  # x = 500000 + 0.5*row, y = 4000000 + 0.5*col


def run(src: str, out: Path, **kw) -> dict:
    cfg = DetectJob(
        source=src,
        out_dir=str(out),
        model=StandinLoader(),
        detect=DetectConfig(batch_size=4),
        tiling=TILING,
        progress=False,
        **kw,
    )
    report = run_detect(cfg, log=lambda m: None)
    return read_report(out) | {"_report": report}


def detections(out: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(out)


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated"])
def test_seam_objects_found_once_at_right_crs_corners(ray_cluster, tmp_path, transform):
    scene = write_scene(tmp_path / "in" / "seams.tif", OBJECTS, width=300, height=300, transform=transform)
    rep = run(str(scene.parent), tmp_path / "out")
    assert rep["counts"]["done"] == 1
    gdf = detections(tmp_path / "out")
    got = sorted(
        tuple(int(v) for v in r) for r in gdf[["xmin_px", "ymin_px", "xmax_px", "ymax_px"]].to_numpy()
    )
    assert got == sorted((x1, y1, x2, y2) for x1, y1, x2, y2, _ in OBJECTS)  # each object exactly once
    labels = dict(zip(map(tuple, gdf[["xmin_px", "ymin_px"]].astype(int).to_numpy()), gdf["label"]))
    assert labels[(104, 104)] == "green" and labels[(110, 20)] == "red"
    corner = gdf[(gdf.xmin_px == 104) & (gdf.ymin_px == 104)].geometry.iloc[0]
    ring = sorted(map(tuple, np.asarray(corner.exterior.coords)[:4].round(6).tolist()))
    if transform == NORTH_UP:
        # cols 104..120 -> x 500052..500060; rows 104..120 -> y 3999948..3999940
        assert ring == sorted(
            [(500052.0, 3999948.0), (500060.0, 3999948.0), (500060.0, 3999940.0), (500052.0, 3999940.0)]
        )
    else:
        # x = 500000 + 0.5*row, y = 4000000 + 0.5*col
        assert ring == sorted(
            [(500052.0, 4000052.0), (500060.0, 4000052.0), (500060.0, 4000060.0), (500052.0, 4000060.0)]
        )
    a = gdf[(gdf.xmin_px == 110)].geometry.iloc[0].bounds
    if transform == NORTH_UP:
        assert a == (500055.0, 3999982.0, 500065.0, 3999990.0)
    else:
        assert a == (500010.0, 4000055.0, 500018.0, 4000065.0)


def _bucket(env, name, files):
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket=name)
    for key, path in files.items():
        s3.upload_file(str(path), name, key)


def test_s3_bucket_same_as_local_folder(ray_cluster, s3_server, tmp_path):
    folder = tmp_path / "scenes"
    a = write_scene(folder / "a.tif", OBJECTS, width=300, height=300, transform=NORTH_UP)
    b = write_scene(
        folder / "b.tif", OBJECTS[:2], width=200, height=150, transform=Affine(1, 0, 600000, 0, -1, 4000000)
    )
    (folder / "notes.txt").write_text("not a raster")
    _bucket(s3_server, "imagery", {"run1/a.tif": a, "run1/b.tif": b, "run1/notes.txt": folder / "notes.txt"})
    local = run(str(folder), tmp_path / "local")
    remote = run("s3://imagery/run1/", tmp_path / "remote")
    assert local["counts"] == remote["counts"] == {"done": 2, "exists": 0, "failed": 0, "skipped": 1}
    gl, gr = detections(tmp_path / "local"), detections(tmp_path / "remote")
    assert set(gr["scene"]) == {"s3://imagery/run1/a.tif", "s3://imagery/run1/b.tif"}
    key = ["xmin_px", "ymin_px", "xmax_px", "ymax_px"]
    gl = (
        gl.assign(name=gl.scene.map(lambda s: Path(s).name))
        .sort_values(["name", *key])
        .reset_index(drop=True)
    )
    gr = (
        gr.assign(name=gr.scene.map(lambda s: Path(s).name))
        .sort_values(["name", *key])
        .reset_index(drop=True)
    )
    assert len(gl) == len(OBJECTS) + 2
    assert gl[key + ["label", "name"]].equals(gr[key + ["label", "name"]])
    assert gl.geometry.geom_equals(gr.geometry).all()


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_bad_scenes_fail_alone_and_are_reported(ray_cluster, s3_server, tmp_path, where):
    from jobs.cli import _register_optional, cli

    _register_optional()
    folder = tmp_path / "bucket"
    write_scene(folder / "good1.tif", OBJECTS[:2], width=300, height=300, transform=NORTH_UP)
    write_scene(folder / "good2.tif", OBJECTS[2:4], width=300, height=300, transform=NORTH_UP)
    (folder / "empty.tif").write_bytes(b"")
    (folder / "text.tif").write_text("this is not a tiff\n")
    big = write_scene(tmp_path / "big.tif", OBJECTS, width=600, height=600, transform=NORTH_UP)
    data = big.read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    write_scene(folder / "nocrs.tif", OBJECTS[:1], width=300, height=300, crs=None)
    out = tmp_path / "out"
    source = str(folder)
    if where == "s3":
        _bucket(s3_server, "mixed", {f"scenes/{p.name}": p for p in folder.iterdir()})
        source = "s3://mixed/scenes/"
    result = CliRunner().invoke(cli, ["detect", *standin_detect_args(source, str(out))])
    assert result.exit_code == 1, result.output
    rep = read_report(out)
    by_name = {Path(s["uri"]).name: s for s in rep["scenes"]}
    assert by_name["good1.tif"]["status"] == "done" and by_name["good2.tif"]["status"] == "done"
    assert by_name["good1.tif"]["num_detections"] == 2 and by_name["good1.tif"]["num_tiles"] == 9
    for name, problem in [
        ("empty.tif", "empty, 0 bytes" if where == "folder" else "cannot open"),
        ("text.tif", "cannot open"),
        ("truncated.tif", "truncated.tif"),
        ("nocrs.tif", "--assume-crs EPSG"),
    ]:
        assert by_name[name]["status"] == "failed", name
        assert name in by_name[name]["error"] and problem in by_name[name]["error"], by_name[name]["error"]
    assert len(detections(out)) == 4
    assert "2 scene(s) done" in result.output and "4 failed" in result.output


def test_rerun_skips_done_scenes_and_overwrite_redoes(ray_cluster, tmp_path):
    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=300, height=300, transform=NORTH_UP)
    first = run(str(tmp_path / "in"), tmp_path / "out")
    files = sorted((tmp_path / "out").glob("*.parquet"))
    mtime = files[0].stat().st_mtime_ns
    second = run(str(tmp_path / "in"), tmp_path / "out")
    assert second["counts"]["exists"] == 1 and second["counts"]["done"] == 0
    assert files[0].stat().st_mtime_ns == mtime
    assert len(detections(tmp_path / "out")) == len(OBJECTS)  # not duplicated
    third = run(str(tmp_path / "in"), tmp_path / "out", overwrite=True)
    assert third["counts"]["done"] == 1 and len(detections(tmp_path / "out")) == len(OBJECTS)
    assert first["run_id"] != third["run_id"]
    assert set(detections(tmp_path / "out")["run_id"]) == {third["run_id"]}


def test_nodata_tiles_skipped_and_class_agnostic(ray_cluster, tmp_path):
    # left half nodata (value 7), one object on the right
    scene = write_scene(
        tmp_path / "in" / "nd.tif",
        [(200, 10, 220, 30, 0)],
        width=300,
        height=128,
        transform=NORTH_UP,
        nodata=7,
        fill=7,
    )
    import rasterio

    with rasterio.open(scene, "r+") as dst:
        arr = dst.read()
        arr[:, :, 128:][arr[:, :, 128:] == 7] = 0
        dst.write(arr)
    rep = run(str(scene.parent), tmp_path / "out", merge=MergeConfig(class_agnostic=True))
    line = rep["scenes"][0]
    assert line["num_tiles"] == 3 and line["num_tiles_skipped_nodata"] == 1 and line["num_detections"] == 1


class _BrokenLoader:
    """A loader whose model cannot be built where it runs (e.g. a device that is not there)."""

    info = StandinLoader().info

    def load(self, device):
        raise RuntimeError("no such device: the model cannot be built here")


def test_run_that_breaks_records_every_scene_as_failed(ray_cluster, tmp_path):
    write_scene(tmp_path / "in" / "a.tif", OBJECTS[:1], width=200, height=200, transform=NORTH_UP)
    job = DetectJob(
        source=str(tmp_path / "in"),
        out_dir=str(tmp_path / "out"),
        model=_BrokenLoader(),
        tiling=TILING,
        progress=False,
    )
    report = run_detect(job, log=lambda m: None)
    rep = read_report(tmp_path / "out")
    assert report.num_failed == 1 and rep["finished_at"] is not None
    assert "run aborted" in rep["scenes"][0]["error"] and "no such device" in rep["scenes"][0]["error"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_and_threads_reach_the_model_actor(ray_cluster, tmp_path, precision):
    from jobs.cli import _register_optional, cli

    _register_optional()
    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=300, height=300, transform=NORTH_UP)
    args = standin_detect_args(str(tmp_path / "in"), str(tmp_path / "out"))
    result = CliRunner().invoke(cli, ["detect", *args, "--precision", precision])
    assert result.exit_code == 0, result.output
    rep = read_report(tmp_path / "out")
    assert rep["config"]["detect"]["precision"] == precision
    # 2-CPU cluster: the actor holds 1.5 CPUs and torch runs ceil(1.5) = 2 threads in it
    (actor,) = rep["config"]["model_actors"]
    assert f"precision={precision}" in actor and "torch_threads=2" in actor and "device=cpu" in actor
    assert len(detections(tmp_path / "out")) == len(OBJECTS)  # uint8 bytes in, same boxes out
    phases = rep["phases_s"]  # where the run's time went, in order
    assert list(phases) == ["footprints_recorded", "scenes_opened", "first_tiles", "last_tiles"]  # merge on
    assert 0 <= phases["scenes_opened"] <= phases["first_tiles"] <= phases["last_tiles"] <= rep["elapsed_s"]


def test_deprecated_amp_cannot_contradict_precision(tmp_path):
    from jobs.cli import _register_optional, cli

    _register_optional()
    args = standin_detect_args(str(tmp_path), str(tmp_path / "out"))
    result = CliRunner().invoke(cli, ["detect", *args, "--amp", "--precision", "bf16"])
    assert result.exit_code == 2 and "--amp" in result.output


def test_calibrated_scores_drop_low_detections_unless_min_score_is_given(ray_cluster, tmp_path):
    # issue 11: detect keeps each class at its best-F1 score from validation unless --min-score is given
    from dataclasses import replace

    from pipeline.standin import STANDIN_INFO

    write_scene(tmp_path / "in" / "a.tif", OBJECTS, width=300, height=300, transform=NORTH_UP)
    calibrated = StandinLoader(
        info=replace(STANDIN_INFO, score_thresholds=(0.95, 0.0, 0.0))
    )  # red needs 0.95
    job = DetectJob(
        source=str(tmp_path / "in"),
        out_dir=str(tmp_path / "cal"),
        model=calibrated,
        tiling=TILING,
        progress=False,
    )
    run_detect(job, log=lambda m: None)
    labels = sorted(detections(tmp_path / "cal")["label"])
    assert "red" not in labels and len(labels) == sum(
        1 for o in OBJECTS if o[4] != 0
    )  # the stand-in scores 0.9
    run_detect(replace(job, out_dir=str(tmp_path / "all"), min_score=0.0), log=lambda m: None)
    assert len(detections(tmp_path / "all")) == len(OBJECTS)


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_drivers_widen_what_is_listed_and_opened(ray_cluster, s3_server, tmp_path, where):
    # a JPEG 2000 copy of a GeoTIFF scene: skipped by default, detected like the GeoTIFF with --drivers
    import rasterio

    from pipeline.reading import ReadConfig

    tif = write_scene(tmp_path / "in" / "a.tif", OBJECTS[4:], width=300, height=300, transform=NORTH_UP)
    jp2 = tmp_path / "in" / "b.jp2"
    with rasterio.open(tif) as src:
        profile = {**src.profile, "driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES"}
        for key in ("tiled", "blockxsize", "blockysize", "interleave", "compress"):
            profile.pop(key, None)
        with rasterio.open(jp2, "w", **profile) as dst:
            dst.write(src.read())
    source = str(tmp_path / "in")
    if where == "bucket":  # GDAL reads objects only of the extensions it is told: the drivers' too
        _bucket(s3_server, "orthos", {"in/a.tif": tif, "in/b.jp2": jp2})
        source = "s3://orthos/in/"
    default = run(source, tmp_path / "default")
    assert default["counts"]["done"] == 1 and default["counts"]["skipped"] == 1
    widened = run(source, tmp_path / "widened", read=ReadConfig(drivers=("GTiff", "JP2OpenJPEG")))
    assert widened["counts"]["done"] == 2, widened["scenes"]
    gdf = detections(tmp_path / "widened")
    by_scene = {Path(scene).suffix: part for scene, part in gdf.groupby("scene")}
    assert len(by_scene[".jp2"]) == len(by_scene[".tif"]) == len(OBJECTS[4:])
    jp2_boxes, tif_boxes = (by_scene[suffix].geometry.reset_index(drop=True) for suffix in (".jp2", ".tif"))
    assert jp2_boxes.equals(tif_boxes)
