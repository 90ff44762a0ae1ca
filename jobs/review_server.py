"""The HTTP side of ``aerialdet review``: stdlib ``http.server`` on 127.0.0.1, behind a token.

Every URL starts with ``/<token>/`` (``secrets.token_urlsafe``): anything
else, or a ``Host`` that is not this server's loopback address (DNS
rebinding), is answered 403 with no data.  The page's relative URLs carry
the token without the page knowing it.  Routes under the token:

* ``/``, ``review.js``, ``review.css``, ``vendor/ol.js``, ``vendor/ol.css``:
  a fixed list of files (no path from the URL reaches the file system);
* ``tiles/<scene index>/<z>/<x>/<y>.png``: a scene by its index in the
  named list (never a path or URL from the request);
* ``api/config``, ``api/detections?bbox=..&labels=..&min_score=..``,
  ``api/queue?limit=N``: JSON;
* ``POST api/edit`` (a JSON edit, ``pipeline.review_edits``), ``POST api/undo``.

A refused edit or a malformed query is 400 with ``{"error": "..."}``: one
line naming the field and the value.  Responses carry a strict
Content-Security-Policy (scripts only from this server, no inline script),
``nosniff`` and ``no-referrer``, so the token does not leak in a Referer.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobs.review_session import ReviewSession
from pipeline.errors import PipelineError

STATIC_DIR = Path(__file__).with_name("review_static")
TILE_ROUTE = re.compile(r"tiles/(\d{1,4})/(\d{1,2})/(\d{1,9})/(\d{1,9})\.png")
MAX_ZOOM = 24
MAX_BODY_BYTES = 16_384
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


def static_files(vendor_dir: Path) -> dict[str, Path]:
    """The only files the server sends: route -> file."""
    return {
        "": STATIC_DIR / "index.html",
        "review.js": STATIC_DIR / "review.js",
        "review.css": STATIC_DIR / "review.css",
        "vendor/ol.js": vendor_dir / "dist" / "ol.js",
        "vendor/ol.css": vendor_dir / "ol.css",
    }


class _Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _query(raw: str) -> dict[str, str]:
    parsed = parse_qs(raw, keep_blank_values=True, max_num_fields=8)
    return {k: v[-1] for k, v in parsed.items()}


def _numbers(name: str, text: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise _Refused(400, f"{name} must be {count} finite comma-separated numbers, got {text[:80]!r}")
    return values


class ReviewHandler(BaseHTTPRequestHandler):
    """Routes one request (``make_server`` sets ``session``, ``token``, ``files`` and ``host_names``)."""

    session: ReviewSession
    token: str
    files: dict[str, Path]
    host_names: frozenset[str]
    server_version = "aerialdet-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        """Quiet: URLs hold the token, so nothing is logged."""

    def _route(self) -> str | None:
        """The path under the token, or None (403) when the token or the Host is wrong."""
        if self.headers.get("Host", "") not in self.host_names:
            return None
        path = urlsplit(self.path).path
        token, sep, rest = path.lstrip("/").partition("/")
        if not sep or not secrets.compare_digest(token.encode(), self.token.encode()):
            return None
        return rest

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page moved on (a tile scrolled away)
            pass

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _answer(self, handle: Any) -> None:
        route = self._route()
        if route is None:
            self._send(403, b"forbidden\n", "text/plain")
            return
        try:
            handle(route)
        except _Refused as exc:
            self._json(exc.status, {"error": str(exc)})
        except (PipelineError, ValueError) as exc:  # a refused edit, a bad filter, an unreadable scene
            self._json(400, {"error": " ".join(str(exc).split())})

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        """Static files, tiles and the JSON reads."""
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        """Edits and undo."""
        self._answer(self._post)

    def _get(self, route: str) -> None:
        query = _query(urlsplit(self.path).query)
        if route in self.files:
            file = self.files[route]
            self._send(200, file.read_bytes(), _TYPES.get(file.suffix, "application/octet-stream"))
        elif route == "api/config":
            self._json(200, self.session.config())
        elif route == "api/detections":
            bbox = _numbers("bbox", query.get("bbox", ""), 4)
            labels = [v for v in query.get("labels", "").split(",") if v]
            min_score = _numbers("min_score", query["min_score"], 1)[0] if query.get("min_score") else None
            self._json(200, self.session.viewport(bbox, labels, min_score))
        elif route == "api/queue":
            limit = int(_numbers("limit", query.get("limit", "50"), 1)[0])
            self._json(200, self.session.queue(max(1, min(limit, 1000))))
        elif match := TILE_ROUTE.fullmatch(route):
            self._tile(*(int(v) for v in match.groups()))
        else:
            raise _Refused(404, "no such page")

    def _tile(self, index: int, z: int, x: int, y: int) -> None:
        if index >= len(self.session.scenes) or z > MAX_ZOOM or x >= 2**z or y >= 2**z:
            raise _Refused(
                404, f"no tile {index}/{z}/{x}/{y}: scenes are numbered 0..{len(self.session.scenes) - 1}"
            )
        self._send(200, self.session.tile(index, z, x, y), "image/png")

    def _post(self, route: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES or length < 0:
            raise _Refused(413, f"body of {length} bytes refused; an edit is at most {MAX_BODY_BYTES}")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise _Refused(415, "edits are sent as application/json")
        body = self.rfile.read(length)
        if route == "api/edit":
            self._json(200, self.session.edit(body))
        elif route == "api/undo":
            self._json(200, self.session.undo())
        else:
            raise _Refused(404, "no such API")


def make_server(session: ReviewSession, vendor_dir: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server on 127.0.0.1:``port`` (0: a free one) and its URL with a fresh token (not started)."""
    token = secrets.token_urlsafe(24)
    server = ThreadingHTTPServer(("127.0.0.1", port), ReviewHandler)
    bound = server.server_address[1]
    handler = type(
        "BoundReviewHandler",
        (ReviewHandler,),
        {
            "session": session,
            "token": token,
            "files": static_files(vendor_dir),
            "host_names": frozenset({f"127.0.0.1:{bound}", f"localhost:{bound}"}),
        },
    )
    server.RequestHandlerClass = handler
    server.daemon_threads = True
    return server, f"http://127.0.0.1:{bound}/{token}/"
