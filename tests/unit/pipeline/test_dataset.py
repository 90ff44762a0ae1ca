"""``OUT/_dataset.json``: a resumed run keeps the output's read GSD (issue 21), in-process runs."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from rasterio.transform import Affine

from pipeline.dataset import DATASET_FILE, GSD_KEY
from pipeline.errors import OutputError, PipelineError
from pipeline.job import DetectJob
from pipeline.output import scene_output_name
from pipeline.resolution import ResolutionConfig
from pipeline.run import DetectRun
from pipeline.standin import StandinLoader
from pipeline.tiling import TilingConfig
from tests.conftest import write_scene
from tests.unit.pipeline.inline_executor import InlineExecutor

FINE = Affine(0.15, 0, 500000, 0, -0.15, 4000000)  # 0.15 m pixels
OBJECTS = [(40, 20, 80, 60, 1)]
AT_03 = ResolutionConfig(0.3, source="--gsd-m")
AT_06 = ResolutionConfig(0.6, source="--gsd-m")
NATIVE = ResolutionConfig()


def _scene(src: Path, name: str) -> None:
    write_scene(src / name, OBJECTS, width=200, height=120, transform=FINE)


def _job(src: Path, out: Path, resolution: ResolutionConfig, **kw: object) -> DetectJob:
    return DetectJob(
        source=str(src),
        out_dir=str(out),
        model=StandinLoader(),
        tiling=TilingConfig(tile_size_px=64, overlap_px=16),
        resolution=resolution,
        progress=False,
        **kw,
    )


def _run(job: DetectJob) -> tuple[dict[str, int], list[str]]:
    messages: list[str] = []
    record = DetectRun(job, InlineExecutor(job), log=messages.append).run()
    return record.counts(), messages


def _recorded(out: Path) -> dict[str, object]:
    return json.loads((out / DATASET_FILE).read_text())


def test_the_first_run_records_its_gsd_and_a_resume_at_the_same_one_goes_on(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    assert _run(_job(src, out, AT_03))[0]["done"] == 1
    assert _recorded(out)[GSD_KEY] == 0.3 and _recorded(out)["gsd_source"] == "--gsd-m"
    _scene(src, "b.tif")
    counts, _ = _run(_job(src, out, ResolutionConfig(0.3, source="checkpoint")))  # same GSD, other origin
    assert counts["done"] == 1 and counts["exists"] == 1
    native_out = tmp_path / "native"
    _run(_job(src, native_out, NATIVE))
    assert GSD_KEY in _recorded(native_out) and _recorded(native_out)[GSD_KEY] is None  # native: null


@pytest.mark.parametrize(
    ("first", "second", "named", "resume"),
    [
        (AT_03, AT_06, ["0.6 m per pixel (--gsd-m 0.6)", "read at 0.3 m per pixel"], "--gsd-m 0.3"),
        (
            AT_03,
            ResolutionConfig(0.6, source="checkpoint"),
            ["the checkpoint's gsd_m 0.6", "read at 0.3 m"],
            "--gsd-m 0.3",
        ),
        (
            NATIVE,
            AT_03,
            ["0.3 m per pixel (--gsd-m 0.3)", "read at native resolution"],
            "--native-resolution",
        ),
        (AT_03, NATIVE, ["native resolution (--native-resolution", "read at 0.3 m"], "--gsd-m 0.3"),
    ],
)
def test_a_resume_at_another_gsd_is_refused_before_any_claim(tmp_path, first, second, named, resume):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    assert _run(_job(src, out, first))[0]["done"] == 1
    _scene(src, "b.tif")  # a new scene: today it would be read at the second GSD, a.tif stays at the first
    with pytest.raises(PipelineError) as err:
        _run(_job(src, out, second))
    message = str(err.value)
    assert "\n" not in message and all(part in message for part in named), message
    assert f"pass {resume} to resume it" in message and "new --out" in message and "--overwrite" in message
    assert not (out / scene_output_name(str(src / "b.tif"))).exists()
    assert not [p for p in out.iterdir() if ".claim" in p.name]


def test_overwrite_detects_again_at_the_new_gsd_and_records_it(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    _run(_job(src, out, AT_03))
    counts, messages = _run(_job(src, out, AT_06, overwrite=True))
    assert counts["done"] == 1
    assert _recorded(out)[GSD_KEY] == 0.6 and _recorded(out)["crs"] == "EPSG:32633"
    assert [m for m in messages if "read GSD changes from 0.3 m per pixel to 0.6 m per pixel" in m]
    assert _run(_job(src, out, AT_06))[0]["exists"] == 1  # the new record holds for the next resume


def test_a_dataset_file_without_the_gsd_keeps_working(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    _run(_job(src, out, AT_03))
    entry = _recorded(out)
    del entry[GSD_KEY], entry["gsd_source"]  # as written before the GSD was recorded
    (out / DATASET_FILE).write_text(json.dumps(entry))
    _scene(src, "b.tif")
    counts, _ = _run(_job(src, out, AT_06))
    assert counts["done"] == 1 and counts["exists"] == 1
    assert GSD_KEY not in _recorded(out)


def test_a_run_that_lost_the_race_to_record_the_gsd_aborts_without_output(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    _scene(tmp_path / "other", "o.tif")
    job = _job(src, out, AT_06)
    messages: list[str] = []
    late = DetectRun(job, InlineExecutor(job), log=messages.append)  # checked: nothing recorded yet
    assert _run(_job(tmp_path / "other", out, AT_03))[0]["done"] == 1  # another run records 0.3 m first
    counts = late.run().counts()
    assert counts["failed"] == 1 and counts["done"] == 0
    assert [
        m for m in messages if "run aborted: this run reads scenes at 0.6 m" in m and "read at 0.3 m" in m
    ]
    assert not (out / scene_output_name(str(src / "a.tif"))).exists()
    assert len(gpd.read_parquet(out)) == 1  # the other run's scene only


def test_an_unreadable_gsd_record_is_one_line(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    _scene(src, "a.tif")
    _run(_job(src, out, AT_03))
    entry = _recorded(out)
    (out / DATASET_FILE).write_text(json.dumps({**entry, GSD_KEY: "0.3"}))
    with pytest.raises(OutputError, match="_dataset.json cannot be read .*model_gsd_m '0.3'"):
        _run(_job(src, out, AT_03))
