"""``aerialdet export``: a checkpoint -> a model file for other runtimes (ONNX)."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.options import UserError, overwrite_option

EPILOG = """\b
Examples:
  $ aerialdet export --format onnx runs/demo/best -o model.onnx
  $ aerialdet export --format onnx runs/demo -o model.onnx --tile-size-px 1024

The file holds the network (normalisation, backbone, FPN, heads) and
returns raw head outputs; anchors, decoding and NMS stay in torchvision
(retinanet.export.decode_detections). TensorRT: build an engine from the
ONNX file (trtexec --onnx=model.onnx); see docs/deploy.md.
"""

_HINTS = {
    "tensorrt": "build a TensorRT engine from the ONNX file instead (trtexec --onnx=model.onnx, docs/deploy.md)",
    "trt": "build a TensorRT engine from the ONNX file instead (trtexec --onnx=model.onnx, docs/deploy.md)",
}


@click.command("export", epilog=EPILOG)
@click.argument("checkpoint")
@click.option("--format", "fmt", default="onnx", show_default=True, help="Output format: onnx.")
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="File to write."
)
@click.option(
    "--tile-size-px",
    default=None,
    type=click.IntRange(32, 8192),
    help="Input height and width, a multiple of 32 [default: the checkpoint's tile size].",
)
@overwrite_option
def export_command(checkpoint: str, fmt: str, output: str, tile_size_px: int | None, overwrite: bool) -> None:
    """Export CHECKPOINT (a checkpoint or training run directory) to --output."""
    from retinanet.export import FORMATS

    fmt = fmt.lower()
    if fmt not in FORMATS:
        hint = _HINTS.get(fmt, f"supported: {', '.join(FORMATS)}")
        raise UserError(f"--format {fmt!r} is not supported; {hint}")
    if Path(output).exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    from retinanet.checkpoint import resolve_checkpoint
    from retinanet.export import export_onnx

    ckpt_dir, note = resolve_checkpoint(checkpoint)
    if note:
        click.echo(note, err=True)
    result = export_onnx(ckpt_dir, output, tile_size_px=tile_size_px)
    click.echo(
        f"wrote {result.path} (onnx, input [B, C, {result.tile_size_px}, {result.tile_size_px}], "
        f"{result.seconds:.1f} s)"
    )
