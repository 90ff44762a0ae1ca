"""``OUT/_report.html``: one self-contained page about a detect run and its output.

Beside ``_run.json`` (``pipeline.report``) and written at the end of every
detect run (``pipeline.run``), or again with ``aerialdet report OUT``: the
run (source, model, times, throughput, scenes per status), detections per
class and per scene and class, a score histogram per class, a small map of
the scene footprints with the density of detections over them, and the
failed scenes with their reasons (the first ``MAX_FAILED``, and how many
more).  The figures are ``pipeline.run_report_data``'s DuckDB aggregates, so
a huge output costs its file count, not its rows.

The page holds no script at all (and no link to anything): its charts and
map are inline SVG, its style an inline ``<style>``, and every text taken
from the data (scene URIs, labels, errors, the run's settings) is
HTML-escaped (``html.escape``), so a label named ``<script>`` is shown as
text.  It is written atomically: locally (``OUT/_report.html`` or ``-o
FILE``) to a temporary file beside it, then ``os.replace``; on S3 by one PUT,
visible only once complete.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from pipeline.run_report_data import NUM_BINS, ReportData, gather
from pipeline.storage import open_store

REPORT_HTML = "_report.html"
MAP_WIDTH_PX = 480
PALETTE = ("#e6194b", "#3c78d8", "#f0a800", "#2e9e5b", "#9b4dca", "#ff7f0e")
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
td.n,th.n{text-align:right}.note{color:#666}.err{color:#a00}code{word-break:break-all}
svg{background:#fafafa;border:1px solid #ddd;margin:4px 8px 4px 0}.hists{display:flex;flex-wrap:wrap}
"""


def _e(value: Any) -> str:
    """Any value as escaped HTML text."""
    return escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    """A table; a head of empty names draws no header row."""
    cls = [' class="n"' if i >= numeric_from else "" for i in range(len(head))]
    out = ["<table>"]
    if any(head):
        out += ["<tr>", *(f"<th{c}>{_e(h)}</th>" for h, c in zip(head, cls)), "</tr>"]
    for row in rows:
        out += ["<tr>", *(f"<td{c}>{_e(v)}</td>" for v, c in zip(row, cls)), "</tr>"]
    return "".join(out) + "</table>"


def _run_section(data: ReportData) -> str:
    s = data.summary
    if s is None:
        return '<p class="note">No run record (_run.json) in this output: the figures are its detections only.</p>'
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.get("started_at") or 0))
    rows: list[list[Any]] = [
        ["run", s.get("run_id")],
        ["source", s.get("source")],
        ["model", s.get("model")],
        ["output CRS", s.get("crs")],
        ["started", started],
        ["elapsed", f"{s.get('elapsed_s')} s" + (f" (stopped: {s['stopped']})" if s.get("stopped") else "")],
        ["tiles", f"{s.get('num_tiles')} ({s.get('tiles_per_s')} tiles/s)"],
        ["scenes listed", s.get("num_listed")],
    ]
    counts = data.statuses or dict(s.get("counts") or {})
    status = _table(["status", "scenes"], [[k, v] for k, v in counts.items()])
    return _table(["", ""], rows, numeric_from=2) + status


def _counts_section(data: ReportData) -> str:
    if not data.class_counts:
        return '<p class="note">No detections.</p>'
    labels = sorted(data.class_counts)
    per_class = _table(
        ["class", "detections"], [[k, data.class_counts[k]] for k in labels] + [["all", data.num_detections]]
    )
    rows: list[list[Any]] = [
        [scene, *(counts.get(k, 0) for k in labels), sum(counts.values())]
        for scene, counts in sorted(data.scene_counts.items())
    ]
    more = data.num_scenes - len(data.scene_counts)
    note = (
        f'<p class="note">and {more} more scene(s) with detections (all of them: '
        f"<code>aerialdet query {_e(data.out)} --summary</code>)</p>"
        if more > 0
        else ""
    )
    return (
        per_class + "<h2>Detections per scene and class</h2>" + _table(["scene", *labels, "all"], rows) + note
    )


def _histogram(label: str, counts: list[int], color: str) -> str:
    width, height, pad = 300, 110, 18
    top = max(counts) or 1
    bar = (width - 2 * pad) / NUM_BINS
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts.append(f'<text x="{pad}" y="12" font-size="12">{_e(label)}: {sum(counts)} (max {top} a bin)</text>')
    for i, n in enumerate(counts):
        h = (height - 2 * pad - 6) * n / top
        x, y = pad + i * bar, height - pad - h
        lo, hi = i / NUM_BINS, (i + 1) / NUM_BINS
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{_e(label)} score {lo:.2f}-{hi:.2f}: {n}</title></rect>"
        )
    for value in (0.0, 0.5, 1.0):
        x = pad + value * (width - 2 * pad)
        parts.append(
            f'<text x="{x:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">{value:g}</text>'
        )
    return "".join(parts) + "</svg>"


def _histograms_section(data: ReportData) -> str:
    if not data.histograms:
        return '<p class="note">No scores.</p>'
    charts = [
        _histogram(label, data.histograms[label], PALETTE[i % len(PALETTE)])
        for i, label in enumerate(sorted(data.histograms))
    ]
    return '<div class="hists">' + "".join(charts) + "</div>"


def _map_section(data: ReportData) -> str:
    if data.bounds is None:
        return '<p class="note">Nothing to draw: no footprint and no detection.</p>'
    xmin, ymin, xmax, ymax = data.bounds
    span = max(xmax - xmin, ymax - ymin, 1e-12)
    scale = MAP_WIDTH_PX / span
    width, height = max(1.0, (xmax - xmin) * scale), max(1.0, (ymax - ymin) * scale)

    def px(x: float, y: float) -> str:
        return f"{(x - xmin) * scale:.1f},{(ymax - y) * scale:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" role="img">']
    cols, rows = data.grid_shape
    cw, ch = width / max(cols, 1), height / max(rows, 1)
    top = max((n for _, _, n in data.density), default=1)
    for i, j, n in data.density:
        opacity = 0.15 + 0.85 * math.log1p(n) / math.log1p(top)
        parts.append(
            f'<rect x="{i * cw:.1f}" y="{height - (j + 1) * ch:.1f}" width="{cw:.1f}" height="{ch:.1f}" '
            f'fill="#e6550d" fill-opacity="{opacity:.2f}"><title>{n} detection(s)</title></rect>'
        )
    for scene, rings in data.footprints:
        for ring in rings:
            points = " ".join(px(x, y) for x, y in ring)
            parts.append(
                f'<polygon points="{points}" fill="none" stroke="#3c78d8" stroke-width="1">'
                f"<title>{_e(scene)}</title></polygon>"
            )
    parts.append("</svg>")
    left_out = (
        f"; {data.num_footprints_left_out} more scene file(s) not outlined"
        if data.num_footprints_left_out
        else ""
    )
    note = (
        f'<p class="note">Scene footprints (blue) and detections per cell (orange, darker: more; up to {top} '
        f"in a cell) in {_e(data.crs)}, north up{left_out}.</p>"
    )
    return "".join(parts) + note


def _failed_section(data: ReportData) -> str:
    if not data.num_failed:
        return '<p class="note">No scene failed.</p>'
    items = "".join(
        f'<li><code>{_e(uri)}</code>: <span class="err">{_e(error)}</span></li>' for uri, error in data.failed
    )
    more = data.num_failed - len(data.failed)
    tail = (
        f'<p class="note">and {more} more failed scene(s): see the run\'s scene lines beside _run.json</p>'
        if more > 0
        else ""
    )
    return f"<p>{data.num_failed} scene(s) failed.</p><ul>{items}</ul>{tail}"


def render_html(data: ReportData) -> str:
    """The whole page: no script, no external resource, every text from the data escaped."""
    title = f"aerialdet run report: {data.out}"
    config = json.dumps((data.summary or {}).get("config") or {}, indent=1, sort_keys=True, default=str)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{data.num_detections} detection(s); written {_e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}. '
        "The PNG quicklook of a scene: <code>aerialdet quicklook OUT --scene NAME -o FILE.png</code>.</p>",
        "<h2>Run</h2>",
        _run_section(data),
        "<h2>Detections per class</h2>",
        _counts_section(data),
        "<h2>Score histograms</h2>",
        _histograms_section(data),
        "<h2>Map</h2>",
        _map_section(data),
        "<h2>Failed scenes</h2>",
        _failed_section(data),
        f"<h2>Settings</h2><details><summary>the run's configuration</summary><pre>{_e(config)}</pre></details>",
    ]
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
    )
    return head + "\n".join(body) + "</body></html>\n"


def _write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then ``os.replace``.

    The file gets the umask's mode, as the output's other files (``mkstemp`` would make it 0600).
    """
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report_html(out: str, target: str | os.PathLike[str] | None = None) -> str:
    """Build the report of output ``out`` and write it, atomically, to ``target`` (default ``OUT/_report.html``).

    Returns:
        Where it was written (a path or an ``s3://`` URI).

    Raises:
        OutputError: the output holds neither a run record nor detections, or cannot be written.
        OSError: ``target``'s folder cannot be written.
    """
    text = render_html(gather(out))
    if target is not None:
        _write_file(Path(target), text)
        return str(target)
    store = open_store(out)
    store.write_text(REPORT_HTML, text)  # local: temp file + rename; S3: one PUT, visible once complete
    return store.uri(REPORT_HTML)


# above this many listed scenes the run leaves the page to `aerialdet report` (2.5 ms of CPU an
# output file: 4 minutes at 100,000 scenes, after the run's last scene)
REPORT_AFTER_RUN_MAX_SCENES = 20_000


def report_after_run(out: str, log: Callable[[str], None], num_listed: int = 0) -> None:
    """The end of a detect run: write ``OUT/_report.html``; a failure is one warning, never the run's.

    Args:
        out: the run's output (folder or ``s3://`` prefix).
        log: where the run's notes go.
        num_listed: scenes the run listed; above ``REPORT_AFTER_RUN_MAX_SCENES`` no page is
            written and the note says how to write it.
    """
    from pipeline.errors import first_line

    if num_listed > REPORT_AFTER_RUN_MAX_SCENES:
        log(
            f"NOTE {num_listed} scenes: no HTML report written after the run; `aerialdet report {out}` writes it"
        )
        return
    try:
        write_report_html(out)
    except Exception as exc:  # the run and its _run.json are done: the page is a convenience
        log(
            f"WARNING {out}: the HTML report was not written ({first_line(exc)}); `aerialdet report {out}` retries"
        )
