"""The run report ``OUT/_run.json``: every scene with its status.

Statuses: ``done`` (written this run), ``exists`` (already done by an
earlier run, skipped; ``--overwrite`` redoes it), ``failed`` (with the
error, which names the file and the problem), ``skipped`` (not a raster by
extension).  The report is rewritten atomically after each scene, so a
crashed run still says what it finished.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        """JSON form with totals and throughput."""
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
            "counts": self.counts(),
            "num_tiles": tiles,
            "num_detections": sum(s.num_detections for s in self.scenes.values() if s.status == "done"),
            "tiles_per_s": round(tiles / elapsed, 3) if elapsed > 0 else None,
            "config": self.config,
            "scenes": [asdict(s) for s in sorted(self.scenes.values(), key=lambda s: s.uri)],
        }

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``_run.json`` atomically."""
        target = Path(out_dir) / REPORT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{REPORT_FILE}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, target)
        return target


def new_run_id() -> str:
    """A sortable unique run id: UTC time + random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
