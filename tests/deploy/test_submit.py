"""`aerialdet submit`: what it sends (entrypoint, runtime env, token) and how it refuses, without a cluster.

The end-to-end run against `ray start --head` with token auth is
tests/integration/test_job_submit.py.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from jobs import submit
from jobs.job_upload import stage_project
from tests.conftest import free_port
from tests.deploy._deploy_files import ROOT

TOKEN = "t0ken-" + "ab" * 16


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(submit.submit_command, list(args), env=env)


def test_job_env_forwards_endpoint_and_region_but_no_credential(monkeypatch):
    for name, value in {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_REGION": "eu-west-1",
        "GDAL_HTTP_TIMEOUT": "30",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "session",
        "GDAL_HTTP_USERPWD": "user:pw",
        "GDAL_HTTP_HEADERS": "Authorization: Bearer x",
        "AERIALDET_API_KEY": "k",
        "RAY_AUTH_TOKEN": TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    env = submit.job_env()
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_REGION"] == "eu-west-1"
    assert env["GDAL_HTTP_TIMEOUT"] == "30"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"} & set(
        env
    )
    assert not {"GDAL_HTTP_USERPWD", "GDAL_HTTP_HEADERS", "AERIALDET_API_KEY"} & set(env)


def test_runtime_env_uploads_the_project_code_only(tmp_path):
    """The staged working_dir holds every file of the project's packages, and nothing else of the checkout."""
    staged = tmp_path / "staged"
    staged.mkdir()
    assert stage_project(ROOT, staged) == []  # the project itself holds nothing that looks like a secret
    code = {
        str(p.relative_to(ROOT))
        for top in ("jobs", "pipeline", "retinanet")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()} == code | {
        "pyproject.toml",
        "README.md",
    }
    rt = submit.job_runtime_env(staged)
    assert rt == {"working_dir": str(staged), "env_vars": submit.job_env()}


def test_rasters_tables_and_caches_in_the_code_folders_stay_behind_silently(tmp_path):
    project, staged = tmp_path / "p", tmp_path / "s"
    for name in (
        "jobs/detect.py",
        "jobs/scene.tif",
        "jobs/x.TIFF",
        "jobs/t.parquet",
        "jobs/__pycache__/a.pyc",
    ):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    staged.mkdir()
    assert stage_project(project, staged) == []
    assert [str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()] == ["jobs/detect.py"]


def test_entrypoint_runs_the_job_module_with_quoted_args():
    cmd = submit.job_entrypoint("train", ["/out/my labels.parquet", "--out", "/out/r;rm -rf /"])
    assert shlex.split(cmd) == [
        "python",
        "-m",
        "jobs.train",
        "/out/my labels.parquet",
        "--out",
        "/out/r;rm -rf /",
    ]
    assert submit.job_entrypoint("detect", ["s3://b/p/"]) == "python -m jobs.detect s3://b/p/"


def test_token_lookup_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(submit.UserError, match="no Ray auth token"):
        submit.read_token(None)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home\n")
    assert submit.read_token(None) == "home"
    (tmp_path / "p").write_text("path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "p"))
    assert submit.read_token(None) == "path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env")
    assert submit.read_token(None) == "env"
    (tmp_path / "f").write_text(" file \n")
    assert submit.read_token(str(tmp_path / "f")) == "file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(submit.UserError, match="empty"):
        submit.read_token(str(tmp_path / "empty"))
    with pytest.raises(submit.UserError, match="missing"):
        submit.read_token(str(tmp_path / "missing"))


@pytest.mark.parametrize("address", ["127.0.0.1:8265", "ray://head:10001", "http://user:pw@host:8265"])
def test_bad_address_is_a_usage_error(address):
    with pytest.raises(click.BadParameter):
        submit.check_address(address)


def test_plain_http_to_another_host_warns(capsys):
    assert submit.check_address("http://127.0.0.1:8265/") == "http://127.0.0.1:8265"
    assert capsys.readouterr().err == ""
    submit.check_address("http://10.0.0.5:8265")
    assert "unencrypted" in capsys.readouterr().err


def test_unknown_job_flag_is_refused_before_anything_is_sent():
    result = run(
        "detect", "s3://b/", "--model", "m", "--out", "o", "--tile-size", "512", "--token-file", "/x"
    )
    assert result.exit_code == 2 and "has no option --tile-size" in result.output
    submit.check_job_flags("train", ["l.parquet", "--out", "o", "--gpus", "--lr", "-1e-3", "-v"])


def test_wrong_working_dir_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    result = run("detect", "s3://b/", "--model", "m", "--out", "o", "--working-dir", str(tmp_path))
    assert result.exit_code == 2 and "no jobs/detect.py" in result.output


def test_unreachable_job_api_is_one_line_exit_2_and_never_shows_the_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cmd = [sys.executable, "-m", "jobs.submit", "detect", "s3://b/", "--model", "m", "--out", "o"]
    cmd += ["--address", address, "--token-file", str(token_file)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_help_says_credentials_stay_on_the_nodes():
    result = run("detect", "--help")
    assert result.exit_code == 0 and "$ aerialdet submit detect" in result.output
    assert "never its credentials" in result.output and "SSH tunnel" in result.output
