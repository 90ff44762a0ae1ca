"""``aerialdet synth``: synthetic georeferenced scenes + ground truth."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from jobs.options import UserError, seed_option

EPILOG = """\b
Examples:
  $ aerialdet synth data/synth --scenes 4 --size-px 2048 --seed 1
  $ aerialdet synth data/big --scenes 1 --size-px 50000 --gsd-m 0.5
  $ aerialdet synth data/mosaic --mosaic 3x2 --overlap 0.3 --size-px 1024
"""


def _writable_dir(out_dir: str) -> Path:
    """Create ``out_dir`` and prove a file can be written in it, else a one-line user error."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot write scenes to {out_dir}: {reason}; choose a writable directory") from None
    return out


@click.command("synth", epilog=EPILOG)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--scenes",
    "num_scenes",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Scenes to write.",
)
@click.option(
    "--size-px",
    default=2048,
    show_default=True,
    type=click.IntRange(min=64),
    help="Width and height of each scene.",
)
@click.option(
    "--gsd-m", default=0.3, show_default=True, type=click.FloatRange(min=0.01), help="Metres per pixel."
)
@click.option("--crs", default="EPSG:32633", show_default=True, help="A projected CRS in metres.")
@click.option(
    "--mosaic",
    default=None,
    metavar="COLSxROWS",
    help="Instead of separate scenes, COLSxROWS overlapping scenes cut from one painted ground "
    "(mosaic_RR_CC.tif; each object once in labels.parquet); with a UTM --crs the ground spans the "
    "zone's western boundary and the scenes west of it are written in that zone.",
)
@click.option(
    "--overlap",
    default=0.3,
    show_default=True,
    type=click.FloatRange(min=0.0, max=0.9),
    help="With --mosaic: the fraction of a scene's side it shares with each neighbour.",
)
@seed_option
def synth_command(
    out_dir: str,
    num_scenes: int,
    size_px: int,
    gsd_m: float,
    crs: str,
    mosaic: str | None,
    overlap: float,
    seed: int,
) -> None:
    """Write OUT_DIR/scene_XXX.tif (or a --mosaic) and the ground truth OUT_DIR/labels.parquet."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    from retinanet.synth import SynthConfig, write_scenes

    try:
        if not CRS.from_user_input(crs).is_projected:
            raise click.BadParameter(
                f"{crs} is not a projected CRS; use one in metres, e.g. a UTM zone", param_hint="--crs"
            )
    except CRSError as exc:
        raise click.BadParameter(f"{crs!r} is not a CRS ({exc})", param_hint="--crs") from None
    out = _writable_dir(out_dir)
    if mosaic is not None:
        _write_mosaic(out, mosaic, SynthConfig(size_px=size_px, gsd_m=gsd_m, crs=crs), overlap, seed)
        return
    truths = write_scenes(
        out, num_scenes=num_scenes, cfg=SynthConfig(size_px=size_px, gsd_m=gsd_m, crs=crs), seed=seed
    )
    total = sum(len(t.labels) for t in truths)
    click.echo(
        f"wrote {len(truths)} scene(s) with {total} objects to {out_dir} (labels: {out / 'labels.parquet'})"
    )


def _write_mosaic(out: Path, shape: str, cfg: object, overlap: float, seed: int) -> None:
    """``--mosaic COLSxROWS``: overlapping scenes over one ground truth."""
    from retinanet.synth import SynthConfig
    from retinanet.synth_mosaic import write_mosaic

    assert isinstance(cfg, SynthConfig)
    try:
        cols, rows = (int(v) for v in shape.lower().split("x"))
        if cols < 1 or rows < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{shape!r} is not COLSxROWS, e.g. 3x2", param_hint="--mosaic") from None
    written = write_mosaic(
        out, cols=cols, rows=rows, scene_px=cfg.size_px, overlap=overlap, cfg=cfg, seed=seed
    )
    zones = sorted(set(written.crs_by_scene))
    click.echo(
        f"wrote a {cols}x{rows} mosaic ({len(written.scenes)} scenes overlapping {overlap:.0%}, in {', '.join(zones)}) "
        f"over {written.num_objects} objects to {out} (labels: {written.labels})"
    )
