"""STAC out: a STAC Collection over an output, one Item per scene written.

The STAC files live in ``OUT/_stac/`` (a reserved name: every reader of the
detections skips it, as it skips ``_run.json``).  For each scene's GeoParquet
``OUT/<scene>-<hash>.parquet`` the driver writes ``OUT/_stac/<scene>-<hash>.json``
once (``OutputStore.write_bytes_once``, replaced with ``--overwrite``), after
the GeoParquet, on one writer thread (its fsync overlaps the run; at most 64
wait, all are written before the collection): a STAC 1.1 Item with

* the scene's footprint (OGC:CRS84) as ``bbox`` and ``geometry``;
* the GeoParquet as its ``detections`` asset (role ``data``);
* ``processing:`` fields (processing extension 1.2: software, lineage,
  datetime) and ``aerialdet:`` counts (detections, run id);
* a ``derived_from`` link to the source STAC item (or the scene itself);
* the model, described with the MLM extension 1.5.2 (name, architecture,
  tasks, input tiles, output boxes and classes) and an ``mlm:model`` asset
  pointing at the checkpoint.

At the end of every run ``_stac/collection.json`` is rewritten atomically
(``OutputStore.write_text``): it links every item of the output
(earlier runs' too) and its extent covers the earlier extent and this run's
items.  Items are the record of what was written; the collection is an
index, so a crashed run leaves items a later run's collection links.
"""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from pipeline.georef import scene_px_to_crs
from pipeline.stac_source import ItemRef
from pipeline.storage import OutputStore
from pipeline.types import SceneInfo

STAC_VERSION = "1.1.0"
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
STAC_DIR = "_stac"
COLLECTION_FILE = "collection.json"
ITEM_SUFFIX = ".json"
MAX_PENDING = 64  # items written on the writer's thread, not yet confirmed
PARQUET_MEDIA = "application/vnd.apache.parquet"


def _now_iso(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the MLM fields say of the model: the same for every item of a run.

    Attributes:
        model_id: the checkpoint id (``mlm:name``).
        class_names: output classes, by label id.
        num_bands: input channels.
        tile_size_px: input tile edge.
        batch_size: tiles per call.
        href: where the weights are (a checkpoint directory), or the model id.
    """

    model_id: str
    class_names: tuple[str, ...]
    num_bands: int
    tile_size_px: int
    batch_size: int
    href: str

    def properties(self, dtype: str) -> dict[str, Any]:
        """The ``mlm:`` Item properties for input pixels of ``dtype``."""
        classes = [
            {"value": i, "name": n, "description": f"label {i}: {n}"} for i, n in enumerate(self.class_names)
        ]
        return {
            "mlm:name": mlm_name(self.model_id),
            "aerialdet:model_id": self.model_id,
            "mlm:architecture": "RetinaNet",
            "mlm:tasks": ["object-detection"],
            "mlm:framework": "pytorch",
            "mlm:batch_size_suggestion": self.batch_size,
            "mlm:input": [
                {
                    "name": "tile",
                    "input": {
                        "shape": [-1, self.num_bands, self.tile_size_px, self.tile_size_px],
                        "dim_order": ["batch", "channel", "height", "width"],
                        "data_type": dtype,
                    },
                    "description": "raw scene values of a tile; the model scales its bands itself",
                }
            ],
            "mlm:output": [
                {
                    "name": "detections",
                    "tasks": ["object-detection"],
                    "result": {"shape": [-1, 6], "dim_order": ["batch", "box"], "data_type": "float32"},
                    "description": "boxes x1, y1, x2, y2 (px), score, label; merged across tiles",
                    "classification:classes": classes,
                }
            ],
        }

    def asset(self) -> dict[str, Any]:
        """The ``mlm:model`` asset."""
        return {
            "href": self.href,
            "type": "application/octet-stream; framework=pytorch",
            "roles": ["mlm:model"],
            "mlm:artifact_type": "torch.save",
            "title": f"model {self.model_id}",
        }


def mlm_name(model_id: str) -> str:
    """``model_id`` as MLM's ``mlm:name`` allows (letters first, then ``[A-Za-z0-9_.-]``, alphanumeric last).

    Example:
        >>> mlm_name("standin:blobs")
        'standin-blobs'
    """
    import re

    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", model_id).strip("-_.")
    if not name[:1].isalpha():
        name = "model-" + name
    return name if len(name) > 1 and name[-1].isalnum() else name + "0"


def item_name(output_name: str) -> str:
    """The item's name in ``OUT/_stac/`` for a scene's GeoParquet: ``<scene>-<hash>.json``."""
    return output_name.removesuffix(".parquet") + ITEM_SUFFIX


def scene_item(
    scene: SceneInfo,
    output_name: str,
    num_detections: int,
    model: ModelCard,
    run_id: str,
    source: ItemRef | None,
    collection_id: str,
) -> dict[str, Any]:
    """The STAC Item of one scene's output (see the module docstring)."""
    footprint = lonlat_footprint(scene)
    lineage = f"objects detected in {scene.uri} by aerialdet (RetinaNet {model.model_id}), tiles merged"
    derived = source.href if source is not None and source.href else scene.uri
    properties = {
        "datetime": _now_iso(),
        "processing:software": {"aerialdet": _version()},
        "processing:lineage": lineage,
        "processing:datetime": _now_iso(),
        "aerialdet:num_detections": num_detections,
        "aerialdet:run_id": run_id,
        "aerialdet:scene": scene.uri,
        **({"aerialdet:source_item": source.item_id} if source is not None else {}),
        **model.properties(scene.dtype),
    }
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [MLM, PROCESSING],
        "id": output_name.removesuffix(".parquet"),
        "collection": collection_id,
        "bbox": list(footprint.bounds),
        "geometry": json.loads(shapely.to_geojson(footprint)),
        "properties": properties,
        "links": [
            {"rel": "collection", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "parent", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "root", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "derived_from", "href": derived},
        ],
        "assets": {
            "detections": {
                "href": f"../{output_name}",
                "type": PARQUET_MEDIA,
                "roles": ["data"],
                "title": "detections (GeoParquet 1.1)",
            },
            "model": model.asset(),
        },
    }


@functools.lru_cache(maxsize=32)
def _to_lonlat(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_user_input("OGC:CRS84"), always_xy=True)


def lonlat_footprint(scene: SceneInfo) -> shapely.Polygon:
    """The scene's four corners in OGC:CRS84 (one transformer per CRS, cached: this runs once per scene)."""
    corners = scene_px_to_crs(np.array([[0, 0, scene.width_px, scene.height_px]]), scene.transform)[0]
    xs, ys = _to_lonlat(scene.crs_wkt).transform(corners[:, 0], corners[:, 1])
    return shapely.Polygon(list(zip(xs, ys)))


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aerialdet")
    except PackageNotFoundError:
        return "0+unknown"


def collection_id(out_dir: str) -> str:
    """The output's collection id: ``aerialdet-<last folder or prefix of OUT>``."""
    import re

    tail = out_dir.rstrip("/").rsplit("/", 1)[-1] or "output"
    return "aerialdet-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-") or "output")


def writer_for(job: Any, run_id: str) -> StacWriter:
    """The ``StacWriter`` of a ``pipeline.job.DetectJob``'s run (writing to ``OUT/_stac/``)."""
    info = job.model.info
    card = ModelCard(
        model_id=info.model_id,
        class_names=tuple(info.class_names),
        num_bands=len(job.read.bands),
        tile_size_px=job.tiling.tile_size_px,
        batch_size=job.detect.batch_size,
        href=str(getattr(job.model, "checkpoint_dir", "") or info.model_id),
    )
    from pipeline.storage import open_store

    stac_store = open_store(f"{job.out_dir.rstrip('/')}/{STAC_DIR}")
    return StacWriter(stac_store, card, run_id, collection_id(job.out_dir), replace=job.overwrite)


@dataclass
class StacWriter:
    """Writes each done scene's Item as it is recorded, and the Collection at the end of the run.

    Args:
        store: the output.
        model: the MLM description.
        run_id: this run.
        collection_id: the collection's id (the output's name).
        replace: ``--overwrite``: replace an item that exists.
    """

    store: OutputStore
    model: ModelCard
    run_id: str
    collection_id: str
    replace: bool = False
    bounds: list[float] | None = None
    written: int = 0
    errors: list[str] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None
    _pending: deque[tuple[str, Future[list[float]]]] = field(default_factory=deque)

    def add(self, scene: SceneInfo, output_name: str, num_detections: int, source: ItemRef | None) -> None:
        """Write the Item of a scene just written, on the writer's thread (its fsync overlaps the run).

        At most ``MAX_PENDING`` items wait; a failure is kept and said once at the end, never raised.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stac-items")
        while len(self._pending) >= MAX_PENDING:
            self._collect(self._pending.popleft())
        args = (scene, output_name, num_detections, self.model, self.run_id, source, self.collection_id)
        self._pending.append((output_name, self._pool.submit(self._write_item, *args)))

    def _write_item(self, *args: Any) -> list[float]:
        item = scene_item(*args)
        self.store.write_bytes_once(
            item_name(args[1]), json.dumps(item, indent=1).encode(), replace=self.replace
        )
        return list(item["bbox"])

    def _collect(self, pending: tuple[str, Future[list[float]]]) -> None:
        output_name, future = pending
        try:
            bbox = future.result()
        except Exception as exc:  # the detections are written; the index can be rebuilt by a re-run
            self.errors.append(f"{output_name}: STAC item not written: {type(exc).__name__}: {exc}")
            return
        self._extend(bbox)
        self.written += 1

    def drain(self) -> None:
        """Wait for every item in flight; stop the writer's thread."""
        while self._pending:
            self._collect(self._pending.popleft())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _extend(self, bbox: list[float]) -> None:
        if self.bounds is None:
            self.bounds = list(bbox)
            return
        b = self.bounds
        self.bounds = [min(b[0], bbox[0]), min(b[1], bbox[1]), max(b[2], bbox[2]), max(b[3], bbox[3])]

    def close(self, started_at: float) -> str | None:
        """Rewrite ``collection.json`` when any item exists; the first error, if any, for the run to say."""
        self.drain()
        names = [n for n in self.store.list_names() if n.endswith(ITEM_SUFFIX) and n != COLLECTION_FILE]
        if not names:
            return self.errors[0] if self.errors else None
        previous = self._previous()
        if previous is not None:
            for box in previous["extent"]["spatial"]["bbox"][:1]:
                self._extend(box)
        start = previous["extent"]["temporal"]["interval"][0][0] if previous else _now_iso(started_at)
        collection = {
            "type": "Collection",
            "stac_version": STAC_VERSION,
            "stac_extensions": [],  # the items carry the mlm: and processing: fields
            "id": self.collection_id,
            "description": "Objects detected by aerialdet: one item per scene, its GeoParquet as the asset.",
            "license": "other",
            "extent": {
                "spatial": {"bbox": [self.bounds or [-180.0, -90.0, 180.0, 90.0]]},
                "temporal": {"interval": [[start, _now_iso()]]},
            },
            "links": [
                {"rel": "self", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
                {"rel": "root", "href": f"./{COLLECTION_FILE}", "type": "application/json"},
            ]
            + [{"rel": "item", "href": f"./{name}", "type": "application/geo+json"} for name in names],
        }
        self.store.write_text(COLLECTION_FILE, json.dumps(collection, indent=1))
        return self.errors[0] if self.errors else None

    def close_and_say(self, started_at: float, log: Any) -> None:
        """``close``, with any failure said through ``log`` as a warning (the detections are written)."""
        from pipeline.errors import first_line

        try:
            error = self.close(started_at)
        except Exception as exc:
            error = f"STAC collection not written: {first_line(exc)}"
        if error:
            log(f"WARNING {error}")

    def _previous(self) -> dict[str, Any] | None:
        from pipeline.errors import PipelineError

        if COLLECTION_FILE not in self.store.list_names(COLLECTION_FILE):
            return None
        try:
            previous: dict[str, Any] = json.loads(self.store.read_bytes(COLLECTION_FILE))
            checked = (
                previous["extent"]["spatial"]["bbox"][0],
                previous["extent"]["temporal"]["interval"][0][0],
            )
            return previous if all(checked) else None
        except (ValueError, KeyError, IndexError, TypeError, PipelineError):
            return None  # unreadable: rebuilt from this run's items (the links still list every item)
