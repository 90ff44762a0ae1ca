"""``aerialdet``: one console script, one subcommand per job.

A user's mistake (a missing path, a bad option value, a corrupt input file)
ends in one line on stderr and exit status 2, never a traceback: every
subcommand runs under ``AerialdetGroup``, which turns the library's
user-facing errors into ``jobs.options.UserError`` (``jobs.options.user_errors``).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from jobs.detect import detect_command
from jobs.options import user_errors


class AerialdetGroup(click.Group):
    """A click group whose subcommands report user errors in one line (exit 2)."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; the library's user-facing errors become ``UserError``."""
        with user_errors():
            return super().invoke(ctx)


@click.group(
    cls=AerialdetGroup, epilog="Run `aerialdet COMMAND --help` for a command's options and examples."
)
@click.version_option(package_name="aerialdet")
def cli() -> None:
    """aerialdet: GeoTIFFs in, georeferenced detections (GeoParquet) out, on Ray."""


cli.add_command(detect_command)


def _register_optional() -> None:
    from jobs import evaluate, export, import_model, query, report, review, submit, synth, train

    cli.add_command(import_model.import_command)
    cli.add_command(submit.submit_command)
    cli.add_command(synth.synth_command)
    cli.add_command(train.train_command)
    cli.add_command(evaluate.evaluate_command)
    cli.add_command(query.query_command)
    cli.add_command(query.quicklook_command)
    cli.add_command(review.review_command)
    cli.add_command(export.export_command)
    cli.add_command(report.report_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``argv`` defaults to the command line)."""
    _register_optional()
    cli.main(args=list(argv) if argv is not None else None, prog_name="aerialdet")
