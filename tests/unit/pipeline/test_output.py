from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.output import MAX_NAME_BYTES, RESERVED_PREFIXES, scene_output_path
from pipeline.query import read_detections
from tests.unit.pipeline.test_query import write_detections


def test_hand_computed_name():
    # sha1("s3://b/a.tif")[:8]; unchanged for names that need no change, so re-runs find old outputs
    assert scene_output_path("out", "s3://b/a.tif") == Path("out/a-1aad650f.parquet")


@pytest.mark.parametrize("name", ["_under.tif", ".hidden.tif", "__.tif", "._x.tif"])
def test_names_never_start_with_a_reserved_prefix(tmp_path, name):
    path = write_detections(tmp_path, f"/data/{name}")
    assert not path.name.startswith(RESERVED_PREFIXES)
    # before: `_under-e8051981.parquet` was written, then skipped by query/evaluate/quicklook
    assert set(read_detections(tmp_path)["scene"]) == {f"/data/{name}"}


def test_relative_and_absolute_paths_share_one_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert scene_output_path(out, "one.tif") == scene_output_path(out, str(tmp_path / "one.tif"))
    assert scene_output_path(out, "d/../one.tif") == scene_output_path(out, "./one.tif")
    assert scene_output_path(out, "S3://b/one.tif") == scene_output_path(out, "s3://b/one.tif")
    assert scene_output_path(out, "s3://b/one.tif") != scene_output_path(out, "s3://c/one.tif")


@pytest.mark.parametrize("stem", ["x" * 250, "é" * 250, "車" * 120])
def test_long_stems_are_shortened_and_keep_the_hash(tmp_path, stem):
    uri = f"/data/{stem}.tif"
    path = scene_output_path(tmp_path, uri)
    # the temp name write_geoparquet writes first, `.<name>.<32 hex>.tmp`, must fit in 255 bytes too
    assert len(path.name.encode()) + len("..") + 32 + len(".tmp") <= 255
    assert path.name.startswith(stem[:10]) and path.name.endswith(".parquet")
    other = scene_output_path(tmp_path, f"/other/{stem}.tif")
    assert other != path  # the hash of the whole URI still tells them apart
    # before: a 250-character stem failed at write ("File name too long")
    assert write_detections(tmp_path, uri) == path and path.exists()


def test_characters_that_shells_and_globs_read_are_replaced(tmp_path):
    path = write_detections(tmp_path, "/data/a[1] what?*;'\".tif")
    assert path.name.startswith("a_1__what")
    assert len(read_detections(tmp_path)) == 3


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300).filter(lambda s: "\x00" not in s))
def test_any_scene_name_gives_a_safe_name_inside_out(name):
    path = scene_output_path("/out", "s3://bucket/dir/" + name)
    assert path.parent == Path("/out")
    assert not path.name.startswith(RESERVED_PREFIXES)
    assert 0 < len(path.name.encode()) <= MAX_NAME_BYTES
    assert not any(ch in path.name for ch in "*?[/\\") and path.name.endswith(".parquet")
