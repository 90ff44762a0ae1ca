"""The compose stack refuses placeholder and short secrets (deploy/check-env.sh, run by a real `sh`).

The script is run here as the `check-env` service runs it, with the values of
`.env.example` and with fresh ones; the compose file is parsed to show that
every long-running service waits for it.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy._deploy_files import DOCKERFILE, ROOT, compose

SCRIPT = ROOT / "deploy" / "check-env.sh"
EXAMPLE = ROOT / ".env.example"
SERVICES = compose()["services"]
MIN_CHARS = {"RAY_AUTH_TOKEN": 32, "MINIO_ROOT_PASSWORD": 24, "S3_SECRET_KEY": 24}
SH = shutil.which("sh")


def example_values() -> dict[str, str]:
    """The variables of .env.example and their values."""
    return dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", EXAMPLE.read_text(), re.MULTILINE))


def fresh() -> dict[str, str]:
    """Values as `openssl rand -hex N` makes them."""
    return {
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "MINIO_ROOT_PASSWORD": secrets.token_hex(24),
        "S3_SECRET_KEY": secrets.token_hex(24),
    }


def check(env: dict[str, str], example: Path | None = EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Run the script with only `env` (and PATH) in its environment."""
    argv = [SH, str(SCRIPT)] + ([str(example)] if example else [])
    return subprocess.run(
        argv,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


pytestmark = pytest.mark.skipif(SH is None, reason="needs a POSIX sh")


def test_the_examples_values_are_refused_naming_each_variable():
    result = check(example_values())
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    for name in MIN_CHARS:
        assert [line for line in lines if f" {name} " in line and "placeholder" in line], (name, lines)
    assert len(lines) == len(MIN_CHARS)  # one line per problem, no traceback or shell noise


def test_fresh_secrets_are_accepted():
    result = check(fresh())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("name", sorted(MIN_CHARS))
def test_a_short_secret_is_refused(name):
    env = fresh()
    env[name] = "a" * (MIN_CHARS[name] - 1)
    result = check(env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"check-env: {name} in .env is {MIN_CHARS[name] - 1} characters long, shorter than {MIN_CHARS[name]}; "
        f"replace it with a fresh secret: openssl rand -hex {MIN_CHARS[name]}"
    ]
    ok = fresh()
    ok[name] = "a" * MIN_CHARS[name]
    assert check(ok).returncode == 0


@pytest.mark.parametrize("name", sorted(MIN_CHARS))
def test_an_unset_or_empty_secret_is_refused(name):
    env = fresh()
    del env[name]
    assert f"{name} in .env is not set" in check(env).stderr
    env[name] = ""
    assert check(env).returncode == 1


def test_the_examples_own_value_is_refused_even_without_the_placeholder(tmp_path):
    """An example that someone filled in with a long value (then public in git) is still refused."""
    env = fresh()
    example = tmp_path / "env.example"
    example.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = check(env, example)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == len(MIN_CHARS)
    assert all("the value from .env.example, which is public" in line for line in result.stderr.splitlines())
    assert check(fresh(), example).returncode == 0


def test_a_placeholder_is_refused_whatever_its_length():
    env = fresh()
    env["S3_SECRET_KEY"] = "replace-with-" + "x" * 64
    result = check(env, example=None)
    assert result.returncode == 1 and "S3_SECRET_KEY" in result.stderr


def test_secret_values_are_never_printed():
    for env in (example_values(), fresh(), {**fresh(), "RAY_AUTH_TOKEN": "short-but-secret"}):
        result = check(env)
        for name in MIN_CHARS:
            if env.get(name):
                assert env[name] not in result.stdout + result.stderr


def test_an_unreadable_example_file_is_a_usage_error(tmp_path):
    result = check(fresh(), tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing" in result.stderr


def test_the_example_holds_only_secrets_the_check_refuses():
    """Each secret the check knows is in .env.example, with a value it refuses (a new one needs a check)."""
    values = example_values()
    assert set(MIN_CHARS) <= set(values)
    secretish = {k for k in values if re.search(r"TOKEN|PASSWORD|SECRET", k)}
    assert secretish == set(MIN_CHARS)


def test_every_long_running_service_waits_for_the_check():
    check_svc = SERVICES["check-env"]
    assert check_svc["restart"] == "no" and check_svc["network_mode"] == "none"
    long_running = [
        n for n, s in SERVICES.items() if n != "check-env" and "jobs" not in s.get("profiles", [])
    ]
    assert {"minio", "minio-init", "ray-head", "ray-worker", "ray-worker-gpu"} <= set(long_running)
    for name in long_running:
        depends = SERVICES[name].get("depends_on", {})
        assert depends.get("check-env", {}).get("condition") == "service_completed_successfully", name


def test_the_check_service_runs_the_script_the_image_copies_with_every_secret():
    command = SERVICES["check-env"]["command"]
    assert command[0] == "sh"
    copied = dict(
        reversed(m.groups())
        for m in re.finditer(r"^COPY\s+(\S+)\s+(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    )
    assert copied[command[1]] == "deploy/check-env.sh"
    assert copied[command[2]] == ".env.example"
    env = SERVICES["check-env"]["environment"]
    for name in MIN_CHARS:
        assert env[name].startswith(f"${{{name}:?"), name  # compose's own check for unset values stays
    # the values the services use, not look-alikes
    assert env["RAY_AUTH_TOKEN"] == SERVICES["ray-head"]["environment"]["RAY_AUTH_TOKEN"]
    assert env["MINIO_ROOT_PASSWORD"] == SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert env["S3_SECRET_KEY"] == SERVICES["ray-head"]["environment"]["AWS_SECRET_ACCESS_KEY"]
