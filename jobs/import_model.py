"""``aerialdet import``: a DeepForest release or torchvision RetinaNet file -> checkpoint directory.

The checkpoint directory (``model.pt`` + ``meta.json``) is what ``aerialdet
detect --model`` and ``aerialdet train --init`` take.  Accepted sources
(``retinanet.checkpoint.import_model``): a DeepForest ``.pt`` state dict, a
Lightning ``.ckpt``, a folder (or file) ``model.safetensors`` with
``config.json`` beside it, or a plain torchvision ResNet-50 FPN RetinaNet
state dict (``.pth``).  Nothing is downloaded; pickled objects other than
tensors are refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from jobs.options import UserError, out_option, overwrite_option

EPILOG = """\b
Examples:
  $ aerialdet import NEON.pt --out models/deepforest
  $ aerialdet import weecology-deepforest-tree/ --out models/deepforest
  $ aerialdet import retinanet_resnet50_fpn_coco.pth --out models/coco --classes-file coco_names.txt
  $ aerialdet detect scenes/ --model models/deepforest --out out/
"""


def _class_names(classes: str | None, classes_file: str | None) -> tuple[str, ...] | None:
    """Class names from ``--classes a,b`` or ``--classes-file`` (one per line), in id order."""
    if classes and classes_file:
        raise click.UsageError("pass --classes or --classes-file, not both")
    if classes_file:
        names = tuple(line.strip() for line in Path(classes_file).read_text().splitlines() if line.strip())
    elif classes:
        names = tuple(n.strip() for n in classes.split(","))
    else:
        return None
    if not names or not all(names) or len(set(names)) != len(names):
        raise click.BadParameter(
            f"expected distinct non-empty class names, got {list(names)}", param_hint="--classes"
        )
    return names


@click.command("import", epilog=EPILOG)
@click.argument("source", type=click.Path(exists=True))
@out_option("Checkpoint directory to write.")
@click.option(
    "--classes",
    default=None,
    help="Comma-separated class names in id order [default: config.json, else Tree].",
)
@click.option(
    "--classes-file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Class names, one per line.",
)
@overwrite_option
def import_command(
    source: str, out_dir: str, classes: str | None, classes_file: str | None, overwrite: bool
) -> None:
    """Turn SOURCE (DeepForest .pt/.ckpt/model.safetensors, torchvision RetinaNet .pth) into a checkpoint."""
    from retinanet.checkpoint import CheckpointError, import_model, load_dir, save_dir

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a directory path")
    try:
        model, config = import_model(source, class_names=_class_names(classes, classes_file))
    except CheckpointError as exc:  # also one line when run as python -m jobs.import_model
        hint = "; name them with --classes or --classes-file" if "class_names has" in str(exc) else ""
        raise UserError(f"{exc}{hint}") from None
    if out.exists():
        shutil.rmtree(out)
    save_dir(out, model, config, extra_meta={"imported_from": str(Path(source).resolve())})
    loaded = load_dir(out)  # read back: what detect will load
    click.echo(
        f"wrote {out}: {loaded.config.backbone.value} RetinaNet, classes {list(loaded.config.class_names)}, "
        f"{loaded.checkpoint_id}"
    )


def main() -> None:
    """Entry point of ``python -m jobs.import_model``."""
    from jobs.options import run_standalone

    run_standalone(import_command)


if __name__ == "__main__":
    main()
