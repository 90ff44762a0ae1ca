"""``aerialdet``: one console script, one subcommand per job."""

from __future__ import annotations

import click

from jobs.detect import detect_command


@click.group(epilog="Run `aerialdet COMMAND --help` for a command's options and examples.")
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


def main() -> None:
    """Console-script entry point."""
    _register_optional()
    cli()
