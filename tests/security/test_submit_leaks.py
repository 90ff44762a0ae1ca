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
import shutil
import zipfile
from pathlib import Path

from jobs import submit
from tests.deploy._deploy_files import ROOT

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
