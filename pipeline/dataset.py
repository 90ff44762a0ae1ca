"""What holds for a whole output, whichever runs fill it: ``OUT/_dataset.json``.

One output, one CRS.  The first run that opens a scene fixes it, written
once (``OutputStore.write_bytes_once``: of two runs starting together, one
wins and the other reads its choice), and every later run keeps it, so a
resume never changes the CRS of an output, whatever scenes it happens to
process (a mixed-CRS bucket once came out in two CRSs that ``query`` refused
to read together).

The first run chooses ``--to-crs`` when given, else the CRS of the first
batch of scenes it opened when they share one, else OGC:CRS84.

One output, one read GSD, the same way: the first run records the GSD it
reads scenes at (``model_gsd_m``: the checkpoint's ``gsd_m`` or ``--gsd-m``;
null for ``--native-resolution`` or a model without one), and a later run
that would read at another is refused before it claims a scene
(``check_resolution``): its new scenes would be read at one GSD and the
scenes already done at another.  ``--overwrite`` re-detects the scenes at
the new setting and records it.  A ``_dataset.json`` written before the GSD
was recorded has no ``model_gsd_m``: it is not checked, and stays as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from pyproj import CRS

from pipeline.errors import OutputError, PipelineError
from pipeline.output import choose_output_crs
from pipeline.resolution import ResolutionConfig
from pipeline.storage import OutputStore

DATASET_FILE = "_dataset.json"
GSD_KEY = "model_gsd_m"  # metres per model pixel the output's scenes were read at; null: native


def _unreadable(store: OutputStore, exc: Exception) -> OutputError:
    return OutputError(
        f"{store.uri(DATASET_FILE)} cannot be read ({exc}); restore it, or write to a new --out"
    )


def _entry(store: OutputStore) -> dict[str, Any] | None:
    """``_dataset.json`` parsed, or None before the output's first run."""
    if not store.exists(DATASET_FILE):
        return None
    try:
        entry = json.loads(store.read_bytes(DATASET_FILE))
    except ValueError as exc:
        raise _unreadable(store, exc) from None
    if not isinstance(entry, dict):
        raise _unreadable(store, TypeError(f"a JSON object expected, got {type(entry).__name__}"))
    return entry


def recorded_crs(store: OutputStore) -> CRS | None:
    """The CRS an output's detections are in, or None before its first run.

    Raises:
        OutputError: ``_dataset.json`` exists but cannot be parsed.
    """
    entry = _entry(store)
    if entry is None:
        return None
    try:
        return CRS.from_wkt(entry["crs_wkt"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _unreadable(store, exc) from None


def fix_output_crs(
    store: OutputStore,
    scene_crs_wkts: list[str],
    to_crs: str | None,
    run_id: str,
    resolution: ResolutionConfig | None = None,
) -> CRS:
    """The output's CRS: the recorded one, else chosen now (``choose_output_crs``) and recorded.

    Args:
        store: the output.
        scene_crs_wkts: the CRSs of the first scenes this run opened.
        to_crs: the user's ``--to-crs``.
        run_id: this run, recorded as the one that chose.
        resolution: the GSD this run reads at, recorded with the CRS and
            checked against the record (``check_resolution``); None: neither.

    Raises:
        PipelineError: ``to_crs`` differs from the CRS the output already
            holds, or ``resolution`` from the GSD it records (a run that
            wrote ``_dataset.json`` first read at another).
    """
    recorded = recorded_crs(store)
    if recorded is None:
        chosen = choose_output_crs(scene_crs_wkts, to_crs)
        entry: dict[str, Any] = {
            "crs_wkt": chosen.to_wkt(),
            "crs": chosen.to_string(),
            "chosen_by_run": run_id,
        }
        if resolution is not None:
            entry.update({GSD_KEY: resolution.model_gsd_m, "gsd_source": resolution.source})
        store.write_bytes_once(DATASET_FILE, json.dumps(entry, indent=2).encode())
        recorded = recorded_crs(store)  # ours, or that of a run that wrote it first
        assert recorded is not None
    check_to_crs(store, to_crs)
    if resolution is not None:  # a run starting with ours may have written it first, at another GSD
        check_resolution(store, resolution, False, run_id, print)  # never changes it: --overwrite did already
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


def _read_at(model_gsd_m: float | None) -> str:
    return "native resolution" if model_gsd_m is None else f"{model_gsd_m:g} m per pixel"


def _this_run(resolution: ResolutionConfig) -> str:
    """How this run reads, with the setting that says so (``--gsd-m 0.6``, the checkpoint's gsd_m...)."""
    gsd = resolution.model_gsd_m
    if gsd is None:
        return "native resolution (--native-resolution, or a model without gsd_m)"
    origin = {"--gsd-m": f"--gsd-m {gsd:g}", "checkpoint": f"the checkpoint's gsd_m {gsd:g}"}
    return f"{gsd:g} m per pixel ({origin.get(resolution.source, resolution.source)})"


def recorded_gsd(store: OutputStore) -> tuple[bool, float | None]:
    """``(recorded, model_gsd_m)``: whether the output records the GSD its scenes were read at, and which.

    ``(False, None)`` before the first run and for a ``_dataset.json``
    written before the GSD was recorded; ``(True, None)``: native resolution.

    Raises:
        OutputError: ``_dataset.json`` cannot be parsed, or its ``model_gsd_m`` is not a positive number.
    """
    entry = _entry(store)
    if entry is None or GSD_KEY not in entry:
        return False, None
    gsd = entry[GSD_KEY]
    if gsd is None:
        return True, None
    if isinstance(gsd, bool) or not isinstance(gsd, (int, float)) or not (math.isfinite(gsd) and gsd > 0):
        raise _unreadable(store, ValueError(f"{GSD_KEY} {gsd!r} is not a positive number of metres"))
    return True, float(gsd)


def check_resolution(
    store: OutputStore, resolution: ResolutionConfig, overwrite: bool, run_id: str, log: Callable[[str], None]
) -> None:
    """Refuse a run that would read at another GSD than the detections already in the output.

    Under ``overwrite`` the run's GSD replaces the recorded one instead (its
    scenes are detected again at it), and ``log`` says so once.

    Args:
        store: the output.
        resolution: the GSD this run reads at.
        overwrite: ``--overwrite``.
        run_id: this run, recorded when it changes the record.
        log: where the line about a changed record goes.

    Raises:
        PipelineError: naming both GSDs, the flag that resumes the output, and
            the alternatives (a new ``--out``, ``--overwrite``).
    """
    known, gsd = recorded_gsd(store)
    wanted = resolution.model_gsd_m
    if not known or (gsd is None and wanted is None):
        return
    if gsd is not None and wanted is not None and math.isclose(gsd, wanted, rel_tol=1e-9):
        return
    if not overwrite:
        resume = "--native-resolution" if gsd is None else f"--gsd-m {gsd:g}"
        raise PipelineError(
            f"this run reads scenes at {_this_run(resolution)} but the detections already in this output "
            f"were read at {_read_at(gsd)} (recorded in {DATASET_FILE}); pass {resume} to resume it, "
            f"write to a new --out, or pass --overwrite to detect its scenes again at {_read_at(wanted)}"
        )
    entry = _entry(store)
    assert entry is not None
    entry.update({GSD_KEY: wanted, "gsd_source": resolution.source, "gsd_changed_by_run": run_id})
    store.write_bytes_once(DATASET_FILE, json.dumps(entry, indent=2).encode(), replace=True)
    log(
        f"NOTE {store.uri(DATASET_FILE)}: the output's read GSD changes from {_read_at(gsd)} to "
        f"{_read_at(wanted)} (--overwrite); its scenes that this run does not detect again keep the old one"
    )
