from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from jobs.cli import _register_optional, cli

_register_optional()
ROOT = Path(__file__).parents[3]


@pytest.mark.parametrize("command", ["detect", "train", "synth", "evaluate", "query", "quicklook"])
def test_help_exits_zero_with_examples(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "$ " in result.output or "Example" in result.output


def test_bad_flag_exits_two():
    result = CliRunner().invoke(cli, ["detect", "x", "--model", "m", "--out", "o", "--tile-size-px", "nope"])
    assert result.exit_code == 2 and "--tile-size-px" in result.output


def test_detect_refuses_missing_checkpoint(tmp_path):
    result = CliRunner().invoke(
        cli, ["detect", str(tmp_path), "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "not a directory" in result.output


def test_detect_refuses_bad_crs(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "detect",
            str(tmp_path),
            "--model",
            "standin:blobs",
            "--out",
            str(tmp_path / "o"),
            "--assume-crs",
            "EPSG:nope",
        ],
    )
    assert result.exit_code == 2 and "--assume-crs" in result.output


def test_synth_cli(tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--scenes", "1", "--size-px", "128"])
    assert (
        result.exit_code == 0
        and (tmp_path / "scene_000.tif").exists()
        and (tmp_path / "labels.parquet").exists()
    )
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--crs", "EPSG:4326"])
    assert result.exit_code == 2 and "projected" in result.output


def test_docker_compose_runs_the_console_scripts():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"ray-head", "ray-worker", "detect", "train"} <= set(services)
    subcommands = set(cli.commands)
    for name, svc in services.items():
        cmd = svc["command"]
        assert cmd[0] in ("ray", "aerialdet"), name
        if cmd[0] == "aerialdet":
            assert cmd[1] in subcommands, name
            # every flag the compose file passes is one the command accepts
            params = {opt for p in cli.commands[cmd[1]].params for opt in getattr(p, "opts", [])}
            assert {a for a in cmd[2:] if a.startswith("--")} <= params, name
    worker_addr = services["ray-worker"]["command"][2].split("=", 1)[1]
    assert worker_addr.split(":")[0] == "ray-head"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("pipeline", "retinanet", "jobs", "pyproject.toml"):
        assert path in dockerfile and (ROOT / path).exists()
