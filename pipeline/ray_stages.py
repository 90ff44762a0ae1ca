"""The only ``import ray`` in ``pipeline/``: the detect run as a Ray program.

Graph (Ray Data, streaming, bounded memory)::

    driver: list_scenes -> open headers (Ray tasks, one per scene)
            -> tile plan per scene -> groups of tile rows
    ray.data.from_items(groups)
      .flat_map(read_group, num_cpus=0.5)          windowed reads; errors as rows;
                                                    pixels as bytes in the scene's dtype
      .map_batches(TileDetector, ActorPoolStrategy, batch_size=B, num_gpus=0|1)
      .iter_batches()                               streamed back to the driver
    driver: collect tiles per scene; when a scene's last tile is back:
      prepare_scene (a Ray task per scene)          merge, score floor, encode GeoParquet
    driver: write each prepared scene (its own credentials), record it in _run.json, drop its claim

Reads get ``num_cpus=0.5`` so Ray Data does not fuse them into the model
actor (which would serialise I/O and compute).  Errors are caught per scene
and travel as rows (Ray Data's default aborts a dataset on the first
failed block); a failed scene is listed in the report and the rest go on.
The model arrives as a ``ModelLoader``: each actor calls ``loader.load``.

Tile rows carry their pixels as raw bytes in the scene's own dtype (a
uint8 tile is a quarter of its float32 size) with the dtype's name beside
them; ``nodata`` and ``error`` rows carry no pixels (``b""``).  Bytes rather
than a tensor column because Ray Data cannot concatenate tensor columns of
different dtypes (a uint8 and a uint16 scene in one batch) and a blank
float32 tile per skipped tile would be moved for nothing.  The model actor
rebuilds ``[C, H, W]`` from the tile's size and ``detect_tiles`` converts to
float32 on the model's device.  Each actor reports its torch thread count,
device and resolved precision; the run report lists them under
``config["model_actors"]``.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pyproj import CRS

from pipeline.claims import ClaimKeeper, try_claim
from pipeline.detection import ModelLoader, Precision
from pipeline.errors import PipelineError
from pipeline.finishing import FinishSettings, PreparedScene, SceneOutcome, prepare_scene, write_prepared
from pipeline.merging import MergeConfig
from pipeline.output import choose_output_crs, scene_output_name
from pipeline.reading import ReadConfig, open_scene, read_tiles, scene_extensions
from pipeline.report import RunReport, SceneReport, new_run_id
from pipeline.sources import list_scenes
from pipeline.storage import open_store
from pipeline.tiling import TilingConfig, check_scene_size, group_tile_rows, tile_scene
from pipeline.types import Batch, SceneInfo, TileDetections, TileSpec

STATUS_OK, STATUS_NODATA, STATUS_ERROR = "ok", "nodata", "error"
# a scene's merge + write task: short, mostly I/O and NumPy; small enough to
# run beside a model actor holding all but half a core and the read tasks
FINISH_TASK_CPUS = 0.25
Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """How the model actors run.

    Attributes:
        batch_size: tiles per model call.
        num_actors: model actors (None: one per GPU, else one per node).
        cpus_per_actor: CPUs (and torch threads) per CPU actor (None: all of
            a node's CPUs but the half a read task takes).
        use_gpu: None: GPUs when the cluster has them; True/False forces.
        precision: arithmetic of the network; ``auto`` is resolved in each
            actor (``pipeline.detection.resolve_precision``): bf16 on CPUs
            with native bfloat16, whose AP50 matched fp32 within 0.0002
            (tests/integration/test_precision.py, bench/RESULTS.md).
    """

    batch_size: int = 4
    num_actors: int | None = None
    cpus_per_actor: float | None = None
    use_gpu: bool | None = None
    precision: Precision = Precision.AUTO


@dataclass(frozen=True)
class DetectJob:
    """Everything one detect run needs.

    Attributes:
        source: folder, glob, file or ``s3://`` prefix of scenes.
        out_dir: output directory.
        model: loader of the model (``retinanet.predictor.CheckpointLoader``,
            ``pipeline.standin.StandinLoader``, or any ``ModelLoader``).
        detect: actor settings.
        tiling: tile size and overlap.
        read: bands, drivers, assumed CRS.
        merge: cross-tile merge settings.
        to_crs: output CRS (None: the scenes' own when they share one).
        min_score: keep detections scoring at least this; None: the model's
            calibrated per-class scores (``ModelInfo.score_thresholds``), or
            every detection when it has none.
        overwrite: redo scenes whose output exists.
        progress: show a progress bar.
    """

    source: str
    out_dir: str
    model: ModelLoader
    detect: DetectConfig = field(default_factory=DetectConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    to_crs: str | None = None
    min_score: float | None = None
    overwrite: bool = False
    progress: bool = True


def _open_headers(uris: list[str], read_cfg: ReadConfig, tiling: TilingConfig) -> list[SceneInfo | str]:
    """Open every scene's header in Ray tasks; an error (or a scene over the size limit) becomes its message."""
    import ray

    @ray.remote(num_cpus=0.25, max_retries=2)
    def open_one(uri: str) -> SceneInfo | str:
        try:
            info = open_scene(uri, read_cfg)
            check_scene_size(uri, info.width_px, info.height_px, tiling)
            return info
        except PipelineError as exc:
            return str(exc)
        except Exception as exc:  # anything GDAL/boto throws: the scene fails alone
            return f"{uri}: cannot open: {type(exc).__name__}: {exc}"

    refs = [open_one.remote(u) for u in uris]
    return [_get_or_message(ray, ref, uri) for ref, uri in zip(refs, uris)]


def _get_or_message(ray: Any, ref: Any, uri: str) -> SceneInfo | str:
    """One scene's header, or why its task died (GDAL crashed, out of memory): that scene fails alone."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return f"{uri}: opening its header crashed the worker: {_first_line(exc)}"


def _row(tile: TileSpec, status: str, image: np.ndarray | None = None, error: str = "") -> dict[str, Any]:
    """One tile row: its pixels as bytes in the scene's dtype, or none (``b""``) for nodata/error rows."""
    return {
        "scene_uri": tile.scene_uri,
        "tile_index": tile.index,
        "tile": pickle.dumps(tile),
        "status": status,
        "error": error,
        "pixels": b"" if image is None else np.ascontiguousarray(image).tobytes(),
        "dtype": "" if image is None else str(image.dtype),
    }


def tile_pixels(tile: TileSpec, pixels: bytes, dtype: str, num_channels: int) -> np.ndarray:
    """Inverse of ``_row``'s packing: ``[C, H, W]`` in ``dtype`` (a read-only view of ``pixels``)."""
    return np.frombuffer(pixels, dtype=np.dtype(dtype)).reshape(num_channels, tile.height_px, tile.width_px)


def read_group(item: dict[str, Any], read_cfg: ReadConfig) -> list[dict[str, Any]]:
    """flat_map body: read one group of tiles of a scene into rows; never raises.

    Args:
        item: ``{"tiles": pickled list[TileSpec]}`` of one scene.
        read_cfg: bands and drivers.

    Returns:
        One row per tile: status ``ok`` with its pixels (bytes, scene dtype),
        ``nodata`` (all nodata, not inferred) or ``error`` with the scene's
        error message; those two carry no pixels.
    """
    tiles: list[TileSpec] = pickle.loads(item["tiles"])
    rows: list[dict[str, Any]] = []
    try:
        for read in read_tiles(tiles[0].scene_uri, tiles, read_cfg):
            rows.append(_row(read.tile, STATUS_OK if read.image is not None else STATUS_NODATA, read.image))
    except Exception as exc:  # the scene fails; report every tile not yet read
        message = (
            str(exc)
            if isinstance(exc, PipelineError)
            else f"{tiles[0].scene_uri}: {type(exc).__name__}: {exc}"
        )
        rows.extend(_row(tile, STATUS_ERROR, error=message) for tile in tiles[len(rows) :])
    return rows


def pack_detections(td: TileDetections) -> bytes:
    """float32 ``[N, 6]`` rows (x1, y1, x2, y2, score, label) as bytes: what actors send back."""
    packed = np.concatenate(
        [td.boxes_xyxy_px, td.scores[:, None], td.labels[:, None].astype(np.float32)], axis=1
    )
    return packed.astype(np.float32).tobytes()


def unpack_detections(tile: TileSpec, packed: bytes) -> TileDetections:
    """Inverse of ``pack_detections``."""
    arr = np.frombuffer(packed, dtype=np.float32).reshape(-1, 6)
    return TileDetections(tile, arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


class TileDetector:
    """map_batches actor: holds the model once, detects on batches of tiles.

    Args:
        loader: the model recipe (``load`` runs here, in the actor).
        precision: network arithmetic (``auto`` resolved for this actor's device).
        num_threads: torch intra-op threads (the actor's CPUs, rounded up).
        use_gpu: run on CUDA when the actor has a GPU.
        num_channels: C of the tiles.
    """

    def __init__(
        self, loader: ModelLoader, precision: Precision, num_threads: int, use_gpu: bool, num_channels: int
    ) -> None:
        import os

        import torch

        from pipeline.detection import prepare_model, resolve_precision

        torch.set_num_threads(max(1, num_threads))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = prepare_model(loader.load(self.device), self.device)
        self.precision = resolve_precision(precision, self.device)
        self.num_channels = num_channels
        self.node_id, self.actor_id = _where_am_i()
        # what this actor really runs with: the driver puts it in the run report
        self.about = f"node={self.node_id[:12]} pid={os.getpid()} device={self.device} torch_threads={torch.get_num_threads()} precision={self.precision.value}"

    def __call__(self, batch: Batch) -> Batch:
        """Detect on the ``ok`` rows; pass ``nodata``/``error`` rows through."""
        from pipeline.detection import detect_tiles

        statuses = batch["status"]
        ok = np.flatnonzero(statuses == STATUS_OK)
        packed = np.empty(len(statuses), dtype=object)
        packed[:] = [b""] * len(statuses)
        if len(ok):
            tiles = [pickle.loads(batch["tile"][i]) for i in ok]
            images = np.stack(
                [
                    tile_pixels(tile, batch["pixels"][i], str(batch["dtype"][i]), self.num_channels)
                    for tile, i in zip(tiles, ok)
                ]
            )
            found = detect_tiles(self.model, images, tiles, device=self.device, precision=self.precision)
            for i, td in zip(ok, found):
                packed[i] = pack_detections(td)
        return {
            "scene_uri": batch["scene_uri"],
            "tile_index": batch["tile_index"],
            "status": statuses,
            "error": batch["error"],
            "detections": packed,
            "actor": np.full(len(statuses), self.about),
            "node_id": np.full(len(statuses), self.node_id),
            "actor_id": np.full(len(statuses), self.actor_id),
        }


def _where_am_i() -> tuple[str, str]:
    """(node id, actor id) of this process in Ray; ``("local", "")`` outside Ray (unit tests)."""
    import ray

    if not ray.is_initialized():
        return "local", ""
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_actor_id() or ""


def actor_resources(cfg: DetectConfig, nodes: list[dict[str, Any]]) -> tuple[int, float, float]:
    """(pool size, GPUs per actor, CPUs per actor) for the cluster's alive ``nodes`` (``ray.nodes()``).

    GPU clusters get one actor per GPU.  CPU-only clusters get one actor per
    node holding all its CPUs but the half a read task needs, so torch uses
    (nearly) every core; ``cpus_per_actor`` / ``num_actors`` override.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpus = int(sum(r.get("GPU", 0) for r in alive))
    use_gpu = gpus > 0 if cfg.use_gpu is None else cfg.use_gpu
    if use_gpu and gpus == 0:
        # asking for GPUs on a CPU-only cluster would wait ~30 min for them
        raise PipelineError("--gpus was given but the Ray cluster has no GPU; drop --gpus to run on CPUs")
    if use_gpu:
        return (cfg.num_actors or gpus), 1.0, 1.0
    node_cpus = [r.get("CPU", 0) for r in alive if r.get("CPU", 0) > 0] or [1.0]
    cpus = cfg.cpus_per_actor or max(1.0, min(node_cpus) - 0.5)
    return (cfg.num_actors or len(node_cpus)), 0.0, float(cpus)


def _iter_results(groups: list[dict[str, Any]], job: DetectJob, num_channels: int) -> Iterator[Batch]:
    import math

    import ray
    from ray.data import ActorPoolStrategy

    pool, gpus, cpus = actor_resources(job.detect, ray.nodes())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items(groups, override_num_blocks=max(1, len(groups)))
    ds = ds.flat_map(read_group, fn_kwargs={"read_cfg": job.read}, num_cpus=0.5)
    ds = ds.map_batches(
        TileDetector,
        fn_constructor_kwargs={
            "loader": job.model,
            "precision": job.detect.precision,
            "num_threads": math.ceil(cpus),
            "use_gpu": gpus > 0,
            "num_channels": num_channels,
        },
        batch_size=job.detect.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=pool),
        num_gpus=gpus,
        num_cpus=cpus,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


@dataclass
class _SceneTally:
    """What the driver has received of one scene's tiles."""

    scene: SceneInfo
    tiles: Any  # the scene's tile plan: indexable by tile index, with len()
    received: list[TileDetections] = field(default_factory=list)
    seen: int = 0
    nodata: int = 0
    error: str | None = None
    started: float = field(default_factory=time.time)
    tiles_by_node: dict[str, int] = field(default_factory=dict)
    actor_ids: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.seen == len(self.tiles)


def _new_report(job: DetectJob) -> RunReport:
    return RunReport(
        run_id=new_run_id(),
        source=job.source,
        output=job.out_dir,
        model=job.model.info.model_id,
        config={
            "tiling": asdict(job.tiling),
            "read": asdict(job.read),
            "merge": asdict(job.merge),
            "detect": asdict(job.detect),
            "to_crs": job.to_crs,
            "min_score": job.min_score,
            "score_thresholds": dict(zip(job.model.info.class_names, job.model.info.score_thresholds or ())),
        },
    )


def _scenes_to_do(job: DetectJob, claims: ClaimKeeper, report: RunReport, log: Log) -> dict[str, SceneInfo]:
    """List the source, skip scenes done or claimed by a live run, claim and open the rest."""
    listing = list_scenes(job.source, extensions=scene_extensions(job.read.drivers))
    report.num_listed = len(listing.scenes) + len(listing.skipped)
    for uri, reason in listing.skipped:
        report.add(SceneReport(uri, "skipped", error=f"{uri}: {reason}"))
    todo = [uri for uri in listing.scenes if not _done_or_held(job, claims, report, uri)]
    scenes: dict[str, SceneInfo] = {}
    for uri, header in zip(todo, _open_headers(todo, job.read, job.tiling)):
        if isinstance(header, str):
            report.add(SceneReport(uri, "failed", error=header))
            claims.drop(scene_output_name(uri))
            log(f"FAILED {header}")
        else:
            scenes[uri] = header
    return scenes


def _done_or_held(job: DetectJob, claims: ClaimKeeper, report: RunReport, uri: str) -> bool:
    """Record ``uri`` as ``exists`` or as held by another live run; else claim it for this run."""
    store, name = claims.store, scene_output_name(uri)
    if not job.overwrite and store.exists(name):
        report.add(SceneReport(uri, "exists", output=store.uri(name)))
        return True
    held = try_claim(store, name, report.run_id)
    if held is not None:
        until = time.strftime("%H:%M:%S", time.localtime(held.expires_at))
        report.add(
            SceneReport(
                uri,
                "skipped",
                error=f"{uri}: run {held.run_id} (pid {held.pid} on {held.host}) is processing it "
                f"(claim valid until {until}); re-run this command later to pick up what it leaves",
            )
        )
        return True
    if not job.overwrite and store.exists(name):  # finished by another run while we looked
        claims.drop(name)
        report.add(SceneReport(uri, "exists", output=store.uri(name)))
        return True
    claims.hold(name)
    return False


def _check_bands(job: DetectJob) -> None:
    info = job.model.info
    if len(job.read.bands) != len(info.bands):
        raise PipelineError(
            f"--bands {','.join(map(str, job.read.bands))} gives {len(job.read.bands)} band(s) but the model "
            f"takes {len(info.bands)} (its bands: {info.bands})"
        )


def run_detect(job: DetectJob, *, log: Log = print) -> RunReport:
    """Run detection over a source; Ray must already be initialised.

    Args:
        job: source, output directory, model loader and stage settings.
        log: where to print one-line messages (failed scenes).

    Returns:
        The run report (also written to ``OUT/_run.json``); ``num_failed``
        says whether any scene failed.
    """
    _check_bands(job)
    store = open_store(job.out_dir)
    report = _new_report(job)
    claims = ClaimKeeper(store, report.run_id)  # renews this run's claims until the run ends
    try:
        _run_scenes(job, claims, report, log)
    finally:
        claims.stop()
    report.finish()
    report.storage_retries = store.retries
    report.write(store)
    return report


def _run_scenes(job: DetectJob, claims: ClaimKeeper, report: RunReport, log: Log) -> None:
    """Claim and open the scenes, then detect on them; a broken run marks what it left as failed."""
    store = claims.store
    scenes = _scenes_to_do(job, claims, report, log)
    report.mark("scenes_opened")
    out_crs = choose_output_crs([s.crs_wkt for s in scenes.values()], job.to_crs) if scenes else None
    report.crs = out_crs.to_string() if out_crs else None
    report.write(store)
    if scenes:
        assert out_crs is not None
        try:
            _detect_scenes(job, claims, scenes, out_crs, report, log)
        except Exception as exc:  # the run itself broke (e.g. no model actor could start)
            _abort(claims, report, scenes, f"run aborted: {_first_line(exc)}", log)


def _first_line(exc: BaseException) -> str:
    """The root cause of ``exc`` in one line: Ray wraps a worker's error in pages of context."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (causes[-1] if causes else next((line for line in lines if line), ""))[:500]


def _abort(
    claims: ClaimKeeper, report: RunReport, scenes: dict[str, SceneInfo], reason: str, log: Log
) -> None:
    """Mark every scene the run did not finish as failed with ``reason``."""
    log(f"FAILED {reason}")
    for uri in scenes:
        if uri not in report.scenes:
            report.add(SceneReport(uri, "failed", error=f"{uri}: {reason}"))
            claims.drop(scene_output_name(uri))


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def _detect_scenes(
    job: DetectJob,
    claims: ClaimKeeper,
    scenes: dict[str, SceneInfo],
    out_crs: CRS,
    report: RunReport,
    log: Log,
) -> None:
    """Stream every tile of ``scenes`` through the model; finish each scene as its last tile returns."""
    tallies = {
        uri: _SceneTally(s, tile_scene(uri, s.width_px, s.height_px, job.tiling)) for uri, s in scenes.items()
    }
    groups = [
        # pickled: Arrow has no type for a list of TileSpec, and a binary column keeps Ray quiet
        {"scene_uri": uri, "tiles": pickle.dumps(group)}
        for uri, tally in tallies.items()
        for group in group_tile_rows(
            tally.tiles, job.tiling.tile_rows_per_task, job.tiling.max_tiles_per_task
        )
    ]
    if not groups:
        return
    bar = _progress(sum(len(t.tiles) for t in tallies.values()), job.progress)
    finisher = _Finisher(job, claims, report, out_crs, bar.write if job.progress else log)
    finisher.on_finished = lambda n: bar.set_postfix_str(f"scenes {n}/{len(scenes)}")
    try:
        _stream_tiles(job, groups, tallies, finisher, bar, report)
        with finisher.lock:
            report.mark("last_tiles")
    finally:  # what was submitted is written and recorded, even when the stream broke
        finisher.close()
        bar.close()


def _stream_tiles(
    job: DetectJob,
    groups: list[dict[str, Any]],
    tallies: dict[str, _SceneTally],
    finisher: _Finisher,
    bar: Any,
    report: RunReport,
) -> None:
    """Receive every tile's detections; hand each scene to ``finisher`` as its last tile arrives."""
    actors = report.config.setdefault("model_actors", [])
    for batch in _iter_results(groups, job, len(job.read.bands)):
        with finisher.lock:  # the collector thread writes the report
            report.mark("first_tiles")
            actors.extend(sorted(set(map(str, batch["actor"])) - set(actors)))
        for uri, index, status, error, packed, node, actor in zip(
            batch["scene_uri"],
            batch["tile_index"],
            batch["status"],
            batch["error"],
            batch["detections"],
            batch["node_id"],
            batch["actor_id"],
        ):
            tally = tallies[str(uri)]
            _receive(tally, int(index), str(status), str(error), bytes(packed))
            if str(status) == STATUS_OK:  # inferred by this node's actor
                tally.tiles_by_node[str(node)] = tally.tiles_by_node.get(str(node), 0) + 1
                tally.actor_ids.add(str(actor))
            bar.update(1)
            if tally.complete:
                finisher.submit(tallies.pop(str(uri)))


def _receive(tally: _SceneTally, index: int, status: str, error: str, packed: bytes) -> None:
    tally.seen += 1
    if status == STATUS_ERROR:
        tally.error = tally.error or error
    elif status == STATUS_NODATA:
        tally.nodata += 1
    else:
        tally.received.append(unpack_detections(tally.tiles[index], packed))


class _Finisher:
    """Prepares each completed scene in a Ray task, writes it from the driver, records the outcomes.

    A collector thread waits for the tasks and writes each scene as soon as
    its task returns, while the driver's main thread keeps streaming tiles;
    ``close`` waits for the rest.

    ``finishing.prepare_scene`` (merge, score floor, georeference, encode: the
    CPU work) runs on the cluster, so a bucket of many scenes never waits on
    the driver and scenes are merged while the next ones are inferred.  The
    driver writes the encoded bytes through its own store
    (``finishing.write_prepared``), so workers need no credentials for the
    output.  A task whose worker dies is retried (it only computes); if it
    still dies, that scene fails alone.
    """

    def __init__(
        self, job: DetectJob, claims: ClaimKeeper, report: RunReport, out_crs: CRS, log: Log
    ) -> None:
        import ray

        self.ray = ray
        self.task = ray.remote(num_cpus=FINISH_TASK_CPUS, max_retries=2)(prepare_scene)
        self.settings = FinishSettings(
            out_dir=job.out_dir,
            out_crs_wkt=out_crs.to_wkt(),
            merge=job.merge,
            class_names=job.model.info.class_names,
            min_score_per_class=_min_scores(job),
            model_id=job.model.info.model_id,
            run_id=report.run_id,
            replace=job.overwrite,
        )
        self.claims, self.report, self.log = claims, report, log
        self.pending: dict[Any, _SceneTally] = {}
        self.num_finished = 0
        self.on_finished: Callable[[int], None] = lambda n: None
        # the collector thread writes each scene as soon as its task returns; the lock
        # guards pending, the report and num_finished between it and the streaming loop
        self.lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._collect_loop, name="aerialdet-finisher", daemon=True)
        self._thread.start()

    def submit(self, tally: _SceneTally) -> None:
        """Start finishing a scene whose last tile came back (a failed scene is recorded at once)."""
        with self.lock:
            if tally.error is not None:
                self._record(tally, SceneOutcome("failed", error=tally.error))
            else:
                self.pending[self.task.remote(tally.scene, tally.received, self.settings)] = tally
        self._wake.set()

    def close(self) -> None:
        """Wait until every submitted scene is written and recorded; re-raise what broke the collector."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def _collect_loop(self) -> None:
        """Until closed and drained: wait for returned tasks, write and record their scenes."""
        try:
            while True:
                with self.lock:
                    refs = list(self.pending)
                if not refs:
                    if self._stop.is_set():
                        return
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=0.5)
                for ref in ready:
                    self._finish(ref)
        except BaseException as exc:  # Ray went away: close() re-raises it in the driver's thread
            self._failure = exc

    def _finish(self, ref: Any) -> None:
        """Write one returned scene (a crashed task fails that scene alone) and record it."""
        with self.lock:
            tally = self.pending[ref]
        try:
            prepared: PreparedScene = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            error = f"{tally.scene.uri}: merging crashed its worker: {_first_line(exc)}"
            prepared = PreparedScene(b"", error=error)
        outcome = write_prepared(self.claims.store, tally.scene, prepared, self.settings)
        with self.lock:
            del self.pending[ref]
            self._record(tally, outcome)
        self.on_finished(self.num_finished)

    def _record(self, tally: _SceneTally, outcome: SceneOutcome) -> None:
        """The scene's line in the report; its claim is dropped and the report rewritten."""
        scene, store = tally.scene, self.claims.store
        line = SceneReport(
            scene.uri,
            outcome.status,
            output=outcome.output,
            error=outcome.error,
            num_tiles=len(tally.tiles),
            num_tiles_skipped_nodata=tally.nodata,
            num_detections=outcome.num_detections,
            seconds=round(time.time() - tally.started, 3),
            tiles_by_node=dict(sorted(tally.tiles_by_node.items())),
            actor_ids=sorted(tally.actor_ids),
        )
        if line.error:
            self.log(f"FAILED {line.error}")
        self.report.add(line)
        self.num_finished += 1
        self.report.storage_retries = store.retries
        try:
            self.claims.drop(scene_output_name(scene.uri))
            self.report.write(store)
        except Exception as exc:  # the scene is written; the next report write (or the final one) records it
            self.log(f"WARNING {scene.uri}: cannot update the run report: {type(exc).__name__}: {exc}")


def _min_scores(job: DetectJob) -> tuple[float, ...] | None:
    """Per-class score floor: ``--min-score`` for all, else the model's calibrated scores, else none."""
    if job.min_score is not None:
        return (job.min_score,) * len(job.model.info.class_names)
    if job.model.info.score_thresholds is not None:
        return tuple(float(t) for t in job.model.info.score_thresholds)
    return None
