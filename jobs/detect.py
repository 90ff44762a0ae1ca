"""``aerialdet detect`` / ``python -m jobs.detect``: scenes -> GeoParquet detections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from jobs.options import init_ray, parse_int_list, ray_address_option

EPILOG = """\b
Examples:
  $ aerialdet detect scenes/ --model runs/demo/best --out detections/
  $ aerialdet detect 's3://bucket/scenes/*.tif' --model ckpt --out out/   # glob on local disk
  $ AWS_ENDPOINT_URL=http://127.0.0.1:9000 aerialdet detect s3://bucket/prefix --model ckpt --out out/
  $ ray job submit --working-dir . -- python -m jobs.detect scenes/ --model ckpt --out out/

Exit status: 0 when every scene is done (or already was), 1 when some scenes
failed (listed in OUT/_run.json), 2 on bad usage.
"""


@click.command("detect", epilog=EPILOG)
@click.argument("source")
@click.option("--model", "model", required=True, help="Checkpoint directory (from `aerialdet train`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--tile-size-px",
    default=None,
    type=click.IntRange(min=32),
    help="Tile size [default: the checkpoint's, else 1024].",
)
@click.option(
    "--overlap-px",
    default=128,
    show_default=True,
    type=click.IntRange(min=0),
    help="Overlap between tiles; at least the largest object.",
)
@click.option(
    "--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Tiles per model call."
)
@click.option(
    "--bands",
    default=None,
    callback=parse_int_list,
    help="1-based bands in model order [default: the checkpoint's, e.g. 1,2,3].",
)
@click.option("--assume-crs", default=None, help="CRS for scenes that have none, e.g. EPSG:32633.")
@click.option(
    "--to-crs", default=None, help="Output CRS [default: the scenes' CRS if shared, else OGC:CRS84]."
)
@click.option("--class-agnostic", is_flag=True, help="Cross-tile NMS across classes.")
@click.option(
    "--merge",
    "merge_strategy",
    default="core",
    show_default=True,
    type=click.Choice(["core", "edge", "iou"]),
    help="Cross-tile merge strategy.",
)
@click.option(
    "--actors",
    default=None,
    type=click.IntRange(min=1),
    help="Model actors [default: one per GPU, or CPUs-1].",
)
@click.option("--cpus-per-actor", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--gpus/--no-gpus",
    default=None,
    help="Force GPU or CPU actors [default: GPUs when the cluster has them].",
)
@click.option("--amp", is_flag=True, help="float16 autocast on GPU.")
@click.option("--overwrite", is_flag=True, help="Redo scenes whose output already exists.")
@click.option("--drivers", default="GTiff", show_default=True, help="GDAL drivers allowed to open scenes.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@ray_address_option
def detect_command(
    source: str,
    model: str,
    out_dir: str,
    tile_size_px: int | None,
    overlap_px: int,
    batch_size: int,
    bands: tuple[int, ...] | None,
    assume_crs: str | None,
    to_crs: str | None,
    class_agnostic: bool,
    merge_strategy: str,
    actors: int | None,
    cpus_per_actor: int,
    gpus: bool | None,
    amp: bool,
    overwrite: bool,
    drivers: str,
    no_progress: bool,
    address: str | None,
) -> None:
    """Detect objects in every raster of SOURCE; write GeoParquet under --out.

    SOURCE is a GeoTIFF, a folder, a glob, or s3://bucket/prefix.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    from pipeline.detection import describe_model
    from pipeline.errors import PipelineError
    from pipeline.merging import MergeConfig
    from pipeline.ray_stages import DetectConfig, RunConfig, run_detect
    from pipeline.reading import ReadConfig
    from pipeline.tiling import TilingConfig
    from retinanet.checkpoint import CheckpointError

    for flag, value in (("--assume-crs", assume_crs), ("--to-crs", to_crs)):
        if value:
            try:
                CRS.from_user_input(value)
            except CRSError as exc:
                raise click.BadParameter(f"{value!r} is not a CRS ({exc})", param_hint=flag) from None
    try:
        handle = describe_model(model)
    except (CheckpointError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    tile = tile_size_px or handle.tile_size_px or 1024
    if overlap_px >= tile:
        raise click.BadParameter(
            f"must be smaller than the tile size ({tile} px), got {overlap_px}", param_hint="--overlap-px"
        )
    cfg = RunConfig(
        source=source,
        out_dir=out_dir,
        detect=DetectConfig(
            model=model,
            batch_size=batch_size,
            num_actors=actors,
            cpus_per_actor=cpus_per_actor,
            use_gpu=gpus,
            amp=amp,
        ),
        tiling=TilingConfig(tile_size_px=tile, overlap_px=overlap_px),
        read=ReadConfig(
            bands=bands or handle.band_config.bands, drivers=tuple(drivers.split(",")), assume_crs=assume_crs
        ),
        merge=MergeConfig(strategy=merge_strategy, class_agnostic=class_agnostic),
        to_crs=to_crs,
        overwrite=overwrite,
        progress=not no_progress,
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    init_ray(address)
    try:
        report = run_detect(cfg, log=lambda m: click.echo(m, err=True))
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    counts = report.counts()
    summary = report.to_json()
    click.echo(
        f"{counts['done']} scene(s) done, {counts['exists']} already done, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; {summary['num_detections']} detections, "
        f"{summary['tiles_per_s']} tiles/s; report: {Path(out_dir) / '_run.json'}"
    )
    (Path(out_dir) / "_config.json").write_text(json.dumps(summary["config"], indent=2))
    if report.num_failed:
        sys.exit(1)


def main() -> None:
    """Entry point of ``python -m jobs.detect``."""
    detect_command()


if __name__ == "__main__":
    main()
