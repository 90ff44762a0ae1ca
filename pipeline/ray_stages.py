"""The only ``import ray`` in ``pipeline/``: the detect run's executor on a Ray cluster.

``pipeline.run`` drives the run; ``RayExecutor`` does its work::

    open_headers   Ray tasks, several scenes each (num_cpus=0.25)
    submit_tiles   read task per tile group (num_cpus=0.5): windowed reads,
                   pixels in the scene's dtype, errors as rows; its result
                   stays in the object store and goes straight to a model actor
    model actors   TileDetector, one per node (soft node affinity) or per GPU,
                   restarted when they die; a call on a dead actor is sent again
                   to another actor
    submit_finish  prepare_scene task per scene (num_cpus=0.25): merge, score
                   floor, encode; the driver writes the bytes it returns

Why Ray core tasks and actors rather than Ray Data: Ray Data wants its input
up front (``from_items``), and a bucket listed lazily, a bounded window of
scenes at a time, is a stream.  Here the driver keeps at most
``max_groups_in_flight`` groups read or being read, and at most two calls on
each actor, so memory is bounded by the window, not the bucket, and reads
overlap inference.  The actors start when the executor is made, before the
source is listed, so the model loads while headers are read.

Reads ask for ``num_cpus=0.5``; a CPU actor takes the rest of its node
(node CPUs - 0.5, at least 0.5: a 1-CPU node runs an actor and a read), so a
run progresses on any cluster shape; torch runs on that many threads,
rounded up.  The pool comes from ``ray.nodes()`` (one actor per GPU, else one
per node): asking for GPUs on a CPU-only cluster would wait ~30 minutes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.detection import ModelLoader, Precision
from pipeline.errors import PipelineError, first_line
from pipeline.executor import Finished, TileGroup, TileResult, TileStatus
from pipeline.finishing import FinishSettings, PreparedScene, prepare_scene
from pipeline.job import DetectConfig, DetectJob
from pipeline.reading import ReadConfig, read_tiles
from pipeline.scene_headers import open_headers
from pipeline.types import SceneInfo, TileDetections, TileSpec

if TYPE_CHECKING:  # the driver's side: workers unpickling a task or the actor never import the lifecycle
    from pipeline.report import RunRecord

__all__ = [
    "DetectConfig",
    "DetectJob",
    "RayExecutor",
    "TileDetector",
    "actor_resources",
    "open_headers",
    "run_detect",
]

READ_TASK_CPUS = 0.5
# a scene's merge + encode task and a header task: short, mostly NumPy and I/O;
# small enough to run beside a model actor and a read task
FINISH_TASK_CPUS = 0.25
HEADERS_PER_TASK = 4
CALLS_PER_ACTOR = 2  # one running, one queued: the actor never waits for the driver


@dataclass(frozen=True, slots=True)
class TileRow:
    """One tile read: its pixels ``[C, H, W]`` in the scene's dtype, or none (nodata, error)."""

    tile: TileSpec
    status: TileStatus
    pixels: np.ndarray | None = None
    error: str = ""


def read_group(tiles: Sequence[TileSpec], read_cfg: ReadConfig) -> list[TileRow]:
    """Read task body: one group of tiles of a scene; never raises.

    Returns:
        One row per tile: ``ok`` with its pixels, ``nodata`` (all nodata, not
        inferred) or ``error`` with the scene's message for every tile not read.
    """
    rows: list[TileRow] = []
    try:
        for read in read_tiles(tiles[0].scene_uri, tiles, read_cfg):
            status = TileStatus.OK if read.image is not None else TileStatus.NODATA
            rows.append(TileRow(read.tile, status, read.image))
    except Exception as exc:  # the scene fails; every tile not yet read says why
        message = str(exc) if isinstance(exc, PipelineError) else f"{tiles[0].scene_uri}: {first_line(exc)}"
        rows.extend(TileRow(tile, TileStatus.ERROR, error=message) for tile in tiles[len(rows) :])
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
    """Model actor: holds the model once, detects on the rows of read tasks.

    Args:
        loader: the model recipe (``load`` runs here, in the actor).
        precision: network arithmetic (``auto`` resolved for this actor's device).
        num_threads: torch intra-op threads (the actor's CPUs, rounded up).
        use_gpu: run on CUDA when the actor has a GPU.
        batch_size: tiles per model call.
    """

    def __init__(
        self, loader: ModelLoader, precision: Precision, num_threads: int, use_gpu: bool, batch_size: int
    ) -> None:
        import torch

        from pipeline.detection import prepare_model, resolve_precision

        torch.set_num_threads(max(1, num_threads))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = prepare_model(loader.load(self.device), self.device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.node_id = _node_id()
        # what this actor really runs with: the driver puts it in the run report
        self.about = (
            f"node={self.node_id[:12]} pid={os.getpid()} device={self.device} "
            f"torch_threads={torch.get_num_threads()} precision={self.precision.value}"
        )

    def ready(self) -> tuple[str, str]:
        """``(self-description, node id)`` once the model is loaded (the driver's health probe)."""
        return self.about, self.node_id

    def detect(self, *groups: list[TileRow]) -> list[tuple[str, int, str, str, bytes]]:
        """Detect on the ``ok`` rows of ``groups``; nodata/error rows pass through.

        Returns:
            ``(scene_uri, tile_index, status, error, packed detections)`` per row.
        """
        from pipeline.detection import batches_by_shape, detect_tiles

        rows = [row for group in groups for row in group]
        ok = [row for row in rows if row.status is TileStatus.OK]
        packed: dict[int, bytes] = {}
        for batch in batches_by_shape(ok, lambda row: row.pixels.shape, self.batch_size):  # type: ignore[union-attr]
            images = np.stack([row.pixels for row in batch if row.pixels is not None])  # (B, C, H, W)
            found = detect_tiles(
                self.model, images, [row.tile for row in batch], device=self.device, precision=self.precision
            )
            packed.update((id(row), pack_detections(td)) for row, td in zip(batch, found))
        return [
            (row.tile.scene_uri, row.tile.index, row.status.value, row.error, packed.get(id(row), b""))
            for row in rows
        ]


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def actor_resources(cfg: DetectConfig, nodes: list[dict[str, Any]]) -> tuple[int, float, float]:
    """(pool size, GPUs per actor, CPUs per actor) for the cluster's ``nodes`` (``ray.nodes()``).

    GPU clusters get one actor per GPU.  CPU-only clusters get one actor per
    node that has CPUs, holding all the smallest such node's CPUs but the half
    a read task needs (at least half a CPU, so a 1-CPU node runs both);
    ``cpus_per_actor`` / ``num_actors`` override.

    Example:
        >>> actor_resources(DetectConfig(), [{"Alive": True, "Resources": {"CPU": 1.0}}] * 2)
        (2, 0.0, 0.5)
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
    cpus = cfg.cpus_per_actor or max(READ_TASK_CPUS, min(node_cpus) - READ_TASK_CPUS)
    return (cfg.num_actors or len(node_cpus)), 0.0, float(cpus)


def _cpu_node_ids(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["NodeID"] for n in nodes if n.get("Alive", True) and n.get("Resources", {}).get("CPU", 0) > 0]


@dataclass
class _Call:
    """A detect call in flight on an actor: which actor, and the read results it was given."""

    actor: int
    reads: list[tuple[Any, TileGroup]]


class RayExecutor:
    """``pipeline.run.Executor`` on a Ray cluster (Ray must be initialised).

    Args:
        job: the run's settings (model loader, read and tiling settings, actor settings).
        max_groups_in_flight: tile groups read or being read at once (None: three per actor, at least 4).
    """

    def __init__(self, job: DetectJob, *, max_groups_in_flight: int | None = None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.job = ray, job
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        pool, gpus, cpus = actor_resources(job.detect, nodes)
        actor_class: Any = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0)(
            TileDetector
        )
        node_ids = _cpu_node_ids(nodes) if gpus == 0 else []
        self.actors: list[Any] = []  # ray.actor.ActorHandle[TileDetector]; Ray's stubs type .remote poorly
        for i in range(pool):
            options: dict[str, Any] = {}
            if i < len(node_ids):  # one actor per node; soft: a restarted actor may go elsewhere
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_ids[i], soft=True)
            args = (job.model, job.detect.precision, math.ceil(cpus), gpus > 0, job.detect.batch_size)
            self.actors.append(actor_class.options(**options).remote(*args))
        self.busy = [0] * pool
        self.healthy = [False] * pool  # until its first probe answers
        self.about = [""] * pool  # each actor's self-description, from its last probe
        self.node_ids = [""] * pool  # where each actor runs now (from its last probe)
        self.actor_ids = [actor._actor_id.hex() for actor in self.actors]
        self.probes = {actor.ready.remote(): i for i, actor in enumerate(self.actors)}
        self.read_task: Any = ray.remote(num_cpus=READ_TASK_CPUS, max_retries=3)(read_group)
        self.header_task: Any = ray.remote(num_cpus=FINISH_TASK_CPUS, max_retries=2)(open_headers)
        self.finish_task: Any = ray.remote(num_cpus=FINISH_TASK_CPUS, max_retries=2)(prepare_scene)
        self.max_groups = max_groups_in_flight or max(4, 3 * pool)
        self.reads: dict[Any, TileGroup] = {}
        self.ready_reads: list[tuple[Any, TileGroup]] = []
        self.calls: dict[Any, _Call] = {}
        self.finishes: dict[Any, str] = {}

    # -- Executor ---------------------------------------------------------------------------------------

    def open_headers(self, uris: Sequence[str]) -> list[SceneInfo | str]:
        """Headers in tasks of ``HEADERS_PER_TASK`` scenes; a crashed task fails its scenes alone."""
        chunks = [list(uris[i : i + HEADERS_PER_TASK]) for i in range(0, len(uris), HEADERS_PER_TASK)]
        refs = [self.header_task.remote(chunk, self.job.read, self.job.tiling) for chunk in chunks]
        out: list[SceneInfo | str] = []
        for ref, chunk in zip(refs, chunks):
            try:
                out.extend(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:
                out.extend(
                    f"{uri}: opening its header crashed the worker: {first_line(exc)}" for uri in chunk
                )
        return out

    def has_room(self) -> bool:
        """Fewer than ``max_groups`` groups read, being read or waiting for an actor."""
        return (
            len(self.reads) + len(self.ready_reads) + sum(len(c.reads) for c in self.calls.values())
            < self.max_groups
        )

    def submit_tiles(self, group: TileGroup) -> None:
        """Start the group's read task; its result goes to an actor when one is free."""
        self.reads[self.read_task.remote(group.tiles, self.job.read)] = group

    def submit_finish(self, scene: SceneInfo, tiles: list[TileDetections], settings: FinishSettings) -> None:
        """Start the scene's merge + encode task."""
        self.finishes[self.finish_task.remote(scene, tiles, settings)] = scene.uri

    def wait(self, timeout_s: float) -> list[TileResult | Finished]:
        """What came back, waiting up to ``timeout_s`` for the first of it."""
        self._dispatch()
        refs = [*self.reads, *self.calls, *self.finishes, *self.probes]
        if not refs:
            return []
        done, _ = self.ray.wait(refs, num_returns=1, timeout=timeout_s, fetch_local=False)
        if done:  # and whatever else is ready by now
            done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        events: list[TileResult | Finished] = []
        for ref in done:
            if ref in self.reads:
                self.ready_reads.append((ref, self.reads.pop(ref)))
            elif ref in self.probes:
                self._probed(ref)
            elif ref in self.calls:
                events.extend(self._called(ref))
            else:
                events.append(self._finished(ref))
        self._dispatch()
        return events

    def close(self) -> None:
        """End the actors (their tasks in flight with them)."""
        for actor in self.actors:
            self.ray.kill(actor)

    # -- internals --------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Give read results to healthy actors with room: about ``batch_size`` tiles a call."""
        while self.ready_reads:
            free = [i for i in range(len(self.actors)) if self.healthy[i] and self.busy[i] < CALLS_PER_ACTOR]
            if not free:
                return
            actor = min(free, key=lambda i: self.busy[i])
            reads: list[tuple[Any, TileGroup]] = []
            num_tiles = 0
            while self.ready_reads and (not reads or num_tiles < self.job.detect.batch_size):
                ref, group = self.ready_reads.pop(0)
                reads.append((ref, group))
                num_tiles += len(group.tiles)
            call = self.actors[actor].detect.remote(*(ref for ref, _ in reads))
            self.calls[call] = _Call(actor, reads)
            self.busy[actor] += 1

    def _probed(self, ref: Any) -> None:
        index = self.probes.pop(ref)
        try:
            self.about[index], self.node_ids[index] = self.ray.get(ref)
            self.healthy[index] = True
        except self.ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:
                raise PipelineError(f"the model actor could not start: {first_line(exc)}") from None
            self.probes[self.actors[index].ready.remote()] = index  # restarting: ask again

    def _called(self, ref: Any) -> list[TileResult]:
        call = self.calls.pop(ref)
        self.busy[call.actor] -= 1
        try:
            rows = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:
                raise PipelineError(f"the model actor could not start: {first_line(exc)}") from None
            # the actor died (node lost, crash): its reads go to another actor, this one is probed
            self.healthy[call.actor] = False
            self.probes[self.actors[call.actor].ready.remote()] = call.actor
            self.ready_reads[:0] = call.reads
            return []
        except self.ray.exceptions.RayError as exc:  # a read crashed its worker, or the model raised
            return [
                TileResult(
                    group.scene_uri, tile.index, TileStatus.ERROR, f"{group.scene_uri}: {first_line(exc)}"
                )
                for _, group in call.reads
                for tile in group.tiles
            ]
        tiles = {(t.scene_uri, t.index): t for _, group in call.reads for t in group.tiles}
        about = self.about[call.actor]
        return [
            TileResult(
                uri,
                index,
                TileStatus(status),
                error,
                unpack_detections(tiles[(uri, index)], packed) if status == TileStatus.OK.value else None,
                node_id=self.node_ids[call.actor],
                actor=about,
                actor_id=self.actor_ids[call.actor],
            )
            for uri, index, status, error, packed in rows
        ]

    def _finished(self, ref: Any) -> Finished:
        uri = self.finishes.pop(ref)
        try:
            prepared: PreparedScene = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            prepared = PreparedScene(b"", error=f"{uri}: merging crashed its worker: {first_line(exc)}")
        return Finished(uri, prepared)


def run_detect(job: DetectJob, *, log: Any = print) -> RunRecord:
    """Run detection over a source on the Ray cluster this process is connected to.

    Args:
        job: source, output directory, model loader and stage settings.
        log: where to print one-line messages (failed scenes).

    Returns:
        The run's record (also written to ``OUT/_run.json`` and its scene
        lines); ``num_failed`` says whether any scene failed.
    """
    from pipeline.run_progress import run_job  # here: read tasks and actors import this module without it

    executor = RayExecutor(job)
    return run_job(job, executor, log=log)
