"""What holds for a whole output, whichever runs fill it: ``OUT/_dataset.json``.

One output, one CRS.  The first run that opens a scene fixes it, written
once (``OutputStore.write_bytes_once``: of two runs starting together, one
wins and the other reads its choice), and every later run keeps it, so a
resume never changes the CRS of an output, whatever scenes it happens to
process (a mixed-CRS bucket once came out in two CRSs that ``query`` refused
to read together).

The first run chooses ``--to-crs`` when given, else the CRS of the first
batch of scenes it opened when they share one, else OGC:CRS84.
"""

from __future__ import annotations

import json

from pyproj import CRS

from pipeline.errors import OutputError, PipelineError
from pipeline.output import choose_output_crs
from pipeline.storage import OutputStore

DATASET_FILE = "_dataset.json"


def recorded_crs(store: OutputStore) -> CRS | None:
    """The CRS an output's detections are in, or None before its first run.

    Raises:
        OutputError: ``_dataset.json`` exists but cannot be parsed.
    """
    if not store.exists(DATASET_FILE):
        return None
    try:
        return CRS.from_wkt(json.loads(store.read_bytes(DATASET_FILE))["crs_wkt"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(
            f"{store.uri(DATASET_FILE)} cannot be read ({exc}); restore it, or write to a new --out"
        ) from None


def fix_output_crs(store: OutputStore, scene_crs_wkts: list[str], to_crs: str | None, run_id: str) -> CRS:
    """The output's CRS: the recorded one, else chosen now (``choose_output_crs``) and recorded.

    Args:
        store: the output.
        scene_crs_wkts: the CRSs of the first scenes this run opened.
        to_crs: the user's ``--to-crs``.
        run_id: this run, recorded as the one that chose.

    Raises:
        PipelineError: ``to_crs`` differs from the CRS the output already holds.
    """
    recorded = recorded_crs(store)
    if recorded is None:
        chosen = choose_output_crs(scene_crs_wkts, to_crs)
        entry = {"crs_wkt": chosen.to_wkt(), "crs": chosen.to_string(), "chosen_by_run": run_id}
        store.write_bytes_once(DATASET_FILE, json.dumps(entry, indent=2).encode())
        recorded = recorded_crs(store)  # ours, or that of a run that wrote it first
        assert recorded is not None
    check_to_crs(store, to_crs)
    return recorded


def check_to_crs(store: OutputStore, to_crs: str | None) -> None:
    """Refuse a ``--to-crs`` other than the CRS the output's detections are already in.

    Raises:
        PipelineError: naming both CRSs, what to pass and the alternative.
    """
    recorded = recorded_crs(store)
    if to_crs and recorded is not None and CRS.from_user_input(to_crs) != recorded:
        raise PipelineError(
            f"--to-crs {to_crs} differs from the CRS of the detections already in this output "
            f"({recorded.to_string()}, recorded in {DATASET_FILE}); pass --to-crs {recorded.to_string()} "
            "or write to a new --out"
        )
