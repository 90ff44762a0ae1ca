import pytest
from click.testing import CliRunner

from jobs.cli import _register_optional, cli

_register_optional()


@pytest.mark.parametrize(
    "command", ["detect", "train", "synth", "evaluate", "query", "quicklook", "import", "submit"]
)
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
