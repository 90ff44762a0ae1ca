"""Options shared by the jobs, each defined once with one meaning, and the one-line user errors.

Every option that more than one command takes is a decorator here
(``address_option``, ``verbose_option``, ``overwrite_option``, ``progress_option``,
``out_option``, ``seed_option``,
``bands_option``, ``tile_size_option``, ``min_score_option``), so
``--bands`` or ``--overwrite`` mean the same thing in every command.

The Ray session itself is ``jobs.ray_session``; what a remote job's
environment may carry is ``jobs.job_env``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import click

from pipeline.choices import Precision, values

F = Callable[..., Any]

LOG_DIR = "_logs"


class UserError(click.ClickException):
    """A mistake of the user's (a bad file, a missing path): one line, exit 2, no traceback."""

    exit_code = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that describe the user's input, not a bug: shown as one line, exit 2."""
    from pipeline.errors import PipelineError
    from retinanet.errors import CheckpointError, LabelError

    return (
        PipelineError,
        CheckpointError,
        LabelError,
        FileNotFoundError,
        PermissionError,
        NotADirectoryError,
        IsADirectoryError,
        FileExistsError,
        ConnectionError,  # a --address nothing answers on (jobs.ray_session.check_reachable)
    )


def one_line(exc: BaseException) -> str:
    """``exc`` as one line, with the file name when the OS error carries one."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return " ".join(text.split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's user-facing errors into ``UserError`` (one line, exit 2)."""
    try:
        yield
    except user_error_types() as exc:
        raise UserError(one_line(exc)) from None


def run_standalone(command: click.Command, argv: list[str] | None = None) -> None:
    """Run one command as a program (``python -m jobs.detect``) with ``user_errors`` handling."""

    def invoke(ctx: click.Context) -> object:
        with user_errors():
            return click.Command.invoke(command, ctx)

    command.invoke = invoke  # type: ignore[method-assign]
    command.main(args=argv)


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]  # click < 8.2 has no generic ParamType
    """A float that is not NaN or +-inf, optionally inside [lo, hi]."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse ``value``; fail on non-numbers, NaN, infinities and values out of range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            self.fail(f"{number} is not in the range {self.lo}..{self.hi}", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def finite_float_range(lo: float | None = None, hi: float | None = None) -> FiniteFloat:
    """A finite float in ``[lo, hi]`` (click type)."""
    return FiniteFloat(lo, hi)


def parse_int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """Parse ``1,2,3`` into a tuple of 1-based band numbers (click callback)."""
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated band numbers like 1,2,3, got {value!r}", param=param
        ) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"band numbers are 1-based, got {value!r}", param=param)
    return out


def address_option(f: F) -> F:
    """``--address``: a Ray cluster to join; default a private local one."""
    return click.option(
        "--address",
        default=None,
        help="Ray cluster address (e.g. ray://head:10001 or auto). Default: $RAY_ADDRESS when set "
        "(as under `ray job submit`), else a private local cluster started for this run.",
    )(f)


def verbose_option(f: F) -> F:
    """``--verbose``: show Ray's own output as well as writing it to the log files."""
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        help=f"Show Ray's logs too (always written to OUT/{LOG_DIR}/, or for an s3:// OUT a local folder the summary names).",
    )(f)


def out_option(help_text: str) -> Callable[[F], F]:
    """``--out``: where a command writes (a directory; ``detect`` also takes ``s3://bucket/prefix``)."""
    return click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help=help_text)


def seed_option(f: F) -> F:
    """``--seed``: the random seed (same seed, same result)."""
    return click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")(f)


def progress_option(f: F) -> F:
    """``--no-progress``: no progress bar (logs and CI)."""
    return click.option("--no-progress", is_flag=True, help="No progress bar.")(f)


def overwrite_option(f: F) -> F:
    """``--overwrite``: redo work whose output already exists."""
    return click.option("--overwrite", is_flag=True, help="Redo (replace) outputs that already exist.")(f)


def bands_option(help_default: str) -> Callable[[F], F]:
    """``--bands``: 1-based scene bands in model channel order."""
    return click.option(
        "--bands",
        default=None,
        callback=parse_int_list,
        help=f"1-based bands in model channel order, e.g. 1,2,3 [default: {help_default}].",
    )


RESCALE_MODES: tuple[str, ...] = ("refuse", "minmax", "percentile")  # pipeline.pixel_kinds


def rescale_option(f: F) -> F:
    """``--rescale``: what detect does with a scene whose dtype/range differs from the model's."""
    return click.option(
        "--rescale",
        default="refuse",
        show_default=True,
        type=click.Choice(RESCALE_MODES),
        help="Scenes whose dtype/range differ from the model's (e.g. uint16 for a uint8 model): refuse them, "
        "or stretch each linearly from its min/max or its 2nd/98th percentile to the model's range.",
    )(f)


def tile_size_option(default: int, help_text: str) -> Callable[[F], F]:
    """``--tile-size-px``: edge of the square tiles fed to the model, pixels."""
    return click.option(
        "--tile-size-px", default=default, show_default=True, type=click.IntRange(32, 8192), help=help_text
    )


PRECISIONS: tuple[str, ...] = values(Precision)


def precision_option(default: str, help_text: str) -> Callable[[F], F]:
    """``--precision``: the network's arithmetic (``pipeline.detection.Precision``)."""
    return click.option(
        "--precision", default=default, show_default=True, type=click.Choice(PRECISIONS), help=help_text
    )


def min_score_option(default: float | None, help_text: str = "Minimum score.") -> Callable[[F], F]:
    """``--min-score``: keep detections scoring at least this (0..1)."""
    return click.option(
        "--min-score",
        default=default,
        show_default=default is not None,
        type=finite_float_range(0.0, 1.0),
        help=help_text,
    )


def gsd_option(help_text: str) -> Callable[[F], F]:
    """``--gsd-m``: metres per model pixel (the resolution scenes are read, or labels resampled, at)."""
    return click.option("--gsd-m", default=None, type=click.FloatRange(min=0, min_open=True), help=help_text)


def _parse_class_map(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[tuple[str, str], ...]:
    """``Alive=Tree,Dead=Tree`` -> ((label, class), ...) (click callback; ``retinanet.class_map``)."""
    from retinanet.class_map import parse_rename

    if not value:
        return ()
    try:
        return parse_rename(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def class_map_option(help_text: str) -> Callable[[F], F]:
    """``--map LABEL=CLASS,...``: rename label classes before anything else (``retinanet.class_map``)."""
    return click.option(
        "--map",
        "class_map",
        default=None,
        metavar="LABEL=CLASS,...",
        callback=_parse_class_map,
        help=help_text,
    )
