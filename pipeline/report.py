"""The run report ``OUT/_run.json``: every scene with its status.

Statuses: ``done`` (written this run), ``exists`` (already done by an
earlier run, skipped; ``--overwrite`` redoes it), ``failed`` (with the
error, which names the file and the problem), ``skipped`` (not a raster by
extension).  The report is rewritten atomically after each scene, so a
crashed run still says what it finished.  It is written through the run's
output store (``pipeline.storage``): a local folder or ``s3://bucket/prefix``.

Accounting: every URI the source listed gets exactly one line, so when the
run has finished ``done + exists + failed + skipped == num_listed``
(``RunReport.finish`` asserts it; ``num_pending`` counts the lines still
missing while the run goes on).  Each scene records which Ray nodes and model
actors inferred its tiles (``tiles_by_node``, ``actor_ids``) and the
retries it needed; the totals give the throughput of each node.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.storage import LocalStore, OutputStore, open_store

REPORT_FILE = "_run.json"
STATUSES = ("done", "exists", "failed", "skipped")


@dataclass
class SceneReport:
    """One scene's line in the report."""

    uri: str
    status: str
    output: str | None = None
    error: str | None = None
    num_tiles: int = 0
    num_tiles_skipped_nodata: int = 0
    num_detections: int = 0
    seconds: float = 0.0
    tiles_by_node: dict[str, int] = field(default_factory=dict)
    actor_ids: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def node_ids(self) -> list[str]:
        """The Ray nodes whose model actors inferred this scene's tiles, sorted."""
        return sorted(self.tiles_by_node)


@dataclass
class RunReport:
    """The whole run's report."""

    run_id: str
    source: str
    output: str
    model: str
    crs: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    scenes: dict[str, SceneReport] = field(default_factory=dict)
    num_listed: int | None = None
    storage_retries: int = 0
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Note when a phase of the run was first reached (``scenes_opened``, ``first_tiles``, ``last_tiles``), once."""
        self.marks.setdefault(name, time.time())

    def add(self, scene: SceneReport) -> None:
        """Record (or replace) a scene's line."""
        self.scenes[scene.uri] = scene

    def counts(self) -> dict[str, int]:
        """Scenes per status."""
        out = {s: 0 for s in STATUSES}
        for scene in self.scenes.values():
            out[scene.status] += 1
        return out

    @property
    def num_failed(self) -> int:
        """Scenes that failed."""
        return self.counts()["failed"]

    @property
    def num_pending(self) -> int | None:
        """Listed URIs without a line yet (None when the listing is not recorded)."""
        return None if self.num_listed is None else self.num_listed - len(self.scenes)

    def finish(self) -> None:
        """Mark the run finished; every listed URI must have its line by now."""
        self.finished_at = time.time()
        if self.num_listed is not None:
            counts = self.counts()
            assert sum(counts.values()) == self.num_listed, (
                f"report accounts for {sum(counts.values())} of {self.num_listed} listed URIs: {counts}"
            )

    def retries(self) -> dict[str, int]:
        """Retries: of storage requests, and of scenes' tasks (summed over scenes)."""
        return {"storage": self.storage_retries, "scenes": sum(s.retries for s in self.scenes.values())}

    def nodes(self, elapsed_s: float) -> dict[str, dict[str, Any]]:
        """Tiles inferred per Ray node (scenes done this run) and each node's tiles per second."""
        out: dict[str, dict[str, Any]] = {}
        for scene in self.scenes.values():
            if scene.status != "done":
                continue
            for node, tiles in scene.tiles_by_node.items():
                entry = out.setdefault(node, {"num_tiles": 0, "num_scenes": 0})
                entry["num_tiles"] += tiles
                entry["num_scenes"] += 1
        for entry in out.values():
            entry["tiles_per_s"] = round(entry["num_tiles"] / elapsed_s, 3) if elapsed_s > 0 else None
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        """JSON form with totals, accounting, retries and throughput (overall and per node)."""
        elapsed = (self.finished_at or time.time()) - self.started_at
        tiles = sum(s.num_tiles for s in self.scenes.values() if s.status == "done")
        return {
            "run_id": self.run_id,
            "source": self.source,
            "output": self.output,
            "model": self.model,
            "crs": self.crs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": round(elapsed, 3),
            # seconds from started_at to each phase: where a run's time goes
            "phases_s": {k: round(t - self.started_at, 3) for k, t in self.marks.items()},
            "num_listed": self.num_listed,
            "num_pending": self.num_pending,
            "counts": self.counts(),
            "num_tiles": tiles,
            "num_detections": sum(s.num_detections for s in self.scenes.values() if s.status == "done"),
            "tiles_per_s": round(tiles / elapsed, 3) if elapsed > 0 else None,
            "retries": self.retries(),
            "nodes": self.nodes(elapsed),
            "config": self.config,
            "scenes": [
                asdict(s) | {"node_ids": s.node_ids}
                for s in sorted(self.scenes.values(), key=lambda s: s.uri)
            ],
        }

    def write(self, out: str | os.PathLike[str] | OutputStore) -> Path | str:
        """Write ``_run.json`` atomically into ``out`` (a folder, ``s3://bucket/prefix`` or a store).

        Returns:
            The file written: a ``Path`` in a local folder, else its ``s3://`` URI.

        Raises:
            OutputError: it cannot be written (after retries for S3).
        """
        store = out if isinstance(out, OutputStore) else open_store(out)
        store.write_text(REPORT_FILE, json.dumps(self.to_json(), indent=2))
        return store.path(REPORT_FILE) if isinstance(store, LocalStore) else store.uri(REPORT_FILE)


def read_report(out: str | os.PathLike[str] | OutputStore) -> dict[str, Any]:
    """The ``_run.json`` of an output (folder, ``s3://bucket/prefix`` or store), parsed.

    Raises:
        OutputError: there is none, or it cannot be read.
    """
    store = out if isinstance(out, OutputStore) else open_store(out)
    return dict(json.loads(store.read_bytes(REPORT_FILE)))


def new_run_id() -> str:
    """A sortable unique run id: UTC time + random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
