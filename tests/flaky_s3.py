"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the S3 test server.

``FlakyProxy(upstream)`` forwards every request to ``upstream`` (the moto
server) and, for a share of the requests whose path matches ``only``,
answers ``503 Slow Down`` or drops the connection without an answer, as an
overloaded or flapping S3 endpoint does.  Failures are drawn from a seeded
``random.Random`` and bounded: never more than ``max_in_a_row`` failures in a
row, so a client that retries enough always gets through.  ``always_fail``
fails every matching request (an endpoint that keeps failing).

Used by ``tests/integration/test_faults.py``::

    with FlakyProxy(os.environ["AWS_ENDPOINT_URL"], share=0.5, seed=1) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        ...
    assert proxy.failed > 0
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


class FlakyProxy:
    """A threaded forwarding proxy that fails a seeded, bounded share of requests.

    Args:
        upstream: ``http://host:port`` of the real server.
        share: probability in [0, 1] that a matching request fails.
        seed: seed of the failure draws.
        max_in_a_row: most failures in a row (a retrying client gets through).
        kinds: what a failure is: ``"503"`` (an S3 SlowDown answer), ``"drop"``
            (the connection closed with no answer) and/or ``"lost"`` (the
            request reaches the server, which acts on it, and its answer is
            lost: the connection is closed instead), drawn in turn.
        always_fail: fail every matching request (``share`` and the bound are ignored).
        only: a regex; only requests whose ``METHOD path`` matches it may fail.

    Attributes:
        requests: requests received.
        failed: requests failed on purpose (503s, drops, lost answers).
        dropped: of those, connections dropped (with or without the request served).
    """

    def __init__(
        self,
        upstream: str,
        *,
        share: float = 0.0,
        seed: int = 0,
        max_in_a_row: int = 2,
        kinds: tuple[str, ...] = ("503", "drop"),
        always_fail: bool = False,
        only: str = ".*",
    ) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.share = share
        self.max_in_a_row = max_in_a_row
        self.kinds = kinds
        self.always_fail = always_fail
        self.only = re.compile(only)
        self.requests = self.failed = self.dropped = 0
        self._in_a_row = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the proxy."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def decide(self, request_line: str) -> str | None:
        """The failure for this request (``"503"``, ``"drop"``, ``"lost"``) or None to forward it."""
        with self._lock:
            self.requests += 1
            if not self.only.search(request_line):
                return None
            fail = self.always_fail or (
                self._in_a_row < self.max_in_a_row and self._rng.random() < self.share
            )
            if not fail:
                self._in_a_row = 0
                return None
            self._in_a_row += 1
            self.failed += 1
            kind = self.kinds[self.failed % len(self.kinds)]
            self.dropped += kind in ("drop", "lost")
            return kind


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a drop hits only its own request

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _forward(self) -> None:
            body = _read_body(self)
            failure = proxy.decide(f"{self.command} {self.path}")
            if failure == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if failure == "503":
                payload = b"<Error><Code>SlowDown</Code><Message>injected by FlakyProxy</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            headers["Content-Length"] = str(len(body))
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                if failure == "lost":  # served upstream, the answer never reaches the client
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            finally:
                upstream.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler
