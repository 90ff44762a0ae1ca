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
@seed_option
def synth_command(out_dir: str, num_scenes: int, size_px: int, gsd_m: float, crs: str, seed: int) -> None:
    """Write OUT_DIR/scene_XXX.tif and their ground truth OUT_DIR/labels.parquet."""
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
    truths = write_scenes(
        out, num_scenes=num_scenes, cfg=SynthConfig(size_px=size_px, gsd_m=gsd_m, crs=crs), seed=seed
    )
    total = sum(len(t.labels) for t in truths)
    click.echo(
        f"wrote {len(truths)} scene(s) with {total} objects to {out_dir} (labels: {out / 'labels.parquet'})"
    )
