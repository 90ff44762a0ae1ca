"""A real STAC API on 127.0.0.1 for the tests: stac-fastapi-pgstac over pgstac on Debian's PostgreSQL 15.

``pgstac_database()`` runs ``initdb`` and ``postgres`` as an unprivileged user
(``aerialdet-pg``, created when the tests run as root; PostgreSQL refuses to
run as root) in a temporary folder, on a free port, listening on 127.0.0.1
only, with a random password; ``pypgstac migrate`` installs pgstac.
``StacApi`` starts ``uvicorn stac_fastapi.pgstac.app`` against it in a
subprocess (transactions on: the fixture seeds collections and items through
the API) and stops it.  Needs: ``postgresql-15`` and
``postgresql-15-postgis-3`` (apt), and the Python packages
``stac-fastapi-pgstac``, ``pypgstac[psycopg]``, ``uvicorn``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "aerialdet-pg"


def have_postgres() -> str | None:
    """Why the server cannot start here, or None when it can."""
    if not (PG_BIN / "postgres").exists():
        return "PostgreSQL 15 is not installed (apt-get install postgresql-15 postgresql-15-postgis-3)"
    if not list(Path("/usr/share/postgresql/15/extension").glob("postgis.control")):
        return "PostGIS is not installed (apt-get install postgresql-15-postgis-3)"
    return None


def _pg_user() -> tuple[str, int, int] | None:
    """``(name, uid, gid)`` to run PostgreSQL as when this process is root; None when it is not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True
        )
        entry = pwd.getpwnam(PG_USER)
    return PG_USER, entry.pw_uid, entry.pw_gid


def _as_pg(cmd: list[str], user: tuple[str, int, int] | None, **kw: Any) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user[0], "--"] if user else []
    return subprocess.run(prefix + cmd, check=True, capture_output=True, text=True, **kw)


@dataclass(frozen=True)
class Database:
    """A running PostgreSQL with pgstac: how to reach it."""

    host: str
    port: int
    user: str
    password: str
    name: str

    @property
    def dsn(self) -> str:
        """The connection string pypgstac takes."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    def env(self) -> dict[str, str]:
        """The ``PG*`` settings stac-fastapi-pgstac reads."""
        return {
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGDATABASE": self.name,
        }


@contextlib.contextmanager
def pgstac_database() -> Iterator[Database]:
    """Start PostgreSQL in a temporary folder with pgstac migrated; stop it and remove the folder after."""
    user = _pg_user()
    root = Path(tempfile.mkdtemp(prefix="aerialdet-pg-"))
    data, sock = root / "data", root / "sock"
    password = secrets.token_hex(16)
    (root / "pw").write_text(password)
    sock.mkdir()
    if user:
        for path in (root, sock, root / "pw"):
            os.chown(path, user[1], user[2])
    port = free_port()
    _as_pg(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={root / 'pw'}",
        ],
        user,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} -c fsync=off"
    _as_pg(
        [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-o", options, "-w", "start"],
        user,
    )
    try:
        db = Database("127.0.0.1", port, "postgres", password, "postgres")
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [sys.executable, "-m", "pypgstac.pypgstac", "migrate", "--dsn", db.dsn],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        yield db
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)


class StacApi:
    """stac-fastapi-pgstac served by uvicorn on 127.0.0.1 in a subprocess, over ``db``.

    Args:
        db: the pgstac database.
    """

    def __init__(self, db: Database) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            **db.env(),
            "ENABLE_TRANSACTIONS_EXTENSIONS": "true",
            "STAC_FASTAPI_TITLE": "aerialdet test catalog",
            "STAC_FASTAPI_DESCRIPTION": "test items on the moto S3 server",
            "STAC_FASTAPI_LANDING_ID": "aerialdet-test",
            "STAC_FASTAPI_VERSION": "1.0.0",
        }
        self.log = tempfile.NamedTemporaryFile(prefix="aerialdet-stac-api-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory"]
            + ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(120.0)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the STAC API exited: {Path(self.log.name).read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/_mgmt/ping", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the STAC API did not answer within {timeout_s:.0f} s")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to the API (a collection, an item); the decoded answer."""
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer

    def add_collection(self, collection: dict[str, Any]) -> None:
        """Create a collection."""
        self.post("/collections", collection)

    def add_item(self, item: dict[str, Any]) -> None:
        """Create an item in its collection."""
        self.post(f"/collections/{item['collection']}/items", item)

    def stop(self) -> None:
        """Stop the server (and wait for it)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@contextlib.contextmanager
def stac_api() -> Iterator[StacApi]:
    """A running STAC API over a fresh pgstac database; stopped (server, then database) after."""
    with pgstac_database() as db:
        api = StacApi(db)
        try:
            yield api
        finally:
            api.stop()
