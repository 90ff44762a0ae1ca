"""``pipeline.s3_settings``: one reading of the AWS variables, derived for boto3, pyarrow and GDAL."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.gdal_config import ReadConfig, gdal_options
from pipeline.s3_settings import S3Settings
from pipeline.sources import s3_client
from pipeline.storage import s3_arrow_filesystem

AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_S3_ADDRESSING_STYLE",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
)


@pytest.fixture
def env(monkeypatch):
    """A clean AWS environment; returns a setter."""
    for key in AWS_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    return lambda **values: [monkeypatch.setenv(k, v) for k, v in values.items()]


def test_defaults_with_no_variables():
    s = S3Settings.from_env({})
    assert (s.endpoint_url, s.region, s.addressing_style, s.retry_mode, s.max_attempts) == (
        None,
        None,
        None,
        "standard",
        5,
    )
    assert s.gdal_options() == {"GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "1"}
    assert s.arrow_options()["region"] == "us-east-1" and "endpoint_override" not in s.arrow_options()


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({"AWS_ENDPOINT_URL": "http://a:9000"}, "http://a:9000"),
        (
            {"AWS_ENDPOINT_URL": "http://a:9000", "AWS_ENDPOINT_URL_S3": "https://b"},
            "https://b",
        ),  # S3's own wins
        ({"AWS_ENDPOINT_URL": ""}, None),
    ],
)
def test_endpoint_precedence(environ, endpoint):
    assert S3Settings.from_env(environ).endpoint_url == endpoint


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}, "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "x"}, "x"),
    ],
)
def test_region_precedence(environ, region):
    s = S3Settings.from_env(environ)
    assert s.region == region
    assert s.gdal_options()["AWS_DEFAULT_REGION"] == region
    assert s.arrow_options()["region"] == region


@pytest.mark.parametrize(
    ("endpoint", "host", "https"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000", "NO"),
        ("https://minio.internal:9443/", "minio.internal:9443", "YES"),
        ("http://[::1]:9000", "[::1]:9000", "NO"),
    ],
)
def test_gdal_and_arrow_endpoints_derive_from_the_url(endpoint, host, https):
    s = S3Settings.from_env({"AWS_ENDPOINT_URL": endpoint})
    gdal = s.gdal_options()
    assert (gdal["AWS_S3_ENDPOINT"], gdal["AWS_HTTPS"], gdal["AWS_VIRTUAL_HOSTING"]) == (host, https, "FALSE")
    arrow = s.arrow_options()
    assert (arrow["endpoint_override"], arrow["scheme"]) == (host, "https" if https == "YES" else "http")


@pytest.mark.parametrize(
    ("style", "gdal", "arrow_virtual"),
    [("virtual", "TRUE", True), ("path", "FALSE", False), ("auto", "FALSE", False)],
)
def test_addressing_style_reaches_every_client(style, gdal, arrow_virtual):
    s = S3Settings.from_env({"AWS_ENDPOINT_URL": "http://a:9000", "AWS_S3_ADDRESSING_STYLE": style})
    assert s.gdal_options()["AWS_VIRTUAL_HOSTING"] == gdal
    assert s.arrow_options().get("force_virtual_addressing", False) is arrow_virtual
    assert s.botocore_config().s3 == {"addressing_style": style}


def test_retries_and_timeouts_reach_every_client():
    s = S3Settings.from_env({"AWS_RETRY_MODE": "adaptive", "AWS_MAX_ATTEMPTS": "3"})
    config = s.botocore_config()
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (10, 60)
    assert s.gdal_options()["GDAL_HTTP_MAX_RETRY"] == "2"  # GDAL counts retries, not attempts
    arrow = s.arrow_options()
    assert (arrow["connect_timeout"], arrow["request_timeout"]) == (10, 60)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AWS_RETRY_MODE", "legacyish"),
        ("AWS_MAX_ATTEMPTS", "0"),
        ("AWS_MAX_ATTEMPTS", "x"),
        ("AWS_S3_ADDRESSING_STYLE", "dns"),
    ],
)
def test_a_bad_value_is_named(key, value):
    with pytest.raises(PipelineError, match=f"{key}={value!r}"):
        S3Settings.from_env({key: value})


def test_the_three_clients_read_the_same_environment(env):
    env(
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_REGION="eu-central-1",
        AWS_S3_ADDRESSING_STYLE="virtual",
        AWS_MAX_ATTEMPTS="2",
    )
    client = s3_client("standard", 2)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.config.s3 == {"addressing_style": "virtual"}
    gdal = gdal_options(ReadConfig())
    assert (gdal["AWS_S3_ENDPOINT"], gdal["AWS_VIRTUAL_HOSTING"], gdal["AWS_DEFAULT_REGION"]) == (
        "127.0.0.1:9",
        "TRUE",
        "eu-central-1",
    )
    assert gdal["GDAL_HTTP_MAX_RETRY"] == "1"
    assert s3_arrow_filesystem().region == "eu-central-1"
