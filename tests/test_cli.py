"""The CLI is a thin layer: every command has help, and `train` runs through CliRunner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from soundflow.cli.main import COMMANDS, cli


def test_top_level_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "export"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    group = CliRunner().invoke(cli, ["--help"]).output
    assert name in group, f"`soundflow --help` does not list {name}"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_train_unknown_recipe_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    result = CliRunner().invoke(cli, ["train", "--recipe", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown recipe 'nope'" in result.output and "smoke" in result.output
