"""Help and good runs of the CLI; every user error (exit 2, one line) is in tests/bad_input/test_cli_user_errors.py."""

import pytest
from click.testing import CliRunner

from jobs.cli import _register_optional, cli

_register_optional()


@pytest.mark.parametrize(
    "command", ["detect", "train", "synth", "evaluate", "query", "quicklook", "import", "submit", "export"]
)
def test_help_exits_zero_with_examples(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "$ " in result.output or "Example" in result.output


def test_synth_cli(tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), "--scenes", "1", "--size-px", "128"])
    assert (
        result.exit_code == 0
        and (tmp_path / "scene_000.tif").exists()
        and (tmp_path / "labels.parquet").exists()
    )
