"""The dataset manifest: every scene of an output, the run that wrote it, its detections and checksum.

``_run.json`` describes one run; an output filled by several runs (a resume,
a re-run after new scenes arrived, concurrent drivers) needs a record of the
whole dataset.  Each written scene gets ``_manifest.<output name>.json``
beside its file (one small file per scene, written by the run that wrote the
scene, so runs never contend for one manifest file):

``{"scene", "file", "run_id", "model", "num_detections", "sha256", "bytes", "written_at"}``

``read_manifest(out)`` gathers them; ``aerialdet query OUT --summary``
reports the runs that made the dataset and any file whose entry is missing
or whose checksum no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pipeline.storage import OutputStore, is_detection_name, open_store

MANIFEST_PREFIX = "_manifest."


def manifest_name(output_name: str) -> str:
    """The manifest entry of the scene whose detections are ``output_name``."""
    return f"{MANIFEST_PREFIX}{output_name}.json"


def record(
    store: OutputStore,
    output_name: str,
    data: bytes,
    *,
    scene: str,
    run_id: str,
    model_id: str,
    num_detections: int,
) -> dict[str, Any]:
    """Write the manifest entry of a scene file just written (``data`` are its bytes)."""
    entry = {
        "scene": scene,
        "file": output_name,
        "run_id": run_id,
        "model": model_id,
        "num_detections": int(num_detections),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "written_at": time.time(),
    }
    store.write_text(manifest_name(output_name), json.dumps(entry, sort_keys=True))
    return entry


def read_manifest(out: str | OutputStore, *, verify: bool = False) -> dict[str, Any]:
    """Every scene entry of an output, the runs that wrote them, and what does not add up.

    Args:
        out: output folder, ``s3://bucket/prefix`` or a store.
        verify: re-read each detection file and compare its SHA-256.

    Returns:
        ``{"scenes": [entry...], "runs": {run_id: {"scenes", "detections"}},
        "files_without_entry": [...], "checksum_mismatch": [...]}``.
    """
    store = out if isinstance(out, OutputStore) else open_store(out)
    entries = []
    for name in store.list_names(MANIFEST_PREFIX):
        try:
            entries.append(json.loads(store.read_bytes(name)))
        except ValueError:
            continue  # a torn entry counts as missing: its file shows under files_without_entry
    files = {n for n in store.list_names() if is_detection_name(n)}
    recorded = {e.get("file") for e in entries}
    runs: dict[str, dict[str, int]] = {}
    for entry in entries:
        run = runs.setdefault(str(entry.get("run_id")), {"scenes": 0, "detections": 0})
        run["scenes"] += 1
        run["detections"] += int(entry.get("num_detections", 0))
    mismatch = []
    if verify:
        mismatch = [
            e["file"]
            for e in entries
            if e.get("file") in files
            and hashlib.sha256(store.read_bytes(e["file"])).hexdigest() != e.get("sha256")
        ]
    return {
        "scenes": sorted(entries, key=lambda e: str(e.get("scene"))),
        "runs": dict(sorted(runs.items())),
        "files_without_entry": sorted(files - recorded),
        "checksum_mismatch": sorted(mismatch),
    }
