"""The console script: every registered sub-command loads, and `--help` needs no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rlscale.cli import _COMMANDS, main


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_command_loads(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output


def test_help_lists_commands_without_importing_torch(tmp_path: Path) -> None:
    probe = (
        "import sys; from rlscale.cli import main; import click.testing as t; "
        "r = t.CliRunner().invoke(main, ['--help']); print(r.output); assert 'torch' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    for name in _COMMANDS:
        assert name in out.stdout
