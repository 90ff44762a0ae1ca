"""`aerialdet submit` sends the cluster no secret: not in the uploaded package, not in the job's environment.

Issue 25: submit forwarded harmless-looking secrets (GDAL_HTTP_COOKIE, URLs
with user:password@, any AERIALDET_*) into the job's runtime env, which Ray
keeps in its job table and logs, and uploaded .aws/credentials, .ssh/id_rsa,
.netrc, *.pem, service-account and token files with the working directory.
Issue 24: `--address` forwarded the driver's GDAL_CURL_CA_BUNDLE path.

The package is built from the exact runtime env submit hands to
`JobSubmissionClient.submit_job`, by Ray's own packaging code (the same
calls the client makes before its HTTP PUT of the zip).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from jobs import submit
from jobs.job_env import forwarded_env
from tests.deploy._deploy_files import ROOT
from tests.deploy.test_submit import TOKEN

CANARY = "canary-SECRET-25b7c0d4e9"

# planted at the project root and inside the uploaded folders: none may reach the package
PLANTED = (
    ".aws/credentials",
    ".ssh/id_rsa",
    ".netrc",
    "key.pem",
    "service-account.json",
    ".env.local",
    ".env.production",
    "token",
)
INSIDE = ("jobs", "pipeline", "retinanet")


def _project_copy(tmp_path: Path) -> Path:
    """This checkout (less .git, .venv and caches) with every PLANTED file at its root and in INSIDE."""
    project = tmp_path / "project"
    junk = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "demo_out", "outputs", "data")
    shutil.copytree(ROOT, project, ignore=junk)
    for folder in ("", *INSIDE):
        for planted in PLANTED:
            path = project / folder / planted
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{CANARY} {folder}/{planted}\n")
    # a harmless name that links to a secret: Ray's zip would follow the link
    (project / "jobs" / "settings.py").symlink_to(project / ".aws" / "credentials")
    return project


def _ray_package(runtime_env: dict, tmp_path: Path) -> dict[str, bytes]:
    """The zip Ray's JobSubmissionClient would upload for ``runtime_env``: name -> content."""
    from ray._private.runtime_env.packaging import create_package
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    zip_path = tmp_path / "package.zip"

    def build(working_dir: str, excludes: list[str] | None, is_file: bool = False) -> None:
        assert not is_file
        create_package(working_dir, zip_path, include_gitignore=True, excludes=excludes)

    upload_working_dir_if_needed(dict(runtime_env), include_gitignore=True, upload_fn=build)
    with zipfile.ZipFile(io.BytesIO(zip_path.read_bytes())) as package:
        return {name: package.read(name) for name in package.namelist() if not name.endswith("/")}


def test_the_uploaded_package_holds_the_code_and_none_of_the_planted_secrets(tmp_path, capsys):
    project = _project_copy(tmp_path)

    with submit.prepared_runtime_env(project) as runtime_env:
        err = capsys.readouterr().err  # what submit said (before Ray's own log lines)
        package = _ray_package(runtime_env, tmp_path)

    assert {"jobs/detect.py", "jobs/train.py", "pipeline/reading.py", "retinanet/model.py"} <= set(package)
    assert {"pyproject.toml", "README.md", "pipeline/schema/geoparquet-1.1.schema.json"} <= set(package)
    # an allowlist: nothing of the project but its code (no tests/, docs/, Dockerfile ...)
    assert {name.split("/", 1)[0] for name in package} == {
        "pyproject.toml",
        "README.md",
        "jobs",
        "pipeline",
        "retinanet",
    }
    leaked = [name for name, content in package.items() if CANARY.encode() in content]
    assert leaked == []
    for planted in PLANTED:
        assert not any(name.endswith(planted) for name in package), planted
    # the files left out inside the uploaded folders are named, on one line, without their content
    assert len(err.strip().splitlines()) == 1 and CANARY not in err
    for folder in INSIDE:
        for planted in (
            "key.pem",
            "service-account.json",
            ".env.local",
            ".env.production",
            "token",
            ".netrc",
        ):
            assert f"{folder}/{planted}" in err
        assert f"{folder}/.aws/" in err and f"{folder}/.ssh/" in err
    assert "jobs/settings.py" in err


def test_no_secret_part_of_the_environment_reaches_the_job(monkeypatch, capsys):
    for name, value in {
        "GDAL_HTTP_COOKIE": f"session={CANARY}",
        "HTTPS_PROXY": f"http://u:{CANARY}@proxy:3128",
        "AWS_ENDPOINT_URL": f"http://u:{CANARY}@host:9000",
        "AERIALDET_SECRET": "x",
        "GDAL_CURL_CA_BUNDLE": "/x",
        "RAY_AUTH_TOKEN": TOKEN,
    }.items():
        monkeypatch.setenv(name, value)

    with submit.prepared_runtime_env(ROOT) as runtime_env:
        recorded = json.dumps(runtime_env)  # what Ray keeps in its job table

    env = runtime_env["env_vars"]
    assert CANARY not in recorded and TOKEN not in recorded
    assert not {"GDAL_HTTP_COOKIE", "HTTPS_PROXY", "AERIALDET_SECRET", "GDAL_CURL_CA_BUNDLE"} & set(env)
    assert env["AWS_ENDPOINT_URL"] == "http://host:9000"
    # the same for `--address` (jobs/ray_session.py passes forwarded_env() to ray.init)
    assert forwarded_env() == env
    err = capsys.readouterr().err
    assert "AWS_ENDPOINT_URL" in err and CANARY not in err


def test_aerialdet_variables_travel_by_name_only(monkeypatch):
    monkeypatch.setenv("AERIALDET_SECRET", "x")
    monkeypatch.setenv("AERIALDET_DB", f"postgres://u:{CANARY}@db/x")
    monkeypatch.setenv("AERIALDET_TEST_FAIL_AT_STEP", "3")  # read by retinanet/ray_train.py on workers
    env = forwarded_env()
    assert {name for name in env if name.startswith("AERIALDET_")} == {"AERIALDET_TEST_FAIL_AT_STEP"}


def test_ca_bundles_and_other_paths_stay_on_the_driver(monkeypatch):
    """Issue 24: a path on the driver's disk means nothing on a node; nodes configure their own CA bundle."""
    paths = (
        "GDAL_CURL_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "GDAL_HTTP_COOKIEFILE",
    )
    for name in paths:
        monkeypatch.setenv(name, f"/home/me/{name.lower()}.pem")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "30")
    env = forwarded_env()
    assert not set(paths) & set(env)
    assert env["GDAL_HTTP_TIMEOUT"] == "30"


@pytest.mark.parametrize(
    ("name", "value", "forwarded"),
    [
        ("AWS_ENDPOINT_URL", f"https://me:{CANARY}@minio.internal:9000", "https://minio.internal:9000"),
        ("AWS_ENDPOINT_URL_S3", f"http://{CANARY}@[::1]:9000/", "http://[::1]:9000/"),
        ("AWS_S3_ENDPOINT", f"me:{CANARY}@minio:9000", "minio:9000"),  # GDAL's form: no scheme
    ],
)
def test_a_url_loses_its_userinfo_with_one_warning_naming_the_variable(
    monkeypatch, capsys, name, value, forwarded
):
    monkeypatch.setenv(name, value)
    assert forwarded_env()[name] == forwarded
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and CANARY not in lines[0]
