"""docker-compose.yml and the Dockerfile agree with the project (parsed; Docker is not run here)."""

from __future__ import annotations

import re
import sys

import click
import jsonschema
import pytest
import ray
from packaging.specifiers import SpecifierSet

from jobs.cli import _register_optional, cli
from tests.deploy._deploy_files import (
    COMPOSE,
    ROOT,
    compose,
    dockerfile_args,
    makefile_torch_pins,
    schema,
)

_register_optional()
SERVICES = compose()["services"]
RAY_NODES = ["ray-head", "ray-worker", "ray-worker-gpu"]


def _flags(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*getattr(p, "opts", []), *getattr(p, "secondary_opts", []))}


def resolve(argv: list[str]) -> tuple[list[click.Command], list[str]]:
    """`aerialdet A B ...` -> the commands whose flags may appear, and the remaining arguments."""
    command: click.Command = cli
    rest = argv[1:]
    while isinstance(command, click.Group):
        assert rest and rest[0] in command.commands, f"`aerialdet` has no command {' '.join(argv[:3])!r}"
        command, rest = command.commands[rest[0]], rest[1:]
    accepted = [command]
    if command.name in ("detect", "train") and argv[1] == "submit":  # arguments passed through to the job
        accepted.append(cli.commands[command.name])
    return accepted, rest


def test_compose_file_is_valid_compose_spec():
    validator = jsonschema.Draft7Validator(schema("compose-spec.json"))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors


def test_services_are_the_deployment():
    assert {"minio", "minio-init", "ray-head", "ray-worker", "ray-worker-gpu", "train", "detect"} <= set(
        SERVICES
    )
    # workers scale with --scale: no fixed container name or host port
    for name in ("ray-worker", "ray-worker-gpu"):
        assert "container_name" not in SERVICES[name] and "ports" not in SERVICES[name]
    gpu = SERVICES["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert "--num-gpus=1" in gpu["command"]


def test_health_checks_and_named_volumes():
    for name in ("minio", "ray-head", "ray-worker", "ray-worker-gpu"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert SERVICES["ray-head"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    declared = set(compose()["volumes"])
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {vol}; use a named volume"
            assert source in declared, name
    assert "mb --ignore-existing" in SERVICES["minio-init"]["command"][0]


@pytest.mark.parametrize("name", [n for n in SERVICES if SERVICES[n].get("command", [""])[0] == "aerialdet"])
def test_every_aerialdet_command_and_flag_exists(name):
    argv = SERVICES[name]["command"]
    commands, rest = resolve(argv)
    accepted = set().union(*(_flags(c) for c in commands))
    passed = {a.split("=")[0] for a in rest if a.startswith("--")}
    assert passed <= accepted, f"{name}: {sorted(passed - accepted)}"


def test_ray_processes_agree():
    head = SERVICES["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    gcs_port = next(a.split("=")[1] for a in head if a.startswith("--port="))
    dash_port = next(a.split("=")[1] for a in head if a.startswith("--dashboard-port="))
    for name in ("ray-worker", "ray-worker-gpu"):
        cmd = SERVICES[name]["command"]
        assert cmd[:2] == ["ray", "start"] and "--block" in cmd
        assert f"--address=ray-head:{gcs_port}" in cmd, name
    for name in ("train", "detect"):
        cmd = SERVICES[name]["command"]
        assert cmd[cmd.index("--address") + 1] == f"http://127.0.0.1:{dash_port}"
        assert SERVICES[name]["network_mode"] == "service:ray-head"  # the head's own loopback


def test_jobs_read_scenes_from_the_minio_bucket():
    detect = SERVICES["detect"]["command"]
    assert detect[3].startswith("s3://")
    minio_port = SERVICES["minio"]["ports"][0].split(":")[-1]
    for name in RAY_NODES:
        assert SERVICES[name]["environment"]["AWS_ENDPOINT_URL"] == f"http://minio:{minio_port}", name
    # the bucket minio-init creates is the one detect reads
    assert (
        "${S3_BUCKET:-aerialdet}" in detect[3]
        and SERVICES["minio-init"]["environment"]["S3_BUCKET"] == "${S3_BUCKET:-aerialdet}"
    )


def test_image_versions_match_the_project():
    args = dockerfile_args()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM rayproject/ray:${RAY_VERSION}-${PY_TAG}${RAY_PLATFORM}" in dockerfile
    # Ray: the image's version is the one the project runs and tests with (same major.minor.patch)
    assert args["RAY_VERSION"] == ray.__version__
    # Python: the image's is one the project supports, and the one this venv runs
    py = re.fullmatch(r"py3(\d+)", args["PY_TAG"])
    assert py, args["PY_TAG"]
    requires = SpecifierSet(
        re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    )
    assert f"3.{py.group(1)}" in requires
    assert int(py.group(1)) == sys.version_info.minor
    # compose builds with the same arguments
    for name in ("ray-head", "ray-worker-gpu"):
        build = SERVICES[name]["build"]["args"]
        assert build["RAY_VERSION"] == args["RAY_VERSION"] and build["PY_TAG"] == args["PY_TAG"], name
    assert SERVICES["ray-worker-gpu"]["build"]["args"]["RAY_PLATFORM"] == "-gpu"


def test_torch_pins_match_make_install():
    assert set(dockerfile_args()["TORCH_PINS"].split()) == makefile_torch_pins()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--index-url ${TORCH_INDEX} ${TORCH_PINS}" in dockerfile


def test_image_runs_as_non_root_and_holds_no_secret():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    secretish = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
    for line in lines:
        if line.startswith(("ARG ", "ENV ")):
            assert not secretish.search(line.split("=")[0]), line
        assert not line.startswith("COPY . "), "copy named paths only"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", "data", "outputs"} <= set(ignored)


def test_env_example_names_every_variable_compose_needs():
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    required = set(re.findall(r"\$\{([A-Z0-9_]+)(?::\?|\})", COMPOSE.read_text()))
    assert required <= defined, sorted(required - defined)
