"""``aerialdet``: one console script, one subcommand per job.

A user's mistake (a missing path, a bad option value, a corrupt input file)
ends in one line on stderr and exit status 2, never a traceback: every
subcommand runs under ``AerialdetGroup``, which turns the library's
user-facing errors into ``jobs.options.UserError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from jobs.detect import detect_command
from jobs.options import UserError
from pipeline.errors import PipelineError
from retinanet.errors import CheckpointError, LabelError

# Errors that describe the user's input, not a bug: shown as one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    PipelineError,
    CheckpointError,
    LabelError,
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return " ".join(text.split())


class AerialdetGroup(click.Group):
    """A click group whose subcommands report user errors in one line (exit 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; turn ``USER_ERRORS`` into ``UserError``."""
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise UserError(_one_line(exc)) from None


@click.group(cls=AerialdetGroup, epilog="Run `aerialdet COMMAND --help` for a command's options and examples.")
@click.version_option(package_name="aerialdet")
def cli() -> None:
    """aerialdet: GeoTIFFs in, georeferenced detections (GeoParquet) out, on Ray."""


cli.add_command(detect_command)


def _register_optional() -> None:
    from jobs import evaluate, query, synth, train

    cli.add_command(synth.synth_command)
    cli.add_command(train.train_command)
    cli.add_command(evaluate.evaluate_command)
    cli.add_command(query.query_command)
    cli.add_command(query.quicklook_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``argv`` defaults to the command line)."""
    _register_optional()
    cli.main(args=list(argv) if argv is not None else None, prog_name="aerialdet")
