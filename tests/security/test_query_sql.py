"""What SQL a query may reach (issue 25).

Before: every query connection was full DuckDB with extension auto-install on,
``read_detections(where=...)`` ran any expression (a subquery over
``read_text`` read any file), and ``--help`` did not say that ``--sql`` is shell
access.  Now ``where=`` is parsed by DuckDB and must be a plain expression,
every connection but ``run_sql``'s is locked to the output's files, and no
connection installs or auto-loads extensions.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from click.testing import CliRunner

from jobs.query import query_command
from pipeline.query import QueryError, connect, open_view, read_detections, run_sql, summary
from tests.unit.pipeline.test_query import write_detections


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "out"
    write_detections(out, "/data/a.tif")
    return out


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("car")
    return path


@pytest.mark.parametrize(
    ("where", "refused"),
    [
        ("label = (SELECT content FROM read_text('{secret}'))", "a subquery is not allowed"),
        ("EXISTS (SELECT * FROM read_csv('{secret}'))", "a subquery is not allowed"),
        ("label IN (SELECT * FROM glob('/*'))", "a subquery is not allowed"),
        ("true FROM read_text('{secret}')", "must be one boolean expression over the columns, not a query"),
        ("current_setting('threads') > 0", "function current_setting() is not allowed"),
        ("sum(score) OVER () > 0", "a window expression is not allowed"),
        ("list_filter([1], x -> x > 0) = [1]", "function list_filter() is not allowed"),
        ("true; COPY (SELECT 1) TO '{secret}.csv'", "not a query"),
    ],
)
def test_where_refuses_what_is_not_a_plain_expression(dataset, secret, where, refused):
    # before: the subqueries read the file (label = 'car' -> 2 rows), the rest ran or failed unnamed
    with pytest.raises(QueryError, match="where=") as info:
        read_detections(dataset, where=where.format(secret=secret))
    assert refused in str(info.value)
    assert not (secret.parent / "secret.txt.csv").exists()


def test_where_keeps_columns_comparisons_and_spatial_functions(dataset):
    where = (
        "score >= 0.5 AND label IN ('car', 'tree') AND NOT (scene LIKE '%b.tif') AND bbox.xmin BETWEEN 0 AND 1e9 "
        "AND ST_Intersects(geometry, ST_MakeEnvelope(499000, 4990000, 501000, 5001000)) AND abs(score - 0.8) < 0.2"
    )
    assert sorted(read_detections(dataset, where=where)["score"]) == pytest.approx([0.7, 0.9])


def test_the_filter_connection_reads_only_the_outputs_files(dataset, secret):
    con, _ = open_view(dataset)
    assert con.execute("SELECT count(*) FROM detections").fetchone()[0] == 3
    with pytest.raises(Exception, match="disabled by configuration"):
        con.execute(f"SELECT content FROM read_text('{secret}')")  # before: returned 'car'
    with pytest.raises(Exception, match="disabled by configuration"):
        con.execute(f"COPY (SELECT 1) TO '{secret.parent / 'w.csv'}'")
    with pytest.raises(Exception, match="locked"):
        con.execute("SET enable_external_access = true")
    assert not (secret.parent / "w.csv").exists()


def test_a_file_with_glob_characters_is_readable_under_the_lock(dataset, tmp_path):
    (src,) = dataset.glob("*.parquet")
    odd = tmp_path / "x[1].parquet"
    shutil.copy(src, odd)
    assert len(read_detections(odd, where="score > 0.5")) == 2
    assert summary(odd)["num_detections"] == 3


def test_no_connection_installs_or_autoloads_extensions(dataset):
    settings = "autoinstall_known_extensions, autoload_known_extensions, allow_community_extensions"
    names = [s.strip() for s in settings.split(",")]
    row = connect().execute(f"SELECT {', '.join(f'current_setting({n!r})' for n in names)}").fetchone()
    assert row == (False, False, False)  # before: (True, True, True)
    table = run_sql(dataset, f"SELECT {', '.join(f'current_setting({n!r}) AS {n}' for n in names)}")
    assert table.to_pylist() == [dict.fromkeys(names, False)]


def test_run_sql_stays_full_power_for_the_owner(dataset, secret):
    # --sql is the owner's own SQL (shell access): it is not locked
    assert run_sql(dataset, f"SELECT content FROM read_text('{secret}')").to_pylist() == [{"content": "car"}]


def test_help_says_sql_is_shell_access():
    result = CliRunner().invoke(query_command, ["--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "this is shell access: it can read and write any file this user can" in text  # before: absent


def test_an_s3_output_is_queried_under_the_lock(dataset, secret, s3_server):
    import boto3

    bucket = f"q-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket=bucket)
    (src,) = dataset.glob("*.parquet")
    s3.upload_file(str(src), bucket, f"out/{src.name}")
    uri = f"s3://{bucket}/out"
    assert len(read_detections(uri, where="score > 0.5")) == 2
    con, _ = open_view(uri)
    with pytest.raises(Exception, match="disabled by configuration"):
        con.execute(f"SELECT content FROM read_text('{secret}')")
