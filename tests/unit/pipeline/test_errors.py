"""``pipeline.errors.first_line``: the one "first line of an exception" helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import first_line

ROOT = Path(__file__).resolve().parents[3]

# Copies outside the files this change could edit; fold them into first_line and drop them here.
KNOWN_COPIES = {
    "pipeline/errors.py",  # first_line itself
    "pipeline/query.py",  # _one_line joins the first two lines (DuckDB puts the cause on line 2)
    "retinanet/checkpoint_weights.py",  # str(exc).splitlines()[0] inline
    "retinanet/geo_labels.py",  # (str(exc).splitlines() or [name])[0] inline
    "jobs/train.py",  # last non-empty line of TrainingFailedError (first_line picks the cause line too)
}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad band 4"), "bad band 4"),
        (ValueError("\n  first\nsecond"), "first"),
        (ValueError(""), "ValueError"),
        (
            RuntimeError("Traceback ...\n  File x\n\x1b[31mValueError: bad band 4\x1b[0m\n"),
            "ValueError: bad band 4",
        ),
        (OSError("x" * 600), "x" * 500),
    ],
)
def test_first_line(exc: BaseException, expected: str) -> None:
    assert first_line(exc) == expected


def test_no_other_copy_of_the_helper() -> None:
    """No module but ``pipeline/errors.py`` defines ``_first_line`` or splits ``str(exc)`` into lines."""
    copy = re.compile(r"def _first_line\b|str\(exc\)(\.strip\(\))?\.(splitlines\(|split\(\"\\n\"\))")
    found = [
        str(path.relative_to(ROOT))
        for package in ("pipeline", "retinanet", "jobs", "bench")
        for path in sorted((ROOT / package).rglob("*.py"))
        if copy.search(path.read_text()) and str(path.relative_to(ROOT)) not in KNOWN_COPIES
    ]
    assert found == []
