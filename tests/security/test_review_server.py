"""``aerialdet review``'s server: loopback only, a token or nothing, fixed files, fixed scenes, checked edits.

A real server (``jobs.review_server``) over real GeoTIFFs and a detection
output, spoken to with ``http.client`` so that paths and headers go out
exactly as written (no client-side normalisation of ``..``).
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.review_helpers import make_review_case, open_case_session, serving


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """One server for the module (the tests that edit leave the state as it was, but the last)."""
    tmp_path = tmp_path_factory.mktemp("review")
    case = make_review_case(tmp_path)
    labels = tmp_path / "labels.parquet"
    session = open_case_session(case, labels)
    with serving(session) as url:
        parts = urlsplit(url)
        yield {
            "url": url,
            "port": parts.port,
            "token": parts.path.strip("/"),
            "labels": labels,
            "session": session,
        }


def _request(
    port: int, path: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None
):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
            sent["Content-Length"] = str(len(body))
        for key, value in sent.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_bound_to_loopback_only(review):
    from jobs.review import vendor_dir
    from jobs.review_server import make_server

    server, url = make_server(review["session"], vendor_dir())
    server.server_close()
    assert server.server_address[0] == "127.0.0.1" and url.startswith("http://127.0.0.1:")
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {
        "127.0.0.1"
    }
    for address in sorted(others)[:3]:  # the machine's other addresses: nothing listens there
        with socket.socket() as s:
            s.settimeout(3)
            assert s.connect_ex((address, review["port"])) != 0, f"the review server answers on {address}"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/config",
        "/index.html",
        "/review.js",
        "/{bad}/api/config",
        "/{prefix}/api/config",
        "/api/config?token={token}",
        "/{token}x/api/config",
        "/../{token}/api/config",
    ],
)
def test_no_token_no_data(review, path):
    token = review["token"]
    path = path.format(token=token, bad="A" * len(token), prefix=token[:-1])
    status, headers, body = _request(review["port"], path)
    assert status == 403 and body == b"forbidden\n"
    assert b"vehicle" not in body and token.encode() not in body


def test_edits_without_token_are_refused_and_change_nothing(review):
    before = review["labels"].read_bytes()
    item = review["session"].detections["id"].iloc[0]
    status, _, _ = _request(
        review["port"], "/api/edit", method="POST", body=json.dumps({"op": "reject", "id": item}).encode()
    )
    assert status == 403 and review["labels"].read_bytes() == before


def test_other_host_header_is_refused(review):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host."""
    status, _, body = _request(
        review["port"], f"/{review['token']}/api/config", headers={"Host": "evil.example"}
    )
    assert status == 403 and body == b"forbidden\n"


@pytest.mark.parametrize(
    "path",
    [
        "../../../../etc/passwd",
        "vendor/../../../../../etc/passwd",
        "vendor/..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "review_static/index.html",
        "jobs/review.py",
        "vendor/ol/package.json",
        "/etc/passwd",
        "tiles/0/../../../../etc/passwd",
        "tiles/-1/0/0/0.png",
        "tiles/7/14/0/0.png",
        "tiles/0/30/0/0.png",
        "tiles/0/2/5/0.png",
        "tiles/http://127.0.0.1:1/x.tif/0/0/0.png",
        "tiles/%2Fetc%2Fpasswd/0/0/0.png",
        "tiles/s3:%2F%2Fbucket%2Fkey.tif/0/0/0.png",
    ],
)
def test_only_fixed_files_and_named_scenes(review, path):
    status, _, body = _request(review["port"], f"/{review['token']}/{path}")
    assert status in (400, 404), f"{path}: {status}"
    assert b"root:" not in body and not body.startswith(b"\x89PNG")


def test_the_named_scenes_are_served_as_png_tiles(review):
    from morecantile import tms

    scene = review["session"].scenes[0]
    bounds = review["session"].config()["scenes"][0]["bbox"]
    centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    tile = tms.get("WebMercatorQuad").tile(*tms.get("WebMercatorQuad").lnglat(*centre), 17)
    status, headers, body = _request(
        review["port"], f"/{review['token']}/tiles/0/{tile.z}/{tile.x}/{tile.y}.png"
    )
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG"), scene


def test_responses_forbid_inline_script_and_sniffing(review):
    status, headers, body = _request(review["port"], f"/{review['token']}/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    static = Path(__file__).parents[2] / "jobs" / "review_static" / "index.html"
    assert body == static.read_bytes()  # nothing of the data is written into the page


def test_hostile_label_is_data_not_markup(tmp_path):
    hostile = "<script>alert(1)</script>"
    case = make_review_case(tmp_path, class_names=(hostile, "building"))
    session = open_case_session(case, tmp_path / "labels.parquet", thresholds={})
    with serving(session) as url:
        parts = urlsplit(url)
        bounds = session.config()["scenes"][0]["bbox"]
        bbox = ",".join(str(v) for v in bounds)
        status, headers, body = _request(parts.port, f"{parts.path}api/detections?bbox={bbox}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    labels = {item["label"] for item in json.loads(body)["items"]}
    assert hostile in labels  # the page sets it with textContent (tests/integration/test_review_browser.py)


HOSTILE_EDITS = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"op": "drop table"}', "'op' must be one of"),
    (b'{"op": "reject"}', "takes exactly the keys"),
    (b'{"op": "reject", "id": "d-nope"}', "no detection or label"),
    (b'{"op": "reject", "id": 7}', "'id' must be a non-empty string"),
    (b'{"op": "reject", "id": "x", "extra": 1}', "takes exactly the keys"),
    (b'{"op": "relabel", "id": "ID", "label": "<script>alert(1)</script>"}', "'label' must be one of"),
    (b'{"op": "move", "id": "ID", "bbox": [1, 2, 3]}', "4 finite numbers"),
    (b'{"op": "move", "id": "ID", "bbox": [NaN, 0, 1, 1]}', "4 finite numbers"),
    (b'{"op": "move", "id": "ID", "bbox": [0, 0, 1e400, 1]}', "4 finite numbers"),
    (b'{"op": "move", "id": "ID", "bbox": [5, 5, 1, 1]}', "xmin < xmax"),
    (b'{"op": "move", "id": "ID", "bbox": ["0", 0, 1, 1]}', "4 finite numbers"),
    (b'{"op": "draw", "label": "vehicle", "bbox": [0, 0, 10, 10]}', "does not lie on"),
    (b'{"op": "move", "id": "ID", "bbox": [0, 0, 10, 10]}', "does not lie on"),
    (b'\xff\xfe{"op"', "not JSON"),
    (b'{"op": "accept", "id": "' + b"A" * 20000 + b'"}', "at most"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE_EDITS)
def test_hostile_edits_are_refused_and_the_file_stays_intact(review, body, message):
    labels = review["labels"]
    before = labels.read_bytes()
    body = body.replace(b"ID", review["session"].detections["id"].iloc[0].encode())
    status, headers, answer = _request(
        review["port"], f"/{review['token']}/api/edit", method="POST", body=body
    )
    assert status in (400, 413), answer
    error = json.loads(answer)["error"]
    assert message in error and "\n" not in error and "Traceback" not in error
    assert labels.read_bytes() == before


def test_edits_need_json_content_type(review):
    item = review["session"].detections["id"].iloc[0]
    body = json.dumps({"op": "reject", "id": item}).encode()
    status, _, answer = _request(
        review["port"],
        f"/{review['token']}/api/edit",
        method="POST",
        body=body,
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415 and b"application/json" in answer


def test_a_good_edit_after_bad_ones_is_saved(review):
    from pipeline.review_store import read_labels

    item = review["session"].detections["id"].iloc[0]
    for body, _ in HOSTILE_EDITS[:5]:
        _request(review["port"], f"/{review['token']}/api/edit", method="POST", body=body)
    status, _, _ = _request(
        review["port"],
        f"/{review['token']}/api/edit",
        method="POST",
        body=json.dumps({"op": "reject", "id": item}).encode(),
    )
    state, _ = read_labels(review["labels"])
    assert status == 200 and item in state.rejected
