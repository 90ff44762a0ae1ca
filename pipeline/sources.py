"""A source string -> the scene URIs it holds.

A source is a local file, a folder (searched recursively), a glob
(``data/**/*.tif``) or ``s3://bucket/prefix``.  S3 is any S3-compatible
endpoint, configured the way AWS tools are: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION`` (all read by ``pipeline.s3_settings``).  Files whose extension is not a raster extension, and S3 keys
that GDAL would read as another object, are returned as skipped, with the
reason, so the run report lists them.

Scene URIs are normalised here, once (``normalize_scene_uri``): a local path
becomes its resolved absolute path, so ``one.tif`` and ``$PWD/one.tif`` are
the same scene, with the same ``scene`` column and the same output file.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pipeline.errors import PipelineError, SourceError
from pipeline.s3_settings import DEFAULT_MAX_ATTEMPTS as DEFAULT_MAX_ATTEMPTS
from pipeline.s3_settings import S3Settings

if TYPE_CHECKING:
    from botocore.client import BaseClient

RASTER_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")
GLOB_CHARACTERS = "*?["
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class Listing:
    """What a source holds.

    Attributes:
        scenes: URIs of candidate rasters, normalised and sorted.
        skipped: ``(uri, reason)`` for files that are not rasters by extension
            and S3 keys that cannot be read safely.
    """

    scenes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def s3_endpoint_url() -> str | None:
    """The S3 endpoint from the environment, as AWS tools read it (``pipeline.s3_settings``)."""
    return S3Settings.from_env().endpoint_url


def retry_settings() -> tuple[str, int]:
    """``(mode, max_attempts)`` from ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` (default standard, 5).

    Raises:
        PipelineError: a value that is not a retry mode or not a positive integer.
    """
    settings = S3Settings.from_env()
    return settings.retry_mode, settings.max_attempts


def s3_client(mode: str = "standard", max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> BaseClient:
    """A boto3 S3 client for the configured endpoint (``pipeline.s3_settings``), retrying with backoff."""
    return replace(S3Settings.from_env(), retry_mode=mode, max_attempts=max_attempts).boto3_client()


def is_s3_uri(uri: str) -> bool:
    """Whether ``uri`` names an S3 object or prefix (``s3://``, any case)."""
    return uri[:5].lower() == "s3://"


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` holds a glob character (``*``, ``?`` or ``[``)."""
    return any(ch in pattern for ch in GLOB_CHARACTERS)


def expand_glob(pattern: str) -> list[str]:
    """The files (not folders) that a glob matches, sorted; ``**`` spans folders.

    Example:
        >>> expand_glob("out/*.parquet")  # doctest: +SKIP
        ['out/a-1f2e3d4c.parquet', 'out/b-5a6b7c8d.parquet']
    """
    return sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def normalize_scene_uri(uri: str) -> str:
    """The one spelling of a scene URI, used for the ``scene`` column and the output name.

    A local path is made absolute and resolved (``one.tif`` and ``$PWD/one.tif``
    are the same scene); an S3 URI gets a lower-case ``s3://`` scheme and
    keeps its key byte for byte (S3 keys are case-sensitive and ``a//b`` is a
    key of its own).  Other URLs and GDAL ``/vsi...`` paths are kept as given.

    Example:
        >>> normalize_scene_uri("S3://bucket/a/x.tif")
        's3://bucket/a/x.tif'
    """
    if is_s3_uri(uri):
        return "s3://" + uri[5:]
    if _URL_SCHEME.match(uri) or uri.startswith("/vsi"):
        return uri
    return str(Path(uri).resolve())  # no expanduser: the shell expands `~`, and `~x.tif` is a file name


def unsafe_s3_key_reason(uri: str) -> str | None:
    """Why an S3 object cannot be read safely, or None when it can.

    A key with a ``.`` or ``..`` segment (``p/a/../x.tif``) is read by GDAL as
    another object (``p/x.tif``) while the detections would carry the first
    key, so such keys are refused.

    Example:
        >>> unsafe_s3_key_reason("s3://b/p/x.tif") is None
        True
        >>> unsafe_s3_key_reason("s3://b/p/a/../x.tif") is None
        False
    """
    key = uri[5:].partition("/")[2]  # not urlparse: `?` and `#` are plain characters in a key
    for segment in (".", ".."):
        if segment in key.split("/"):
            return (
                f"key {key!r} has a {segment!r} segment: GDAL would read another object than the one "
                "listed; rename the object without '.' or '..' path segments"
            )
    return None


def classify(uri: str, extensions: tuple[str, ...]) -> str | None:
    """Why a listed (normalised) URI is not a scene to process, or None when it is one."""
    unsafe = unsafe_s3_key_reason(uri) if is_s3_uri(uri) else None
    if unsafe:
        return unsafe
    if uri.lower().endswith(extensions):
        return None
    return f"not a raster by extension (expected one of {', '.join(extensions)})"


def _iter_s3(source: str) -> Iterator[str]:
    """The object URIs under an S3 prefix, one listing page at a time (keys in S3's sorted order)."""
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(source)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise SourceError(f"{source!r}: no bucket name; expected s3://bucket/prefix")
    try:
        client = s3_client(*retry_settings())
    except PipelineError as exc:
        raise SourceError(f"cannot list {source!r}: {exc}") from None
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    yield f"s3://{bucket}/{obj['Key']}"
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot list {source!r}: {exc}. Check AWS_ENDPOINT_URL and credentials") from exc


def _walk(folder: Path) -> Iterator[str]:
    """Files under ``folder``, depth first, each folder's entries in name order; hidden ones left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def _iter_local(source: str) -> Iterator[str]:
    path = Path(source)
    if path.is_file():  # before the glob test: `what?.tif` is a file name, not a pattern
        yield str(path)
    elif path.is_dir():
        yield from _walk(path)
    elif is_glob(source):
        yield from expand_glob(source)
    else:
        raise SourceError(
            f"source {source!r} does not exist (expected a file, folder, glob or s3://bucket/prefix)"
        )


def iter_listing(
    source: str, *, extensions: tuple[str, ...] = RASTER_EXTENSIONS
) -> Iterator[tuple[str, str | None]]:
    """List a source lazily: ``(uri, None)`` for each candidate scene, ``(uri, reason)`` for a skipped file.

    S3 prefixes are read a page (1000 keys) at a time and folders walked as
    they go, so the first scene is known before the last key is listed and
    memory stays flat in the number of files.  URIs are normalised
    (``normalize_scene_uri``); the order is deterministic (S3's key order, or
    each folder's names sorted).

    Raises:
        SourceError: the source does not exist, cannot be listed, or holds no files at all
            (raised when the listing ends empty).
    """
    seen_any = False
    local_seen: set[str] = set()  # two links to one file are one scene; S3 keys are unique already
    for raw in _iter_s3(source) if is_s3_uri(source) else _iter_local(source):
        seen_any = True
        uri = normalize_scene_uri(raw)
        if not is_s3_uri(uri):
            if uri in local_seen:
                continue
            local_seen.add(uri)
        yield uri, classify(uri, extensions)
    if not seen_any:
        raise SourceError(f"source {source!r} holds no files")


def list_scenes(source: str, *, extensions: tuple[str, ...] = RASTER_EXTENSIONS) -> Listing:
    """List the scenes of a source.

    Args:
        source: local file, folder, glob, or ``s3://bucket/prefix``.
        extensions: lower-case extensions that count as rasters.

    Returns:
        The candidate scene URIs (normalised, see ``normalize_scene_uri``) and
        the skipped files, each with its reason.

    Raises:
        SourceError: if the source does not exist or holds no files at all.

    Example:
        >>> list_scenes("scenes/").scenes  # doctest: +SKIP
        ('/home/me/scenes/a.tif', '/home/me/scenes/b.tif')
    """
    scenes: set[str] = set()
    skipped: dict[str, str] = {}
    for uri, reason in iter_listing(source, extensions=extensions):
        if reason is None:
            scenes.add(uri)
        else:
            skipped[uri] = reason
    return Listing(tuple(sorted(scenes)), tuple(sorted(skipped.items())))
