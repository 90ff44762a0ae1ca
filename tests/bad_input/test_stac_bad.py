"""A STAC API that answers 500 or never answers: retried with backoff, then one line naming it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from pipeline.errors import SourceError
from pipeline.stac_source import SceneTags, StacOptions, StacSearch, iter_stac_listing

LANDING = {
    "type": "Catalog",
    "stac_version": "1.0.0",
    "id": "flaky",
    "description": "a landing page whose search fails",
    "conformsTo": [
        "https://api.stacspec.org/v1.0.0/core",
        "https://api.stacspec.org/v1.0.0/item-search",
    ],
    "links": [],
}


@contextlib.contextmanager
def server(mode: str, delay_s: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1: ``mode`` "500" fails every request, "search500" only searches,
    "slow" answers after ``delay_s``. Yields its URL and the paths requested."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(self.path)
            if self.headers.get("Content-Length"):
                self.rfile.read(int(self.headers["Content-Length"]))
            if mode == "slow":
                time.sleep(delay_s)
            if mode == "500" or (mode == "search500" and self.path.startswith("/search")):
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"internal error")
                return
            body = json.dumps(
                {
                    **LANDING,
                    "links": [
                        {
                            "rel": "search",
                            "href": url + "/search",
                            "type": "application/geo+json",
                            "method": "POST",
                        }
                    ],
                }
            ).encode()
            with contextlib.suppress(OSError):  # the client may have given up (timed out) meanwhile
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield url, hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def _list(search: StacSearch) -> list[tuple[str, str | None]]:
    return list(iter_stac_listing(search.url, StacOptions(search=search), SceneTags()))


@pytest.mark.parametrize("mode", ["500", "search500"])
def test_a_server_answering_500_is_retried_then_named(mode):
    with server(mode) as (url, hits):
        started = time.time()
        with pytest.raises(SourceError, match=rf"STAC API {url} kept failing .*500") as err:
            _list(StacSearch(url, max_retries=2))
        assert "\n" not in str(err.value)
    failing = [p for p in hits if mode == "500" or p.startswith("/search")]
    assert len(failing) == 3  # the request and its 2 retries
    assert time.time() - started >= 0.5  # with backoff between them


def test_a_server_that_does_not_answer_in_time_is_retried_then_named():
    with server("slow", delay_s=2.0) as (url, hits):
        with pytest.raises(SourceError, match=rf"STAC API {url} did not answer \(timed out"):
            _list(StacSearch(url, timeout_s=0.3, max_retries=1))
    assert len(hits) == 2


def test_a_malformed_cql2_filter_is_one_line_before_any_request():
    with server("500") as (url, hits):
        with pytest.raises(SourceError, match="--filter 'platform = ' is not CQL2"):
            _list(StacSearch(url, cql2_filter="platform = "))
        assert hits == [] or all(not p.startswith("/search") for p in hits)


def test_the_cli_says_which_options_need_stac_search(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["detect", str(tmp_path), "--collections", "c", "--model", "standin", "--out", str(tmp_path / "o")],
    )
    assert (
        result.exit_code == 2
        and "--collections filter a STAC API search: add --stac-search URL" in result.output
    )
    result = CliRunner().invoke(cli, ["detect", "--model", "standin", "--out", str(tmp_path / "o")])
    assert (
        result.exit_code == 2 and "pass SOURCE (rasters, a STAC file) or --stac-search URL" in result.output
    )
