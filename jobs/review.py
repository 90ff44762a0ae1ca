"""``aerialdet review DET --source SCENES``: look at detections on the imagery, correct them, save labels.

A local web app (``jobs.review_server``) on 127.0.0.1 whose URL, printed
once, holds a random token.  The page (``jobs/review_static/``, OpenLayers
from the npm registry, installed by ``make install`` into
``.web/node_modules/ol``) shows the scenes as XYZ tiles with the detections
on top, and every correction is saved at once to ``--labels``, a
GeoParquet file ``aerialdet train`` reads as it is
(``pipeline.review_store``).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import click

from jobs.options import UserError, bands_option

VENDOR_ENV = "AERIALDET_WEB_VENDOR"
DEFAULT_VENDOR = Path(__file__).resolve().parent.parent / ".web" / "node_modules" / "ol"

EPILOG = """\b
Examples:
  $ aerialdet review detections/ --source scenes/ --model runs/demo
  $ aerialdet review detections/ --source scenes/ --labels fixes.parquet --compare detections_v2/
  $ aerialdet train fixes.parquet scenes/labels.parquet --init runs/demo --out runs/demo2
"""


def vendor_dir() -> Path:
    """Where OpenLayers lies (``$AERIALDET_WEB_VENDOR``, else ``.web/node_modules/ol``), checked."""
    folder = Path(os.environ.get(VENDOR_ENV) or DEFAULT_VENDOR)
    if not (folder / "dist" / "ol.js").is_file() or not (folder / "ol.css").is_file():
        raise UserError(
            f"OpenLayers is not installed in {folder} (no dist/ol.js or ol.css): run `make install` "
            f"(npm install --prefix .web ol) or point ${VENDOR_ENV} at an unpacked `ol` npm package"
        )
    return folder


def _run_config(det: str) -> dict[str, Any]:
    """The detect run's configuration (``_run.json``), or {} when there is none."""
    from pipeline.errors import OutputError
    from pipeline.report import read_report

    try:
        return dict(read_report(det, with_scenes=False).get("config") or {})
    except (OutputError, ValueError):
        return {}


def _thresholds(model: str | None, run_config: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """(class -> decision threshold, class names): the model's calibrated ones, else the run's."""
    if model is None:
        return {str(k): float(v) for k, v in (run_config.get("score_thresholds") or {}).items()}, []
    from retinanet.checkpoint import read_meta, resolve_checkpoint

    ckpt, _ = resolve_checkpoint(model)
    meta = read_meta(ckpt)
    names = list((meta.get("config") or {}).get("class_names") or [])
    return {str(k): float(v) for k, v in (meta.get("score_thresholds") or {}).items()}, names


def _scenes(source: str) -> tuple[str, ...]:
    from pipeline.sources import list_scenes

    scenes = list_scenes(source).scenes
    if not scenes:
        raise UserError(f"{source}: holds no raster scenes to review")
    return tuple(sorted(scenes))


@click.command("review", epilog=EPILOG)
@click.argument("det")
@click.option(
    "--source", required=True, help="The scenes the detections were made on (folder, glob or s3://)."
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GeoParquet labels file the corrections are saved to (resumed when it exists) [default: DET/../review_labels.parquet].",
)
@click.option(
    "--model",
    default=None,
    help="Checkpoint or run whose calibrated score thresholds order the queue [default: the run's].",
)
@click.option(
    "--compare",
    default=None,
    help="A second detection output on the same scenes: the queue visits where they disagree.",
)
@click.option(
    "--port", default=0, type=click.IntRange(0, 65535), help="Port on 127.0.0.1 [default: a free one]."
)
@click.option("--reviewer", default=None, help="Name written with each edit [default: the login name].")
@bands_option("the bands the detect run read, else 1,2,3")
def review_command(
    det: str,
    source: str,
    labels_path: Path | None,
    model: str | None,
    compare: str | None,
    port: int,
    reviewer: str | None,
    bands: tuple[int, ...] | None,
) -> None:
    """Review detections on the imagery in a browser; corrections become training labels."""
    from jobs.review_server import make_server
    from jobs.review_session import open_session
    from pipeline.reading import ReadConfig
    from pipeline.review_data import class_names

    vendor = vendor_dir()
    run_config = _run_config(det)
    thresholds, names = _thresholds(model, run_config)
    read_bands = bands or tuple((run_config.get("read") or {}).get("bands") or (1, 2, 3))
    if labels_path is None and "://" in det:
        raise UserError(
            f"{det}: an s3:// output has no local folder beside it for the labels; pass --labels FILE"
        )
    labels_path = labels_path or Path(det.rstrip("/")).parent / "review_labels.parquet"
    session = open_session(
        det,
        _scenes(source),
        labels_path,
        thresholds=thresholds,
        class_names=names or class_names(det),
        reviewer=reviewer or getpass.getuser(),
        read_config=ReadConfig(bands=read_bands),
        other=compare,
    )
    server, url = make_server(session, vendor, port)
    click.echo(
        f"reviewing {len(session.detections)} detection(s) on {len(session.scenes)} scene(s); labels: {labels_path}"
    )
    click.echo(f"open {url}  (Ctrl-C to stop; every edit is already saved)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
