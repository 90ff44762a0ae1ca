import pytest

from pipeline.errors import SourceError
from pipeline.query import dataset_files
from pipeline.sources import (
    expand_glob,
    is_glob,
    list_scenes,
    normalize_scene_uri,
    unsafe_s3_key_reason,
)


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    """s3://scenes/p/ on the moto server of tests/conftest.py, some of its keys unsafe."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="scenes")
    for key in ("p/x.tif", "p/a/../x.tif", "p/./y.tif", "p/b/..", "p/notes.txt"):
        client.put_object(Bucket="scenes", Key=key, Body=b"not read")
    return "s3://scenes/p/"


def test_s3_keys_with_dot_segments_are_skipped_with_a_reason(s3_bucket):
    listing = list_scenes(s3_bucket)
    # before: s3://scenes/p/a/../x.tif was a scene, which GDAL reads as p/x.tif
    assert listing.scenes == ("s3://scenes/p/x.tif",)
    reasons = dict(listing.skipped)
    assert "'..' segment" in reasons["s3://scenes/p/a/../x.tif"]
    assert "'.' segment" in reasons["s3://scenes/p/./y.tif"]
    assert "'..' segment" in reasons["s3://scenes/p/b/.."]
    assert "not a raster" in reasons["s3://scenes/p/notes.txt"]


@pytest.mark.parametrize(
    ("uri", "unsafe"),
    [
        ("s3://b/p/x.tif", False),
        ("s3://b/p/..x.tif", False),  # a name that starts with dots is not a segment
        ("s3://b/p/x..tif", False),
        ("s3://b/p/what?.tif", False),
        ("s3://b/p/a/../x.tif", True),
        ("s3://b/../x.tif", True),
        ("s3://b/p/./x.tif", True),
        ("s3://b/./x.tif", True),
        ("s3://b/p/a/..?x=/x.tif", False),
        ("s3://b/p/a/..#/x.tif", False),
    ],
)
def test_unsafe_s3_key_reason(uri, unsafe):
    assert (unsafe_s3_key_reason(uri) is not None) == unsafe


def test_relative_and_absolute_paths_list_as_the_same_scene(tmp_path, monkeypatch, make_scene):
    make_scene("one.tif")
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "one.tif")
    # before: "one.tif" as typed, so `detect one.tif` and `detect $PWD/one.tif` made two outputs
    assert list_scenes("one.tif").scenes == (absolute,)
    assert list_scenes(absolute).scenes == (absolute,)
    assert list_scenes(".").scenes == (absolute,)
    assert list_scenes("*.tif").scenes == (absolute,)


def test_normalize_scene_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    assert normalize_scene_uri("d/../one.tif") == str(tmp_path / "one.tif")
    assert normalize_scene_uri("S3://bucket/A//b.tif") == "s3://bucket/A//b.tif"  # keys kept byte for byte
    assert normalize_scene_uri("/vsicurl/https://host/a//b.tif") == "/vsicurl/https://host/a//b.tif"
    assert normalize_scene_uri("https://host/a.tif") == "https://host/a.tif"


def test_an_existing_file_is_not_read_as_a_glob(tmp_path, make_scene):
    make_scene("what?.tif")
    make_scene("whatX.tif")
    # before: `what?.tif` was globbed and also listed whatX.tif
    assert list_scenes(str(tmp_path / "what?.tif")).scenes == (str(tmp_path / "what?.tif"),)
    assert len(list_scenes(str(tmp_path / "what?.tif").replace("what?", "wha*")).scenes) == 2


def test_expand_glob_lists_files_only_sorted_and_recursive(tmp_path):
    for name in ("b/2.parquet", "a/1.parquet", "c.parquet", "d.parquet/x"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert is_glob("a*") and is_glob("a?") and is_glob("a[b]") and not is_glob("a.parquet")
    assert expand_glob(str(tmp_path / "**" / "*.parquet")) == [
        str(tmp_path / p) for p in ("a/1.parquet", "b/2.parquet", "c.parquet")
    ]  # the folder d.parquet is not a file
    # the same helper serves `query`: a glob of an output gives its files
    assert dataset_files(str(tmp_path / "*" / "*.parquet")) == [
        str(tmp_path / p) for p in ("a/1.parquet", "b/2.parquet")
    ]


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_scenes(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="holds no files"):
        list_scenes(str(tmp_path / "*.tif"))
    (tmp_path / ".hidden.tif").write_bytes(b"")
    with pytest.raises(SourceError, match="holds no files"):
        list_scenes(str(tmp_path))


@pytest.mark.parametrize(("key", "value"), [("AWS_RETRY_MODE", "legacyish"), ("AWS_MAX_ATTEMPTS", "0")])
def test_a_bad_retry_setting_for_a_bucket_source_is_named(monkeypatch, key, value):
    # the source listing takes the same retry settings as the output store, checked the same way
    monkeypatch.setenv(key, value)
    with pytest.raises(SourceError, match=key):
        list_scenes("s3://bucket/scenes/")


def test_iter_listing_yields_a_file_reached_by_two_links_once(tmp_path):
    from pipeline.sources import iter_listing

    real = tmp_path / "data" / "a.tif"
    real.parent.mkdir()
    real.write_bytes(b"x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "one.tif").symlink_to(real)
    (tmp_path / "src" / "two.tif").symlink_to(real)
    assert list(iter_listing(str(tmp_path / "src"))) == [(str(real.resolve()), None)]
