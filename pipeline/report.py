"""The run record: one line per scene, appended once, and a summary ``OUT/_run.json``.

Statuses (``SceneStatus``): ``done`` (written this run), ``exists`` (already
done by an earlier run, skipped; ``--overwrite`` redoes it), ``failed`` (with
the error, which names the file and the problem), ``skipped`` (not a raster
by extension, outside the area, or held by another live run).

Cost stays flat in the number of scenes:

* each scene's line is written once, in the run's JSON-lines segments
  ``_run.<run_id>.<first line number>.jsonl`` beside the detections
  (write-once objects, so the same on S3, which cannot append); a segment is flushed every
  ``lines_per_segment`` lines or ``flush_every_s`` seconds, and at the end;
* the summary ``_run.json`` (counts, totals, throughput per node, phases,
  the configuration and where the lines are) is rewritten every
  ``summary_every_s`` seconds and at the end, never once per scene;
* the driver keeps totals, not lines.

A crash loses at most the lines of the last ``flush_every_s`` seconds; every
scene written is also in its manifest entry (``pipeline.manifest``), so the
record of what finished stays exact.  ``read_report(out)`` returns the summary
with the lines of its run gathered under ``"scenes"``.

Accounting: every URI the source listed gets exactly one line, so when the
run has finished ``done + exists + failed + skipped == num_listed``
(``RunRecord.finish`` asserts it).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from pipeline.storage import LocalStore, OutputStore, open_store

REPORT_FILE = "_run.json"


class SceneStatus(str, Enum):
    """A scene's outcome in a run (a ``str``: compares equal to its value, JSON-encodes as it)."""

    DONE = "done"
    EXISTS = "exists"
    FAILED = "failed"
    SKIPPED = "skipped"


STATUSES = tuple(s.value for s in SceneStatus)


@dataclass
class SceneReport:
    """One scene's line in the record."""

    uri: str
    status: str
    output: str | None = None
    error: str | None = None
    num_tiles: int = 0
    num_tiles_skipped_nodata: int = 0
    num_tiles_not_owned: int = 0  # left to the overlapping scene that owns their part of the mosaic
    num_detections: int = 0
    seconds: float = 0.0
    tiles_by_node: dict[str, int] = field(default_factory=dict)
    actor_ids: list[str] = field(default_factory=list)
    retries: int = 0
    note: str | None = None  # what the reader did to its pixels (pipeline.pixel_kinds), e.g. rescaled
    native_gsd_m: float | None = None  # the scene's GSD (pipeline.resolution), None when unknowable
    model_gsd_m: float | None = None  # the GSD it was read at; None: native resolution
    read_factor: float = 1.0  # native px per model px (4.0: a 0.075 m scene read at 0.3 m)
    num_px_inferred: int = 0  # pixels of the tiles the model ran on (model px)
    item_id: str | None = None  # the STAC item the scene came from (pipeline.stac_source)
    collection: str | None = None
    item_href: str | None = None
    num_tiles_outside_aoi: int = 0  # tiles --aoi left out (not read, not inferred)

    def __post_init__(self) -> None:
        self.status = SceneStatus(self.status).value  # refuse a status that is not one

    @property
    def node_ids(self) -> list[str]:
        """The Ray nodes whose model actors inferred this scene's tiles, sorted."""
        return sorted(self.tiles_by_node)

    def to_json(self) -> dict[str, Any]:
        """The line as written (its fields, shallow: ``asdict``'s deep copy cost more than the JSON)."""
        line = {name: getattr(self, name) for name in _LINE_FIELDS}
        line["tiles_by_node"] = dict(self.tiles_by_node)
        line["actor_ids"] = list(self.actor_ids)
        line["node_ids"] = self.node_ids
        return line


_LINE_FIELDS = tuple(f.name for f in fields(SceneReport))


def lines_prefix(run_id: str) -> str:
    """Where a run's scene lines live in its output store."""
    return f"_run.{run_id}."


@dataclass
class _Totals:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    num_tiles: int = 0
    num_detections: int = 0
    scene_retries: int = 0
    num_tiles_outside_aoi: int = 0
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, line: SceneReport) -> None:
        self.counts[line.status] += 1
        self.scene_retries += line.retries
        self.num_tiles_outside_aoi += line.num_tiles_outside_aoi
        if line.status != SceneStatus.DONE.value:
            return
        self.num_tiles += line.num_tiles
        self.num_detections += line.num_detections
        for node, tiles in line.tiles_by_node.items():
            entry = self.nodes.setdefault(node, {"num_tiles": 0, "num_scenes": 0})
            entry["num_tiles"] += tiles
            entry["num_scenes"] += 1


@dataclass
class RunRecord:
    """A run's record: scene lines appended in segments, totals kept, a summary rewritten rarely.

    Args:
        run_id: the run's id (``new_run_id``).
        source: what was listed.
        output: the output folder or prefix.
        model: the model's id.
        config: the run's resolved settings (JSON-able).
        store: where to write; None keeps everything in memory (tests).
        lines_per_segment: flush the buffered lines after this many.
        flush_every_s: ... or when the oldest buffered line is this old.
        summary_every_s: rewrite ``_run.json`` at most this often before the end.
    """

    run_id: str
    source: str
    output: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    store: OutputStore | None = None
    lines_per_segment: int = 256
    flush_every_s: float = 5.0
    summary_every_s: float = 30.0
    crs: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    num_listed: int = 0
    storage_retries: int = 0
    stopped: str | None = None
    marks: dict[str, float] = field(default_factory=dict)
    num_summary_writes: int = 0
    num_segments: int = 0
    _totals: _Totals = field(default_factory=_Totals)
    _buffer: list[SceneReport] = field(default_factory=list)
    _buffered_since: float = 0.0
    _summary_at: float = 0.0
    _num_lines: int = 0
    # pipeline.stac_source.SceneTags: the item of each listed scene, popped as it is recorded
    tags: Any = None

    def mark(self, name: str) -> None:
        """Note when a phase of the run was first reached (``scenes_opened``, ``first_tiles``, ...), once."""
        self.marks.setdefault(name, time.time())

    def add(self, line: SceneReport) -> None:
        """Record a scene's line, once: it is counted now and written with the next segment."""
        ref = self.tags.pop(line.uri) if self.tags is not None else None
        if ref is not None:
            line.item_id, line.collection, line.item_href = ref.item_id, ref.collection, ref.href
        self._totals.add(line)
        if not self._buffer:
            self._buffered_since = time.time()
        self._buffer.append(line)
        self._num_lines += 1
        self.flush_if_due()

    def counts(self) -> dict[str, int]:
        """Scenes per status so far."""
        return dict(self._totals.counts)

    @property
    def num_failed(self) -> int:
        """Scenes that failed."""
        return self._totals.counts[SceneStatus.FAILED.value]

    @property
    def num_lines(self) -> int:
        """Scene lines recorded so far."""
        return self._num_lines

    def flush_if_due(self, *, now: float | None = None) -> None:
        """Write the buffered lines when enough are waiting or the oldest is old; the summary when due."""
        now = time.time() if now is None else now
        if self._buffer and (
            len(self._buffer) >= self.lines_per_segment or now - self._buffered_since >= self.flush_every_s
        ):
            self._flush_lines()
        if self.store is not None and now - self._summary_at >= self.summary_every_s:
            self.write_summary()

    def _flush_lines(self) -> None:
        if self.store is None or not self._buffer:
            return
        first = self._num_lines - len(self._buffer)
        text = "".join(json.dumps(line.to_json()) + "\n" for line in self._buffer)
        # write-once: a name is never rewritten, so a reader never sees a torn segment
        self.store.write_bytes_once(f"{lines_prefix(self.run_id)}{first:09d}.jsonl", text.encode())
        self._buffer.clear()
        self.num_segments += 1

    def finish(self) -> None:
        """Mark the run finished; every listed URI must have its line by now (unless it was stopped)."""
        self.finished_at = time.time()
        total = sum(self._totals.counts.values())
        assert self.stopped is not None or total == self.num_listed, (
            f"report accounts for {total} of {self.num_listed} listed URIs: {self._totals.counts}"
        )

    def close(self) -> Path | str | None:
        """Write what is buffered and the final summary; returns the summary's path or URI."""
        self._flush_lines()
        return self.write_summary()

    def retries(self) -> dict[str, int]:
        """Retries: of storage requests, and of scenes' tasks (summed over scenes)."""
        return {"storage": self.storage_retries, "scenes": self._totals.scene_retries}

    def to_json(self) -> dict[str, Any]:
        """The summary: totals, accounting, retries, throughput (overall and per node), phases."""
        elapsed = (self.finished_at or time.time()) - self.started_at
        tiles = self._totals.num_tiles
        nodes = {
            node: entry | {"tiles_per_s": round(entry["num_tiles"] / elapsed, 3) if elapsed > 0 else None}
            for node, entry in sorted(self._totals.nodes.items())
        }
        return {
            "run_id": self.run_id,
            "source": self.source,
            "output": self.output,
            "model": self.model,
            "crs": self.crs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "stopped": self.stopped,
            "elapsed_s": round(elapsed, 3),
            # seconds from started_at to each phase: where a run's time goes
            "phases_s": {k: round(t - self.started_at, 3) for k, t in self.marks.items()},
            "num_listed": self.num_listed,
            "num_pending": self.num_listed - self._num_lines,
            "counts": self.counts(),
            "num_tiles": tiles,
            "num_detections": self._totals.num_detections,
            "num_tiles_saved_by_aoi": self._totals.num_tiles_outside_aoi,
            "tiles_per_s": round(tiles / elapsed, 3) if elapsed > 0 else None,
            "retries": self.retries(),
            "nodes": nodes,
            "config": self.config,
            "scene_lines": lines_prefix(self.run_id),
            "num_summary_writes": self.num_summary_writes + 1,
        }

    def write_summary(self) -> Path | str | None:
        """Rewrite ``_run.json`` atomically now (None without a store).

        Raises:
            OutputError: it cannot be written (after retries for S3).
        """
        if self.store is None:
            return None
        self.store.write_text(REPORT_FILE, json.dumps(self.to_json(), indent=2))
        self.num_summary_writes += 1
        self._summary_at = time.time()
        store = self.store
        return store.path(REPORT_FILE) if isinstance(store, LocalStore) else store.uri(REPORT_FILE)


def read_scene_lines(store: OutputStore, run_id: str) -> list[dict[str, Any]]:
    """Every scene line a run wrote, sorted by URI (a torn or unreadable segment is skipped)."""
    lines: list[dict[str, Any]] = []
    prefix = lines_prefix(run_id)
    for name in store.list_names(prefix):
        try:
            text = store.read_bytes(name).decode()
        except (OSError, UnicodeDecodeError):
            continue
        lines.extend(json.loads(row) for row in text.splitlines() if row.strip())
    return sorted(lines, key=lambda line: str(line.get("uri")))


def read_report(out: str | os.PathLike[str] | OutputStore, *, with_scenes: bool = True) -> dict[str, Any]:
    """The ``_run.json`` summary of an output (folder, ``s3://bucket/prefix`` or store), parsed.

    Args:
        out: the output.
        with_scenes: also gather the run's scene lines under ``"scenes"``.

    Raises:
        OutputError: there is none, or it cannot be read.
    """
    store = out if isinstance(out, OutputStore) else open_store(out)
    summary = dict(json.loads(store.read_bytes(REPORT_FILE)))
    if with_scenes and "scenes" not in summary:
        summary["scenes"] = read_scene_lines(store, str(summary["run_id"]))
    return summary


def new_run_id() -> str:
    """A sortable unique run id: UTC time + random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
