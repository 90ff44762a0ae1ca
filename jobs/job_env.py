"""The environment a job on a remote Ray cluster is given: named, non-secret settings only.

Ray writes a job's runtime env into its job table and into logs on the
cluster, so only the variables named in ``FORWARDED_ENV`` travel: the
object-store endpoint and region, retry settings, and GDAL/CPL/VSI
performance options.  Nothing else does, whatever its name looks like:
not credentials, cookies, headers or proxies, and not file paths such as a
CA bundle (``GDAL_CURL_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``AWS_CA_BUNDLE``,
``SSL_CERT_FILE``): a path on this machine's disk means nothing on a node,
so the nodes configure their own.  A forwarded URL loses its userinfo
(``user:password@``), with one warning line naming the variable.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import urlsplit

# Object-store access without a secret: read by pipeline/sources.py and pipeline/storage.py (boto3,
# pyarrow), and by GDAL's /vsis3/ (https://gdal.org/en/stable/user/virtual_file_systems.html#vsis3).
FORWARDED_AWS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
    "AWS_S3_ADDRESSING_STYLE",
    "AWS_S3_ENDPOINT",  # GDAL: host[:port], no scheme
    "AWS_HTTPS",
    "AWS_VIRTUAL_HOSTING",
    "AWS_NO_SIGN_REQUEST",  # GDAL: public buckets
    "AWS_REQUEST_PAYER",
)

# GDAL/CPL/VSI performance options (those pipeline/reading.py sets, and GDAL's
# documented network and cache settings): never a credential, a header or a path.
FORWARDED_GDAL = (
    "GDAL_DISABLE_READDIR_ON_OPEN",
    "GDAL_HTTP_MAX_RETRY",
    "GDAL_HTTP_RETRY_DELAY",
    "GDAL_HTTP_RETRY_CODES",
    "GDAL_HTTP_TIMEOUT",
    "GDAL_HTTP_CONNECTTIMEOUT",
    "GDAL_HTTP_LOW_SPEED_TIME",
    "GDAL_HTTP_LOW_SPEED_LIMIT",
    "GDAL_HTTP_MULTIPLEX",
    "GDAL_HTTP_VERSION",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES",
    "GDAL_HTTP_MULTIRANGE",
    "GDAL_INGESTED_BYTES_AT_OPEN",
    "GDAL_CACHEMAX",
    "GDAL_NUM_THREADS",
    "GDAL_MAX_DATASET_POOL_SIZE",
    "VSI_CACHE",
    "VSI_CACHE_SIZE",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS",
    "CPL_VSIL_CURL_CACHE_SIZE",
    "CPL_VSIL_CURL_CHUNK_SIZE",
    "CPL_VSIL_CURL_USE_HEAD",
    "CPL_VSIL_CURL_NON_CACHED",
)

# The AERIALDET_* variables that code running on the workers reads (retinanet/ray_train.py's
# fault-injection hooks for the recovery tests); no wildcard.
FORWARDED_AERIALDET = ("AERIALDET_TEST_FAIL_AT_STEP", "AERIALDET_TEST_FAIL_RANK")

FORWARDED_ENV = frozenset(FORWARDED_AWS + FORWARDED_GDAL + FORWARDED_AERIALDET)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def strip_userinfo(value: str) -> tuple[str, bool]:
    """``value`` without the ``user:password@`` of its URL, and whether it had one.

    A value without a scheme is read as ``host[:port]...`` (GDAL's
    ``AWS_S3_ENDPOINT``), so ``u:p@minio:9000`` loses its userinfo too.

    Returns:
        (value without userinfo, True if a userinfo was removed).

    Example:
        >>> strip_userinfo("http://u:p@minio:9000/x")
        ('http://minio:9000/x', True)
        >>> strip_userinfo("u:p@minio:9000")
        ('minio:9000', True)
    """
    has_scheme = bool(_SCHEME.match(value))
    parts = urlsplit(value if has_scheme else "//" + value)
    if "@" not in parts.netloc:
        return value, False
    stripped = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return (stripped if has_scheme else stripped.removeprefix("//")), True


def forwarded_env() -> dict[str, str]:
    """The named, non-secret settings of this shell that a remote cluster's workers are given.

    Only the names in ``FORWARDED_ENV`` (endpoint, region, retries, GDAL
    options) travel; a URL among them loses its ``user:password@``, and a
    warning line on stderr names each variable that had one (never its value).

    Returns:
        Variable name -> value.
    """
    env: dict[str, str] = {}
    for name in sorted(FORWARDED_ENV & os.environ.keys()):
        value, had_userinfo = strip_userinfo(os.environ[name])
        if had_userinfo:
            print(
                f"warning: {name} holds a user name or password; the job gets it without them "
                "(the cluster's nodes hold their own credentials)",
                file=sys.stderr,
            )
        env[name] = value
    return env
