"""``aerialdet detect`` / ``python -m jobs.detect``: scenes -> GeoParquet detections."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from jobs.options import (
    LOG_DIR,
    UserError,
    address_option,
    bands_option,
    gsd_option,
    min_score_option,
    out_option,
    overwrite_option,
    precision_option,
    progress_option,
    rescale_option,
    run_standalone,
    tile_size_option,
    verbose_option,
)
from jobs.ray_session import ray_session
from jobs.stac_options import STAC_EPILOG, build_aoi, build_stac, listed_source, stac_options
from pipeline.choices import MergeStrategy, values
from retinanet.backends import Backend

EPILOG = """\b
Examples:
  $ aerialdet detect scenes/ --model runs/demo --out detections/
  $ aerialdet detect 'scenes/*.tif' --model runs/demo/best --out out/ --tile-size-px 1024
  $ AWS_ENDPOINT_URL=http://127.0.0.1:9000 aerialdet detect s3://bucket/prefix --model ckpt --out out/
  $ ray job submit --working-dir . -- python -m jobs.detect scenes/ --model ckpt --out out/

--model takes a checkpoint directory or a training run (`aerialdet train
--out RUN`: its best/, else last/). Exit status: 0 when no scene failed
(skipped ones, not rasters or held by another live run, do not count),
1 when some scenes failed (listed in OUT/_run.json), 2 on bad usage.
"""


@click.command("detect", epilog=EPILOG + STAC_EPILOG)
@click.argument("source", required=False)
@click.option("--model", "model", required=True, help="Checkpoint directory or training run directory.")
@out_option("Output directory or s3://bucket/prefix.")
@tile_size_option(
    1024, "Tile edge fed to the model, in model pixels (at the model's GSD; native without one)."
)
@click.option(
    "--overlap-px",
    default=128,
    show_default=True,
    type=click.IntRange(min=0),
    help="Overlap between tiles, in model pixels; at least the largest object.",
)
@gsd_option("Read scenes at this many metres per pixel [default: the checkpoint's gsd_m, else native].")
@click.option(
    "--native-resolution",
    is_flag=True,
    help="Read every scene pixel for pixel, whatever its GSD (the behaviour before reads at the model's GSD).",
)
@click.option(
    "--max-gsd-factor",
    default=8.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Fail a scene whose GSD is more than this many times finer or coarser than the model's.",
)
@click.option(
    "--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Tiles per model call."
)
@bands_option("the model's")
@click.option("--assume-crs", default=None, help="CRS for scenes that have none, e.g. EPSG:32633.")
@rescale_option
@click.option(
    "--to-crs", default=None, help="Output CRS [default: the scenes' CRS if shared, else OGC:CRS84]."
)
@min_score_option(
    None,
    "Keep detections scoring at least this [default: the checkpoint's calibrated best-F1 score per "
    "class, else every detection (the model's 0.05)]; 0 keeps all.",
)
@click.option("--class-agnostic", is_flag=True, help="Cross-tile NMS across classes.")
@click.option(
    "--merge",
    "merge_strategy",
    default=MergeStrategy.CORE.value,
    show_default=True,
    type=click.Choice(values(MergeStrategy)),
    help="Cross-tile merge strategy.",
)
@click.option(
    "--cross-scene-merge/--no-cross-scene-merge",
    default=True,
    show_default=True,
    help="Report an object seen by overlapping scenes once: each scene keeps the objects in the part of "
    "the mosaic it owns (nearest scene centre; footprints recorded in OUT/_mosaic.*.parquet before the "
    "first tile). --no-cross-scene-merge for repeat coverage of one place you want per scene (a time "
    "series); scenes overlapping over 90 % are never merged.",
)
@click.option(
    "--actors", default=None, type=click.IntRange(min=1), help="Model actors [default: one per GPU or node]."
)
@click.option(
    "--cpus-per-actor",
    default=None,
    type=click.FloatRange(min=0.5),
    help="CPUs (torch threads) per CPU actor [default: a node's CPUs - 0.5].",
)
@click.option(
    "--gpus/--no-gpus",
    default=None,
    help="Force GPU or CPU actors [default: GPUs when the cluster has them].",
)
@precision_option(
    "auto",
    "Network arithmetic; auto: fp16 on GPU, bf16 on CPUs with native bfloat16 (AVX-512 BF16/AMX), else fp32.",
)
@click.option("--amp", is_flag=True, hidden=True, help="Deprecated: --precision fp16.")
@click.option(
    "--backend",
    default=Backend.EAGER.value,
    show_default=True,
    type=click.Choice(values(Backend)),
    help="What runs the network in each model actor: eager torch, or torch.compile (compiles on each "
    "actor's first batch, about 1.16x eager after; pays on long runs).",
)
@overwrite_option
@click.option(
    "--drivers",
    default="GTiff",
    show_default=True,
    callback=lambda ctx, param, value: _parse_drivers(value),
    help="GDAL drivers allowed to open scenes, comma-separated (e.g. GTiff,JP2OpenJPEG); "
    "files with their extensions are listed.",
)
@click.option(
    "--max-scene-px",
    default=None,
    type=click.IntRange(min=1),
    help="Refuse scenes with more native pixels than this (width x height) [default: 10 gigapixels].",
)
@click.option(
    "--max-tiles-per-scene",
    default=None,
    type=click.IntRange(min=1),
    help="Refuse scenes that plan more tiles than this [default: 100,000].",
)
@stac_options
@progress_option
@address_option
@verbose_option
def detect_command(source: str | None, model: str, out_dir: str, **opts: Any) -> None:
    """Detect objects in every raster of SOURCE; write GeoParquet under --out.

    SOURCE is a GeoTIFF, a folder, a glob, s3://bucket/prefix, or a STAC file (Item, ItemCollection,
    Collection or Catalog JSON, stac-geoparquet); or no SOURCE and --stac-search URL.
    """
    from pipeline.errors import PipelineError
    from pipeline.ray_stages import run_detect

    _check_crs_options(opts)
    aoi = build_aoi(opts)
    stac = build_stac(source, opts, aoi)
    if source is not None:
        _check_source(source)
    loader = _model_loader(model, opts["backend"])
    notes: list[str] = [loader.note] if getattr(loader, "note", None) else []  # e.g. "using RUN/best"
    job = _build_job(listed_source(source, stac), out_dir, loader, opts, stac, aoi, notes)
    _check_writable(out_dir)
    if job.resolution.note and model != "standin:blobs":  # the stand-in has no GSD to speak of
        notes.append(job.resolution.note)  # once: a model without gsd_m runs at native resolution
    warning = overlap_warning(loader.info.min_overlap_px, opts["overlap_px"])
    if warning:
        notes.append(warning)
    log_dir = _log_dir(out_dir)
    with ray_session(opts["address"], log_dir, verbose=opts["verbose"], ray_data=False):  # Ray core only
        try:
            _check_nodes(source, loader, opts)
            for note in notes:  # once the cluster is reached: a usage or address error stays one line
                click.echo(note, err=True)
            report = run_detect(job, log=lambda m: click.echo(m, err=True))
        except PipelineError as exc:
            raise UserError(str(exc)) from None
    _summarise(report, out_dir, log_dir)
    if report.num_failed:
        sys.exit(1)


def _check_crs_options(opts: dict[str, Any]) -> None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    for flag in ("assume_crs", "to_crs"):
        value = opts[flag]
        if value:
            try:
                CRS.from_user_input(value)
            except CRSError as exc:
                hint = "--" + flag.replace("_", "-")
                raise click.BadParameter(f"{value!r} is not a CRS ({exc})", param_hint=hint) from None


def _parse_drivers(value: str) -> tuple[str, ...]:
    """``--drivers GTiff,jp2openjpeg`` -> GDAL's driver names, each checked to open scene files."""
    from pipeline.gdal_config import canonical_drivers

    try:
        return canonical_drivers([name.strip() for name in value.split(",") if name.strip()])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--drivers") from None


def _check_source(source: str) -> None:
    """A local SOURCE that is neither a glob nor an existing path is a usage error, caught before Ray starts."""
    from pipeline.sources import is_glob, is_s3_uri

    if is_s3_uri(source) or is_glob(source):
        return
    if not Path(source).exists():
        raise click.BadParameter(
            f"{source!r} does not exist; pass a GeoTIFF, a folder, a glob or s3://bucket/prefix",
            param_hint="SOURCE",
        )


def _model_loader(model: str, backend: str = Backend.EAGER.value) -> Any:
    """``--model`` -> a ``ModelLoader``: the stand-in, or a checkpoint (run) directory loaded once here."""
    import dataclasses

    from pipeline.standin import STANDIN_SOURCE, StandinLoader

    if model == STANDIN_SOURCE:
        if backend != Backend.EAGER.value:
            raise click.BadParameter(
                f"the stand-in model {STANDIN_SOURCE} has no network to run on {backend!r}; "
                "use --backend eager or a checkpoint",
                param_hint="--backend",
            )
        return StandinLoader()
    from retinanet.errors import CheckpointError
    from retinanet.predictor import CheckpointLoader

    try:
        return dataclasses.replace(CheckpointLoader.open(model), backend=backend)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None


def _model_input(loader: Any, notes: list[str] | None = None) -> Any:
    """The pixel kind a checkpoint was trained on (``meta.json`` ``input``); None for the stand-in or unknown."""
    if not getattr(loader, "checkpoint_dir", None):
        return None
    from retinanet.checkpoint_input import model_input
    from retinanet.checkpoint_meta import config_of, read_meta
    from retinanet.errors import CheckpointError

    try:
        meta = read_meta(loader.checkpoint_dir)
        kind, note = model_input(meta, config_of(meta, loader.checkpoint_dir), loader.checkpoint_dir)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    if note and notes is not None:
        notes.append(note)  # once per run: assumed uint8, or scenes unchecked
    elif note:
        click.echo(note, err=True)
    return kind


def _check_nodes(source: str | None, loader: Any, opts: dict[str, Any]) -> None:
    """On a joined cluster, before any scene: every working node sees a local SOURCE and the model."""
    import os

    from pipeline.node_checks import check_nodes_see, needed_paths

    if opts["address"] or os.environ.get("RAY_ADDRESS"):  # a private cluster runs on this machine only
        paths = needed_paths(source, getattr(loader, "checkpoint_dir", None))
        check_nodes_see(paths, log=lambda m: click.echo(m, err=True))


def overlap_warning(min_overlap_px: int | None, overlap_px: int) -> str | None:
    """A warning when ``--overlap-px`` is below the largest object the model was trained on."""
    if min_overlap_px is None or overlap_px >= min_overlap_px:
        return None
    return (
        f"warning: --overlap-px {overlap_px} is smaller than the largest object this model was trained on "
        f"({min_overlap_px} px): objects that large can be cut by tile seams; use --overlap-px {min_overlap_px} or more"
    )


def _build_job(
    source: str,
    out_dir: str,
    loader: Any,
    opts: dict[str, Any],
    stac: Any = None,
    aoi: Any = None,
    notes: list[str] | None = None,
) -> Any:
    from pipeline.job import DetectConfig, DetectJob
    from pipeline.merging import MergeConfig
    from pipeline.reading import ReadConfig
    from pipeline.resolution import resolve_resolution
    from pipeline.tiling import TilingConfig

    tile, overlap = opts["tile_size_px"], opts["overlap_px"]
    if overlap >= tile:
        raise click.BadParameter(
            f"must be smaller than the tile size ({tile} px), got {overlap}", param_hint="--overlap-px"
        )
    return DetectJob(
        source=source,
        # absolute: the run report, the manifest and the messages name files by it
        out_dir=out_dir if "://" in out_dir else str(Path(out_dir).resolve()),
        model=loader,
        detect=DetectConfig(
            batch_size=opts["batch_size"],
            num_actors=opts["actors"],
            cpus_per_actor=opts["cpus_per_actor"],
            use_gpu=opts["gpus"],
            precision=_precision(opts),
        ),
        tiling=TilingConfig(
            tile_size_px=tile,
            overlap_px=overlap,
            **({"max_scene_px": opts["max_scene_px"]} if opts["max_scene_px"] else {}),
            **({"max_tiles_per_scene": opts["max_tiles_per_scene"]} if opts["max_tiles_per_scene"] else {}),
        ),
        read=ReadConfig(
            bands=opts["bands"] or loader.info.bands,
            drivers=opts["drivers"],
            assume_crs=opts["assume_crs"],
            model_input=_model_input(loader, notes if notes is not None else []),
            rescale=opts["rescale"],
        ),
        merge=MergeConfig(strategy=opts["merge_strategy"], class_agnostic=opts["class_agnostic"]),
        resolution=_resolution(loader, opts, resolve_resolution),
        to_crs=opts["to_crs"],
        min_score=opts["min_score"],
        overwrite=opts["overwrite"],
        progress=not opts["no_progress"],
        cross_scene_merge=opts["cross_scene_merge"],
        stac=stac,
        aoi=aoi,
    )


def _resolution(loader: Any, opts: dict[str, Any], resolve: Any) -> Any:
    """``--gsd-m`` / ``--native-resolution`` / the checkpoint's ``gsd_m`` -> ``ResolutionConfig``."""
    try:
        return resolve(
            getattr(loader.info, "gsd_m", None),
            opts["gsd_m"],
            opts["native_resolution"],
            opts["max_gsd_factor"],
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gsd-m") from None


def _precision(opts: dict[str, Any]) -> Any:
    """``--precision``; the deprecated ``--amp`` means fp16 (and cannot be mixed with another choice)."""
    from pipeline.detection import Precision

    precision = Precision(opts["precision"])
    if opts["amp"]:
        if precision not in (Precision.AUTO, Precision.FP16):
            raise click.BadParameter(
                f"--amp (deprecated) means --precision fp16; it cannot be combined with --precision {precision.value}",
                param_hint="--amp",
            )
        click.echo("warning: --amp is deprecated; use --precision fp16", err=True)
        return Precision.FP16
    return precision


def _check_writable(out: str) -> None:
    """Prove a file can be written to ``out`` (a folder, created, or s3://bucket/prefix), before any Ray start."""
    from pipeline.errors import OutputError
    from pipeline.storage import open_store

    try:
        open_store(out).check_writable()
    except OutputError as exc:
        raise click.BadParameter(
            f"{exc}; choose a directory or bucket you can write to",
            param_hint="--out",
        ) from None


def _log_dir(out: str) -> Path:
    """Where Ray's logs go: ``OUT/_logs``, or a local temporary folder when OUT is in S3."""
    from pipeline.sources import is_s3_uri

    if is_s3_uri(out):
        return Path(tempfile.mkdtemp(prefix="aerialdet-logs-"))
    return Path(out) / LOG_DIR


def _summarise(report: Any, out: str, log_dir: Path) -> None:
    from pipeline.report import REPORT_FILE
    from pipeline.sources import is_s3_uri
    from pipeline.storage import open_store

    counts = report.counts()
    summary = report.to_json()
    store = open_store(out)
    click.echo(
        f"{counts['done']} scene(s) done, {counts['exists']} already done, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; {summary['num_detections']} detections, "
        f"{summary['tiles_per_s']} tiles/s; report: {store.uri(REPORT_FILE)}"
        + (f"; --aoi saved {summary['num_tiles_saved_by_aoi']} tile(s)" if report.config.get("aoi") else "")
        + (f"; Ray's logs: {log_dir}" if is_s3_uri(out) else "")  # not under OUT: say where
    )


def main() -> None:
    """Entry point of ``python -m jobs.detect`` (``aerialdet detect`` with the same error handling)."""
    run_standalone(detect_command)


if __name__ == "__main__":
    main()
