"""Where a run's output lives: a local folder or ``s3://bucket/prefix``.

``open_store(location)`` returns an ``OutputStore`` with the few operations a
run needs: ``exists(name)``, ``write_bytes_once(name, data)`` (a scene's
GeoParquet), ``write_text(name, text)`` (``_run.json``, rewritten as the run
goes), ``read_bytes(name)`` and ``list_parquet()``.  Names are plain file
names (no ``/``) inside the location.

Write-once, atomically:

- local folder: the bytes go to ``.<name>.<32 hex>.tmp`` in the same folder,
  then a hard link makes ``name`` appear complete or not at all, and fails
  when ``name`` already exists (``os.link`` never replaces); ``replace=True``
  uses ``os.replace`` instead.  A file system without hard links falls back
  to "exists? then rename", which is atomic but not race-free.
- S3: ``PutObject`` with ``If-None-Match: *``: S3 (and the moto test server)
  stores the object only if the key does not exist yet (``412`` otherwise),
  and an object is visible only once its upload is complete.  No temporary
  key is written.  A put whose response was lost and that is retried gets
  ``412`` for its own object: each write-once put carries a random token in
  its user metadata (``x-amz-meta-aerialdet-write``; retries resend it), and
  an object holding our token counts as written by us.

S3 is any S3-compatible endpoint, configured as for sources
(``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).  Requests are retried with
exponential backoff and jitter on 5xx answers, throttling and dropped
connections: botocore's ``standard`` retry mode for writes and listings,
``AwsStandardS3RetryStrategy`` for pyarrow's reads.  ``AWS_RETRY_MODE``
(``standard`` or ``adaptive``) and ``AWS_MAX_ATTEMPTS`` (default 5) tune both,
as they tune AWS's own tools.  An operation that still fails raises
``OutputError`` naming the key and the last answer.  Each store counts the
retries it needed (``retries``): the run report records them.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline.errors import OutputError, PipelineError
from pipeline.s3_settings import S3Settings
from pipeline.sources import is_s3_uri, retry_settings, s3_client, s3_endpoint_url

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from pyarrow.fs import S3FileSystem

RESERVED_PREFIXES: tuple[str, ...] = (".", "_")
"""Names in an output that are not detections: temp files, ``_run.json``, ``_logs``."""

PARQUET_SUFFIX = ".parquet"
# user metadata key of the token that marks an object as written by one write-once put
WRITE_TOKEN = "aerialdet-write"


def is_detection_name(name: str) -> bool:
    """Whether ``name`` is a detection file: ``*.parquet`` not starting with a reserved prefix."""
    return name.endswith(PARQUET_SUFFIX) and not name.startswith(RESERVED_PREFIXES)


def _check_name(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"output name must be a plain file name, got {name!r}")
    return name


class OutputStore(ABC):
    """A local folder or an S3 prefix holding one run's output.

    Attributes:
        location: the folder or ``s3://bucket/prefix`` as given.
        retries: requests retried so far (S3 only; 0 for a local folder).
    """

    location: str
    retries: int = 0

    @abstractmethod
    def uri(self, name: str) -> str:
        """The full path or ``s3://`` URI of ``name``."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether ``name`` has been written (a temp file or key never counts)."""

    @abstractmethod
    def write_bytes_once(self, name: str, data: bytes, *, replace: bool = False) -> bool:
        """Write ``data`` as ``name`` atomically, unless ``name`` exists.

        Args:
            name: file name inside the store.
            data: the whole content.
            replace: replace an existing ``name`` (``--overwrite``), still atomically.

        Returns:
            True when written; False when ``name`` already existed (nothing written).

        Raises:
            OutputError: the write failed (after retries), naming the file or key.
        """

    @abstractmethod
    def write_text(self, name: str, text: str) -> None:
        """Write (or replace) ``name`` atomically; for run records such as ``_run.json``."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The content of ``name``.

        Raises:
            OutputError: ``name`` does not exist or cannot be read.
        """

    @abstractmethod
    def list_names(self, prefix: str = "") -> list[str]:
        """Names of the files directly in the store that start with ``prefix``, sorted."""

    def list_parquet(self) -> list[str]:
        """Names of the detection files directly in the store, sorted (``is_detection_name``)."""
        return [name for name in self.list_names() if is_detection_name(name)]

    @abstractmethod
    def check_writable(self) -> None:
        """Prove that a file can be written here (written, then removed).

        Raises:
            OutputError: naming the location and the reason.
        """

    @abstractmethod
    def arrow_filesystem(self) -> tuple[Any, str]:
        """``(pyarrow.fs.FileSystem, base path)`` for reading the store's files with pyarrow."""


class LocalStore(OutputStore):
    """An output folder on a local (or mounted) file system."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.location = str(root)
        self.root = Path(root)
        self.retries = 0

    def __repr__(self) -> str:
        return f"LocalStore({self.location!r})"

    def path(self, name: str) -> Path:
        """The local path of ``name``."""
        return self.root / _check_name(name)

    def uri(self, name: str) -> str:  # noqa: D102
        return str(self.path(name))

    def exists(self, name: str) -> bool:  # noqa: D102
        return self.path(name).is_file()

    def _temp(self, name: str, data: bytes) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:  # a failed write or fsync leaves no temporary file behind
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def write_bytes_once(self, name: str, data: bytes, *, replace: bool = False) -> bool:  # noqa: D102
        target = self.path(name)
        tmp: Path | None = None
        try:
            tmp = self._temp(name, data)
            if replace:
                os.replace(tmp, target)
                return True
            try:
                os.link(tmp, target)  # never replaces: fails when `target` exists
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if target.exists():  # no hard links here: atomic, but not race-free
                    return False
                os.replace(tmp, target)
            return True
        except OSError as exc:
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from exc
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()

    def write_text(self, name: str, text: str) -> None:  # noqa: D102
        self.write_bytes_once(name, text.encode(), replace=True)

    def read_bytes(self, name: str) -> bytes:  # noqa: D102
        try:
            return self.path(name).read_bytes()
        except OSError as exc:
            raise OutputError(f"{self.path(name)}: cannot read ({exc.strerror or exc})") from exc

    def list_names(self, prefix: str = "") -> list[str]:  # noqa: D102
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith(prefix) and p.is_file())

    def check_writable(self) -> None:  # noqa: D102
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write ({exc.strerror or type(exc).__name__})") from exc

    def arrow_filesystem(self) -> tuple[Any, str]:  # noqa: D102
        from pyarrow import fs

        return fs.LocalFileSystem(), str(self.root.resolve())


def _error_summary(exc: Exception) -> str:
    """One line for a botocore error: the HTTP status and code, or the connection problem."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        err = response.get("Error", {})
        return f"HTTP {status} {err.get('Code', '')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class S3Store(OutputStore):
    """An output prefix in an S3-compatible bucket (``s3://bucket/prefix``).

    Picklable: the boto3 client is made on first use in each process.
    """

    def __init__(self, location: str) -> None:
        parsed = urlparse("s3://" + location[5:])
        if not parsed.netloc:
            raise OutputError(f"{location!r}: no bucket name; expected s3://bucket/prefix")
        self.location = location
        self.bucket = parsed.netloc
        self.prefix = location[5:].partition("/")[2].strip("/")
        try:
            self.mode, self.max_attempts = retry_settings()
        except PipelineError as exc:
            raise OutputError(f"{location}: {exc}") from None
        self.retries = 0
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> BaseClient:
        """The boto3 S3 client, with retries configured (made once per process)."""
        if self._client is None:
            self._client = s3_client(self.mode, self.max_attempts)
        return self._client

    def key(self, name: str) -> str:
        """The object key of ``name``."""
        return f"{self.prefix}/{_check_name(name)}" if self.prefix else _check_name(name)

    def uri(self, name: str) -> str:  # noqa: D102
        return f"s3://{self.bucket}/{self.key(name)}"

    def _call(self, op: str, name: str, **kwargs: Any) -> Any:
        """``client.<op>(**kwargs)``; counts retries; a final failure becomes ``OutputError``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = getattr(self.client, op)(**kwargs)
        except ClientError as exc:
            self.retries += int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
            raise
        except BotoCoreError as exc:  # connection refused / dropped on every attempt
            self.retries += self.max_attempts - 1
            raise OutputError(self._failed(op, name, exc)) from exc
        self.retries += int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        return response

    def _failed(self, op: str, name: str, exc: Exception) -> str:
        return (
            f"{self.uri(name)}: {op} failed after {self.max_attempts} attempt(s) ({_error_summary(exc)}); "
            f"check the S3 endpoint ({s3_endpoint_url() or 'AWS default'}) and credentials"
        )

    def _status(self, exc: Any) -> int:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

    def exists(self, name: str) -> bool:  # noqa: D102
        from botocore.exceptions import ClientError

        try:
            self._call("head_object", name, Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if self._status(exc) == 404:
                return False
            raise OutputError(self._failed("head_object", name, exc)) from exc
        return True

    def write_bytes_once(self, name: str, data: bytes, *, replace: bool = False) -> bool:  # noqa: D102
        from botocore.exceptions import ClientError

        # a token of this call: botocore's retries resend it, so the object a lost answer left is ours
        token = uuid.uuid4().hex
        condition = {} if replace else {"IfNoneMatch": "*", "Metadata": {WRITE_TOKEN: token}}
        try:
            self._call("put_object", name, Bucket=self.bucket, Key=self.key(name), Body=data, **condition)
        except ClientError as exc:
            # 412: the key exists; 409 (ConditionalRequestConflict): another conditional put of the
            # same key is in flight and will win. Either way write-once holds and ours is not written,
            # unless the object there is ours: a put whose answer was lost, then retried.
            if not replace and self._status(exc) in (409, 412):
                return self._holds(name, token)
            raise OutputError(self._failed("put_object", name, exc)) from exc
        return True

    def _holds(self, name: str, token: str) -> bool:
        """Whether the object at ``name`` was written by the put that carried ``token``."""
        from botocore.exceptions import ClientError

        try:
            head = self._call("head_object", name, Bucket=self.bucket, Key=self.key(name))
        except ClientError:  # gone again, or not visible yet: not ours
            return False
        return bool(head.get("Metadata", {}).get(WRITE_TOKEN) == token)

    def write_text(self, name: str, text: str) -> None:  # noqa: D102
        self.write_bytes_once(name, text.encode(), replace=True)

    def read_bytes(self, name: str) -> bytes:  # noqa: D102
        from botocore.exceptions import ClientError

        try:
            response = self._call("get_object", name, Bucket=self.bucket, Key=self.key(name))
            return bytes(response["Body"].read())
        except ClientError as exc:
            raise OutputError(self._failed("get_object", name, exc)) from exc

    def list_names(self, prefix: str = "") -> list[str]:  # noqa: D102
        from botocore.exceptions import BotoCoreError, ClientError

        start = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start + prefix, Delimiter="/"
            )
            for page in pages:
                self.retries += int(page.get("ResponseMetadata", {}).get("RetryAttempts", 0))
                names += [obj["Key"][len(start) :] for obj in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise OutputError(
                f"{self.location}: cannot list ({_error_summary(exc)}); "
                "check the S3 endpoint, the bucket name and credentials"
            ) from exc
        return sorted(names)

    def check_writable(self) -> None:  # noqa: D102
        from botocore.exceptions import ClientError

        probe = f".write-check-{uuid.uuid4().hex}"
        self.write_bytes_once(probe, b"")
        try:
            self._call("delete_object", probe, Bucket=self.bucket, Key=self.key(probe))
        except ClientError as exc:
            raise OutputError(self._failed("delete_object", probe, exc)) from exc

    def arrow_filesystem(self) -> tuple[Any, str]:  # noqa: D102
        base = f"{self.bucket}/{self.prefix}".rstrip("/")
        return s3_arrow_filesystem(self.max_attempts), base


def s3_arrow_filesystem(max_attempts: int | None = None) -> S3FileSystem:
    """An ``S3FileSystem`` (pyarrow) for the configured endpoint, retrying with backoff.

    Args:
        max_attempts: attempts per request (default: ``AWS_MAX_ATTEMPTS``, else 5).
    """
    settings = S3Settings.from_env()
    if max_attempts:
        settings = replace(settings, max_attempts=max_attempts)
    return settings.arrow_filesystem()


def open_store(location: str | os.PathLike[str]) -> OutputStore:
    """The store of an output location.

    Args:
        location: a local folder, or ``s3://bucket/prefix`` (any case of ``s3://``).

    Example:
        >>> open_store("s3://bucket/run1").uri("a-1aad650f.parquet")
        's3://bucket/run1/a-1aad650f.parquet'
    """
    text = str(location)
    return S3Store("s3://" + text[5:]) if is_s3_uri(text) else LocalStore(text)
