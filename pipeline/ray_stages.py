"""The only ``import ray`` in ``pipeline/``: the detect run as a Ray program.

Graph (Ray Data, streaming, bounded memory)::

    driver: list_scenes -> open headers (Ray tasks, one per scene)
            -> tile plan per scene -> groups of tile rows
    ray.data.from_items(groups)
      .flat_map(_read_group, num_cpus=0.5)         windowed reads; errors as rows
      .map_batches(TileDetector, ActorPoolStrategy, batch_size=B, num_gpus=0|1)
      .iter_batches()                               streamed back to the driver
    driver: collect tiles per scene -> merge_scene -> write GeoParquet + _run.json

Reads get ``num_cpus=0.5`` so Ray Data does not fuse them into the model
actor (which would serialise I/O and compute).  Errors are caught per scene
and travel as rows (Ray Data's default aborts a dataset on the first
failed block); a failed scene is listed in the report and the rest go on.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from pyproj import CRS

from pipeline.detection import clip_to_tile, describe_model, detect_tiles, load_model
from pipeline.errors import PipelineError
from pipeline.merging import MergeConfig, merge_scene
from pipeline.output import choose_output_crs, scene_output_path, write_scene_detections
from pipeline.reading import ReadConfig, open_scene, read_tiles
from pipeline.report import RunReport, SceneReport, new_run_id
from pipeline.sources import list_scenes
from pipeline.tiling import TilingConfig, group_tile_rows, tile_scene
from pipeline.types import Batch, SceneInfo, TileDetections, TileSpec

STATUS_OK, STATUS_NODATA, STATUS_ERROR = "ok", "nodata", "error"


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """Inference settings.

    Attributes:
        model: checkpoint directory (or ``standin:blobs``).
        batch_size: tiles per model call.
        num_actors: model actors (None: one per GPU, or one per 2 CPUs).
        cpus_per_actor: CPUs (and torch threads) per CPU actor.
        use_gpu: None: GPUs when the cluster has them; True/False forces.
        amp: float16 autocast on GPU.
    """

    model: str
    batch_size: int = 4
    num_actors: int | None = None
    cpus_per_actor: int = 1
    use_gpu: bool | None = None
    amp: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything one detect run needs."""

    source: str
    out_dir: str
    detect: DetectConfig
    tiling: TilingConfig = field(default_factory=TilingConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    to_crs: str | None = None
    overwrite: bool = False
    progress: bool = True


def block_cache_mb(scenes: Iterable[SceneInfo], cfg: RunConfig) -> int:
    """GDAL block cache (MB) that holds one row of tiles of the widest scene, 64..4096."""
    row_bytes = max(
        s.width_px * cfg.tiling.tile_size_px * len(cfg.read.bands) * np.dtype(s.dtype).itemsize
        for s in scenes
    )
    return int(min(4096, max(64, 2 * row_bytes // 2**20)))


def _open_headers(uris: list[str], read_cfg: ReadConfig) -> list[SceneInfo | str]:
    """Open every scene's header in Ray tasks; an error becomes its message."""
    import ray

    @ray.remote(num_cpus=0.25, max_retries=2)
    def open_one(uri: str) -> SceneInfo | str:
        try:
            return open_scene(uri, read_cfg)
        except PipelineError as exc:
            return str(exc)
        except Exception as exc:  # anything GDAL/boto throws: the scene fails alone
            return f"{uri}: cannot open: {type(exc).__name__}: {exc}"

    return list(ray.get([open_one.remote(u) for u in uris]))


def _read_group(
    item: dict[str, Any], read_cfg: ReadConfig, num_channels: int, tile_size_px: int
) -> list[dict[str, Any]]:
    """flat_map body: read one group of tiles; never raises."""
    tiles: list[TileSpec] = pickle.loads(item["tiles"])
    rows: list[dict[str, Any]] = []
    blank = np.zeros((num_channels, tile_size_px, tile_size_px), np.float32)

    def row(tile: TileSpec, status: str, image: np.ndarray, error: str = "") -> dict[str, Any]:
        return {
            "scene_uri": tile.scene_uri,
            "tile_index": tile.index,
            "status": status,
            "error": error,
            "image": image,
        }

    try:
        for read in read_tiles(tiles[0].scene_uri, tiles, read_cfg):
            if read.image is None:
                rows.append(row(read.tile, STATUS_NODATA, blank))
            else:
                rows.append(row(read.tile, STATUS_OK, read.image))
    except Exception as exc:  # the scene fails; report every tile not yet read
        message = (
            str(exc)
            if isinstance(exc, PipelineError)
            else f"{tiles[0].scene_uri}: {type(exc).__name__}: {exc}"
        )
        for tile in tiles[len(rows) :]:
            rows.append(row(tile, STATUS_ERROR, blank, message))
    return rows


class TileDetector:
    """map_batches actor: holds the model once, detects on batches of tiles."""

    def __init__(self, model_source: str, amp: bool, num_threads: int, use_gpu: bool) -> None:
        import torch

        torch.set_num_threads(max(1, num_threads))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.handle = load_model(model_source, device=self.device)
        self.amp = amp

    def __call__(self, batch: Batch) -> Batch:
        """Detect on the ``ok`` rows; pass ``nodata``/``error`` rows through."""
        statuses = batch["status"]
        ok = np.flatnonzero(statuses == STATUS_OK)
        dets = np.empty(len(statuses), dtype=object)
        dets[:] = [b"" for _ in range(len(statuses))]
        if len(ok):
            images = np.stack([batch["image"][i] for i in ok])
            h, w = images.shape[-2:]
            tiles = [_placeholder_tile(w, h) for _ in ok]
            for i, td in zip(
                ok,
                detect_tiles(
                    self.handle.model,
                    images,
                    tiles,
                    self.handle.band_config,
                    device=self.device,
                    amp=self.amp,
                ),
            ):
                packed = np.concatenate(
                    [td.boxes_xyxy_px, td.scores[:, None], td.labels[:, None].astype(np.float32)], axis=1
                ).astype(np.float32)
                dets[i] = packed.tobytes()
        return {
            "scene_uri": batch["scene_uri"],
            "tile_index": batch["tile_index"],
            "status": statuses,
            "error": batch["error"],
            "detections": dets,
        }


def _placeholder_tile(width_px: int, height_px: int) -> TileSpec:
    # The actor clips to the full tile; the driver clips again to the valid area.
    return TileSpec("", 0, 0, 0, width_px, height_px, width_px, height_px)


def _unpack(tile: TileSpec, packed: bytes) -> TileDetections:
    arr = np.frombuffer(packed, dtype=np.float32).reshape(-1, 6)
    return clip_to_tile(tile, arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


def _actor_resources(cfg: DetectConfig) -> tuple[int, float, float]:
    """(pool size, GPUs per actor, CPUs per actor) from the cluster's resources."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    use_gpu = gpus > 0 if cfg.use_gpu is None else cfg.use_gpu
    if use_gpu and gpus == 0:
        # asking for GPUs on a CPU-only cluster would wait ~30 min for them
        raise PipelineError("--gpus was given but the Ray cluster has no GPU; drop --gpus to run on CPUs")
    if use_gpu:
        return (cfg.num_actors or gpus), 1.0, 1.0
    # leave room for the read tasks and Ray Data's own work
    default = max(1, (cpus - 1) // max(1, cfg.cpus_per_actor))
    return (cfg.num_actors or default), 0.0, float(cfg.cpus_per_actor)


def _iter_results(groups: list[dict[str, Any]], cfg: RunConfig, num_channels: int) -> Iterator[Batch]:
    import ray
    from ray.data import ActorPoolStrategy

    pool, gpus, cpus = _actor_resources(cfg.detect)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items(groups, override_num_blocks=max(1, len(groups)))
    ds = ds.flat_map(
        _read_group,
        fn_kwargs={
            "read_cfg": cfg.read,
            "num_channels": num_channels,
            "tile_size_px": cfg.tiling.tile_size_px,
        },
        num_cpus=0.5,
    )
    ds = ds.map_batches(
        TileDetector,
        fn_constructor_kwargs={
            "model_source": cfg.detect.model,
            "amp": cfg.detect.amp,
            "num_threads": int(cpus),
            "use_gpu": gpus > 0,
        },
        batch_size=cfg.detect.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=pool),
        num_gpus=gpus,
        num_cpus=cpus,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def run_detect(cfg: RunConfig, *, log: Callable[[str], None] = print) -> RunReport:
    """Run detection over a source; Ray must already be initialised.

    Args:
        cfg: source, output directory, model and stage settings.
        log: where to print one-line messages.

    Returns:
        The run report (also written to ``OUT/_run.json``); ``num_failed``
        says whether any scene failed.
    """
    model = describe_model(cfg.detect.model)
    num_channels = model.band_config.num_channels
    if len(cfg.read.bands) != num_channels:
        raise PipelineError(
            f"--bands {','.join(map(str, cfg.read.bands))} gives {len(cfg.read.bands)} band(s) but the model "
            f"takes {num_channels} (its bands: {model.band_config.bands})"
        )
    run_id = new_run_id()
    report = RunReport(
        run_id=run_id,
        source=cfg.source,
        output=cfg.out_dir,
        model=model.model_id,
        config={
            "tiling": asdict(cfg.tiling),
            "read": asdict(cfg.read),
            "merge": asdict(cfg.merge),
            "detect": asdict(cfg.detect),
            "to_crs": cfg.to_crs,
        },
    )
    listing = list_scenes(cfg.source)
    for uri, reason in listing.skipped:
        report.add(SceneReport(uri, "skipped", error=f"{uri}: {reason}"))
    todo = []
    for uri in listing.scenes:
        existing = scene_output_path(cfg.out_dir, uri)
        if existing.exists() and not cfg.overwrite:
            report.add(SceneReport(uri, "exists", output=str(existing)))
        else:
            todo.append(uri)
    headers = _open_headers(todo, cfg.read)
    scenes: dict[str, SceneInfo] = {}
    for uri, header in zip(todo, headers):
        if isinstance(header, str):
            report.add(SceneReport(uri, "failed", error=header))
            log(f"FAILED {header}")
        else:
            scenes[uri] = header
    out_crs = choose_output_crs([s.crs_wkt for s in scenes.values()], cfg.to_crs) if scenes else None
    if scenes:
        cfg = replace(cfg, read=replace(cfg.read, block_cache_mb=block_cache_mb(scenes.values(), cfg)))
    report.crs = out_crs.to_string() if out_crs else None
    report.write(cfg.out_dir)

    plans = {uri: tile_scene(uri, s.width_px, s.height_px, cfg.tiling) for uri, s in scenes.items()}
    groups = [
        # pickled: Arrow has no type for a list of TileSpec, and a binary column keeps Ray quiet
        {"scene_uri": group[0].scene_uri, "tiles": pickle.dumps(group)}
        for tiles in plans.values()
        for group in group_tile_rows(tiles, cfg.tiling.tile_rows_per_task)
    ]
    received: dict[str, list[TileDetections]] = {uri: [] for uri in plans}
    counts: dict[str, dict[str, int]] = {uri: {"seen": 0, "nodata": 0} for uri in plans}
    errors: dict[str, str] = {}
    started = {uri: time.time() for uri in plans}
    total = sum(len(t) for t in plans.values())
    bar = _progress(total, cfg.progress)
    done_scenes = 0
    if groups:
        for batch in _iter_results(groups, cfg, num_channels):
            for uri, index, status, error, packed in zip(
                batch["scene_uri"], batch["tile_index"], batch["status"], batch["error"], batch["detections"]
            ):
                uri = str(uri)
                tile = plans[uri][int(index)]
                counts[uri]["seen"] += 1
                if status == STATUS_ERROR:
                    errors.setdefault(uri, str(error))
                elif status == STATUS_NODATA:
                    counts[uri]["nodata"] += 1
                else:
                    received[uri].append(_unpack(tile, bytes(packed)))
                bar.update(1)
                if counts[uri]["seen"] == len(plans[uri]):
                    done_scenes += 1
                    _finish_scene(
                        cfg,
                        report,
                        scenes[uri],
                        received.pop(uri),
                        counts[uri],
                        errors.get(uri),
                        model,
                        out_crs,
                        run_id,
                        started[uri],
                        len(plans[uri]),
                        log,
                    )
                    bar.set_postfix_str(f"scenes {done_scenes}/{len(plans)}")
    bar.close()
    report.finished_at = time.time()
    report.write(cfg.out_dir)
    return report


def _finish_scene(
    cfg: RunConfig,
    report: RunReport,
    scene: SceneInfo,
    tile_dets: list[TileDetections],
    counts: dict[str, int],
    error: str | None,
    model: Any,
    out_crs: CRS | None,
    run_id: str,
    started: float,
    num_tiles: int,
    log: Callable[[str], None],
) -> None:
    line = SceneReport(scene.uri, "failed", num_tiles=num_tiles, num_tiles_skipped_nodata=counts["nodata"])
    if error is not None:
        line.error = error
        log(f"FAILED {error}")
    else:
        try:
            merged = merge_scene(tile_dets, cfg.merge)
            assert out_crs is not None
            path = write_scene_detections(
                cfg.out_dir,
                scene,
                merged,
                class_names=model.class_names,
                out_crs=out_crs,
                model_id=model.model_id,
                run_id=run_id,
            )
            line.status, line.output, line.num_detections = "done", str(path), len(merged)
        except Exception as exc:
            line.error = f"{scene.uri}: merging/writing failed: {type(exc).__name__}: {exc}"
            log(f"FAILED {line.error}")
    line.seconds = round(time.time() - started, 3)
    report.add(line)
    report.write(cfg.out_dir)
