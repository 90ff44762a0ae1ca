"""``aerialdet report OUT [-o FILE]``: (re)write the HTML report of a detect output.

``aerialdet detect`` writes ``OUT/_report.html`` when it ends
(``pipeline.run_report_html``); this command builds it again from the output
as it is now (after a resumed run, or another driver's), for a local folder
or an ``s3://bucket/prefix``, to ``OUT/_report.html`` or to ``-o FILE``.
"""

from __future__ import annotations

from pathlib import Path

import click

from jobs.options import UserError

EPILOG = """\b
Examples:
  $ aerialdet report out/
  $ aerialdet report s3://bucket/out/ -o report.html
"""


@click.command("report", epilog=EPILOG)
@click.argument("out")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (its folder must exist) [default: OUT/_report.html].",
)
def report_command(out: str, output: Path | None) -> None:
    """Write the HTML report of the detect output OUT: counts, score histograms, a map, failed scenes."""
    from pipeline.run_report_html import write_report_html

    if output is not None and not output.parent.is_dir():
        raise UserError(
            f"-o {output}: folder {output.parent} does not exist; create it first or write elsewhere"
        )
    if "://" not in out and not Path(out).is_dir():
        raise UserError(f"{out}: no such output folder; give the --out of `aerialdet detect`")
    click.echo(f"wrote {write_report_html(out, output)}")
