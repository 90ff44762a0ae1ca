"""Hostile filter values for the query API and CLI: a clean error or the right rows, never SQL.

Generated strings mix SQL fragments (quotes, ``?``, ``;``, comments, a ``COPY``
to a canary file, ``read_text``), NUL bytes and plain text.  Each result is
compared with the rows a plain Python filter keeps, and the canary file must
never appear: a value that ran as SQL would either change the rows or write
it.  Numbers include NaN and infinities, and values of the wrong type are fed
to the API.  One small dataset is shared and examples are few, to stay fast.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.query import query_command, quicklook_command
from pipeline.query import Filters, QueryError, read_detections
from tests.unit.pipeline.test_query import write_detections

ROWS = [("car", 0.9), ("tree", 0.4), ("car", 0.7)]  # what write_detections writes
SCENE = "/data/a.tif"
# each query opens DuckDB and loads its spatial extension (~0.2 s): few examples per test
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    write_detections(root / "out", SCENE)
    return root


def _fragments(canary: Path) -> list[str]:
    return [
        "'",
        '"',
        "''",
        "$$",
        "?",
        "$1",
        ";",
        "--",
        "/*",
        "*/",
        "\x00",
        "%",
        "_",
        "\\",
        ") OR true --",
        "' OR '1'='1",
        "car",
        "a.tif",
        f"); COPY (SELECT 1 AS a) TO $${canary}$$; --",
        f"'); COPY (SELECT 1 AS a) TO '{canary}'; --",
        ") OR (SELECT count(*) FROM read_text('/etc/hostname')) > 0 --",
    ]


def hostile_text(canary: Path) -> st.SearchStrategy[str]:
    """Strings built from SQL fragments, NUL and plain characters."""
    piece = st.sampled_from(_fragments(canary)) | st.text(max_size=4)
    return st.lists(piece, max_size=5).map("".join)


def _canary(dataset: Path) -> Path:
    return dataset / "canary.csv"


def _scene_matches(value: str) -> bool:
    return value in (SCENE,) or SCENE.endswith("/" + value)


@FUZZ
@given(data=st.data())
def test_labels_and_scenes_are_values(dataset, data):
    canary = _canary(dataset)
    labels = data.draw(st.lists(hostile_text(canary), max_size=3))
    scenes = data.draw(st.lists(hostile_text(canary), max_size=2))
    got = read_detections(dataset / "out", labels=labels, scenes=scenes)
    expected = [
        score
        for label, score in ROWS
        if (not labels or label in labels) and (not scenes or any(map(_scene_matches, scenes)))
    ]
    assert sorted(got["score"]) == pytest.approx(sorted(expected))
    assert not canary.exists()


NUMBER = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf])
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.binary(max_size=4),
    st.text(max_size=4),
    st.dictionaries(st.text(), st.integers()),
)


@FUZZ
@given(bbox=st.lists(NUMBER | WRONG, min_size=0, max_size=5) | WRONG, min_score=NUMBER | WRONG)
def test_numbers_and_wrong_types_are_clean_errors(dataset, bbox, min_score):
    try:
        got = read_detections(dataset / "out", bbox=bbox, min_score=min_score)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # accepted: then every value was a finite number, and the rows are the right ones
    assert min_score is None or math.isfinite(min_score)
    expected = [s for _, s in ROWS if min_score is None or s >= min_score]
    if bbox is None:
        assert sorted(got["score"]) == pytest.approx(sorted(expected))
    else:
        assert len(got) <= len(expected)


NOT_A_LIST = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=4), st.text(max_size=4))
NOT_A_STRING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=4))


@FUZZ
@given(
    field=st.sampled_from(["labels", "scenes"]),
    value=NOT_A_LIST | st.lists(NOT_A_STRING, min_size=1, max_size=2),
)
def test_wrong_types_for_names_are_refused(field, value):
    # a bare string is refused too: read as characters, "car" would have been three labels
    with pytest.raises(QueryError, match=f"{field} must be a list of strings"):
        Filters(**{field: value})


def _clean_exit(result) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


CLI_NUMBER = st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "", "1;", "0.5", "-1", "2"])


@FUZZ
@given(data=st.data())
def test_query_cli_gives_rows_or_one_usage_error(dataset, data):
    canary = _canary(dataset)
    args = [str(dataset / "out")]
    for label in data.draw(st.lists(hostile_text(canary).filter(lambda s: "\x00" not in s), max_size=2)):
        args += ["--label", label]
    for scene in data.draw(st.lists(hostile_text(canary).filter(lambda s: "\x00" not in s), max_size=1)):
        args += ["--scene", scene]
    if data.draw(st.booleans()):
        args += ["--min-score", data.draw(CLI_NUMBER)]
    if data.draw(st.booleans()):
        args += ["--bbox", *data.draw(st.lists(CLI_NUMBER, min_size=4, max_size=4))]
    args += data.draw(st.sampled_from([[], ["--summary"], ["--format", "csv"]]))
    _clean_exit(CliRunner().invoke(query_command, args))
    assert not canary.exists()


@settings(FUZZ, max_examples=10)
@given(scene=hostile_text(Path("/nonexistent/canary.csv")).filter(lambda s: "\x00" not in s))
def test_quicklook_cli_scene_names(dataset, scene):
    png = dataset / "q.png"
    result = CliRunner().invoke(quicklook_command, [str(dataset / "out"), "--scene", scene, "-o", str(png)])
    _clean_exit(result)
    assert result.exit_code == 2  # no such scene: its detections name /data/a.tif, which does not exist
