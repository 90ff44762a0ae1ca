"""One reading of the S3 environment, for boto3, pyarrow and GDAL alike.

The pipeline talks to S3 through three clients: boto3 (listings, output
writes), pyarrow's ``S3FileSystem`` (GeoParquet reads) and GDAL's ``/vsis3/``
(raster reads).  Each wants the same facts in its own spelling; this module
reads them once from the variables the AWS tools use and derives each form:

=========================  =====================================================
variable                   meaning (default)
=========================  =====================================================
``AWS_ENDPOINT_URL_S3``,   the endpoint, ``http(s)://host[:port]`` (AWS's own);
``AWS_ENDPOINT_URL``       the S3-specific one wins, as in the AWS CLI
``AWS_REGION``,            the region (AWS_REGION wins; pyarrow falls back to
``AWS_DEFAULT_REGION``     ``us-east-1``, boto3 and GDAL to their own default)
``AWS_S3_ADDRESSING_STYLE````auto``, ``path`` or ``virtual`` (each client's
                           default: path-style for a custom endpoint)
``AWS_RETRY_MODE``         ``standard`` or ``adaptive`` (``standard``)
``AWS_MAX_ATTEMPTS``       attempts per request, the first try included (5)
=========================  =====================================================

GDAL's options come from the same endpoint: ``AWS_S3_ENDPOINT`` is its
``host[:port]``, ``AWS_HTTPS`` its scheme, ``AWS_VIRTUAL_HOSTING`` the
addressing style, ``GDAL_HTTP_MAX_RETRY`` the attempts less the first.

Example:
    >>> s = S3Settings.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    >>> s.gdal_options()["AWS_S3_ENDPOINT"], s.gdal_options()["AWS_HTTPS"]
    ('127.0.0.1:9000', 'NO')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config
    from pyarrow.fs import S3FileSystem

DEFAULT_MAX_ATTEMPTS = 5  # botocore's "standard" retries, unless AWS_MAX_ATTEMPTS says otherwise
DEFAULT_ARROW_REGION = "us-east-1"  # pyarrow asks the EC2 metadata service without one
RETRY_MODES = ("standard", "adaptive")
ADDRESSING_STYLES = ("auto", "path", "virtual")
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The S3 settings of this process (``from_env``), and each client's form of them.

    Attributes:
        endpoint_url: ``http(s)://host[:port]``, or None for AWS itself.
        region: the region, or None for each client's default.
        addressing_style: ``auto``, ``path`` or ``virtual``; None leaves each
            client's default (path-style for a custom endpoint).
        retry_mode: botocore's retry mode, ``standard`` or ``adaptive``.
        max_attempts: attempts per request, the first try included (>= 1).
        connect_timeout_s: seconds to open a connection.
        read_timeout_s: seconds to wait for an answer.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    read_timeout_s: float = READ_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.retry_mode not in RETRY_MODES:
            raise PipelineError(f"AWS_RETRY_MODE={self.retry_mode!r}: expected 'standard' or 'adaptive'")
        if self.addressing_style is not None and self.addressing_style not in ADDRESSING_STYLES:
            raise PipelineError(
                f"AWS_S3_ADDRESSING_STYLE={self.addressing_style!r}: expected 'auto', 'path' or 'virtual'"
            )
        if self.max_attempts < 1:
            raise PipelineError(f"AWS_MAX_ATTEMPTS={self.max_attempts!r}: expected a whole number >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The settings the AWS variables of ``environ`` (default ``os.environ``) give.

        Raises:
            PipelineError: naming the variable whose value is not one it takes.
        """
        env = os.environ if environ is None else environ
        raw = env.get("AWS_MAX_ATTEMPTS", str(DEFAULT_MAX_ATTEMPTS))
        try:
            attempts = int(raw)
        except ValueError:
            attempts = 0
        if attempts < 1:
            raise PipelineError(f"AWS_MAX_ATTEMPTS={raw!r}: expected a whole number >= 1")
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            addressing_style=env.get("AWS_S3_ADDRESSING_STYLE") or None,
            retry_mode=env.get("AWS_RETRY_MODE", "standard"),
            max_attempts=attempts,
        )

    @property
    def endpoint_host(self) -> str | None:
        """The endpoint's ``host[:port]`` (GDAL's ``AWS_S3_ENDPOINT``, pyarrow's ``endpoint_override``)."""
        if not self.endpoint_url:
            return None
        parsed = urlparse(self.endpoint_url)
        return parsed.netloc or parsed.path

    @property
    def endpoint_scheme(self) -> str:
        """``http`` or ``https``: the endpoint's scheme, ``https`` when it names none."""
        return (urlparse(self.endpoint_url).scheme if self.endpoint_url else "") or "https"

    def botocore_config(self) -> Config:
        """A botocore ``Config``: retries, timeouts and the addressing style."""
        from botocore.config import Config

        # total_max_attempts counts the first try (botocore's "max_attempts" key counts only retries)
        retries: Any = {"mode": self.retry_mode, "total_max_attempts": self.max_attempts}
        s3 = {"addressing_style": self.addressing_style} if self.addressing_style else None
        return Config(
            retries=retries, connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s, s3=s3
        )

    def boto3_client(self) -> BaseClient:
        """A boto3 S3 client for these settings (credentials as boto3 finds them)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=self.botocore_config()
        )

    def arrow_options(self) -> dict[str, Any]:
        """Keyword arguments of ``pyarrow.fs.S3FileSystem`` for these settings."""
        from pyarrow import fs

        options: dict[str, Any] = {
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            "region": self.region or DEFAULT_ARROW_REGION,
            "connect_timeout": self.connect_timeout_s,
            "request_timeout": self.read_timeout_s,
        }
        if self.endpoint_url:
            options["endpoint_override"] = self.endpoint_host
            options["scheme"] = self.endpoint_scheme
        if self.addressing_style == "virtual":
            options["force_virtual_addressing"] = True
        return options

    def arrow_filesystem(self) -> S3FileSystem:
        """A pyarrow ``S3FileSystem`` for these settings."""
        from pyarrow import fs

        return fs.S3FileSystem(**self.arrow_options())

    def gdal_options(self) -> dict[str, str]:
        """GDAL's config options for ``/vsis3/`` reads with these settings.

        ``GDAL_HTTP_MAX_RETRY`` is always set (GDAL does not retry by
        default); the endpoint options only with a custom endpoint, the
        region only when one is set.
        """
        options = {"GDAL_HTTP_MAX_RETRY": str(self.max_attempts - 1), "GDAL_HTTP_RETRY_DELAY": "1"}
        if self.endpoint_url:
            options["AWS_S3_ENDPOINT"] = self.endpoint_host or ""
            options["AWS_HTTPS"] = "YES" if self.endpoint_scheme == "https" else "NO"
        if self.endpoint_url or self.addressing_style in ("path", "virtual"):
            # a custom endpoint is path-style unless virtual hosting is asked for
            options["AWS_VIRTUAL_HOSTING"] = "TRUE" if self.addressing_style == "virtual" else "FALSE"
        if self.region:
            options["AWS_DEFAULT_REGION"] = self.region
        return options
