"""Which scenes of an output came from which STAC items: ``query --item-id / --collection``.

The run report's scene lines (``_run.<run id>.<n>.jsonl``, every run of the
output) carry each scene's ``item_id`` and ``collection``
(``pipeline.stac_source``); a query by item or collection becomes a query by
those scenes' URIs (``pipeline.query.Filters.scenes``), so it runs on the same
filtered view as every other filter.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.query_sql import QueryError
from pipeline.report import SceneStatus
from pipeline.storage import open_store


def _lines(path: str | Path) -> list[dict[str, object]]:
    """Every scene line of every run under ``path`` (an output folder or ``s3://`` prefix)."""
    store = open_store(str(path))
    lines: list[dict[str, object]] = []
    for name in store.list_names("_run."):
        if not name.endswith(".jsonl"):
            continue
        try:
            text = store.read_bytes(name).decode()
        except (OSError, UnicodeDecodeError):
            continue
        lines.extend(json.loads(row) for row in text.splitlines() if row.strip())
    return lines


def scenes_of_items(
    path: str | Path, item_ids: tuple[str, ...] = (), collections: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The scene URIs written (``done``) from the given STAC items and/or collections, sorted.

    Both given: a scene must match both.

    Raises:
        QueryError: ``path`` is not an output folder, or no scene of it came from those items.
    """
    if Path(str(path)).is_file():
        raise QueryError(
            f"{path}: --item-id/--collection need the output folder (its run report), not a file"
        )
    scenes = {
        str(line["uri"])
        for line in _lines(path)
        if line.get("status") == SceneStatus.DONE.value
        and (not item_ids or line.get("item_id") in item_ids)
        and (not collections or line.get("collection") in collections)
    }
    if not scenes:
        asked = ", ".join([f"item {i}" for i in item_ids] + [f"collection {c}" for c in collections])
        raise QueryError(
            f"{path}: no scene written there came from {asked}; the run report (_run.*.jsonl) names each scene's "
            "STAC item and collection"
        )
    return tuple(sorted(scenes))
