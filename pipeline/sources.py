"""A source string -> the scene URIs it holds.

A source is a local file, a folder (searched recursively), a glob
(``data/**/*.tif``) or ``s3://bucket/prefix``.  S3 is any S3-compatible
endpoint, configured the way AWS tools are: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``.  Files whose extension is not a raster extension are
returned as skipped, with the reason, so the run report lists them.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import SourceError

RASTER_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class Listing:
    """What a source holds.

    Attributes:
        scenes: URIs of candidate rasters, sorted.
        skipped: ``(uri, reason)`` for files that are not rasters by extension.
    """

    scenes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def s3_endpoint_url() -> str | None:
    """The S3 endpoint from the environment, as AWS tools read it."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _split(uris: list[str], extensions: tuple[str, ...]) -> Listing:
    scenes, skipped = [], []
    for uri in sorted(set(uris)):
        if uri.lower().endswith(extensions):
            scenes.append(uri)
        else:
            skipped.append((uri, f"not a raster by extension (expected one of {', '.join(extensions)})"))
    return Listing(tuple(scenes), tuple(skipped))


def _list_s3(source: str) -> list[str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(source)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise SourceError(f"{source!r}: no bucket name; expected s3://bucket/prefix")
    client = boto3.client("s3", endpoint_url=s3_endpoint_url())
    uris = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    uris.append(f"s3://{bucket}/{obj['Key']}")
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot list {source!r}: {exc}. Check AWS_ENDPOINT_URL and credentials") from exc
    return uris


def list_scenes(source: str, *, extensions: tuple[str, ...] = RASTER_EXTENSIONS) -> Listing:
    """List the scenes of a source.

    Args:
        source: local file, folder, glob, or ``s3://bucket/prefix``.
        extensions: lower-case extensions that count as rasters.

    Returns:
        The candidate scene URIs and the skipped non-raster files.

    Raises:
        SourceError: if the source does not exist or holds no files at all.

    Example:
        >>> list_scenes("scenes/").scenes  # doctest: +SKIP
        ('scenes/a.tif', 'scenes/b.tif')
    """
    if source.startswith("s3://"):
        uris = _list_s3(source)
    elif any(ch in source for ch in "*?["):
        uris = [p for p in glob.glob(source, recursive=True) if Path(p).is_file()]
    else:
        path = Path(source)
        if path.is_file():
            uris = [str(path)]
        elif path.is_dir():
            uris = [str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        else:
            raise SourceError(
                f"source {source!r} does not exist (expected a file, folder, glob or s3://bucket/prefix)"
            )
    if not uris:
        raise SourceError(f"source {source!r} holds no files")
    return _split(uris, extensions)
