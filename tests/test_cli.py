"""The console script: every registered sub-command loads, and `--help` needs no torch."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rlscale.cli import _COMMANDS, main
from rlscale.operator import cli as operator_cli
from rlscale.operator.settings import OperatorSettings


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


def _run_settings(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> OperatorSettings:
    """Invoke ``rlscale run`` with Kopf (and its handlers) stubbed out; return the settings it would run with."""
    seen: dict[str, object] = {}
    monkeypatch.setitem(sys.modules, "rlscale.operator.handlers", types.ModuleType("rlscale.operator.handlers"))
    monkeypatch.setattr(operator_cli.kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(operator_cli.kopf, "configure", lambda **kwargs: None)
    monkeypatch.setattr(operator_cli, "return_freed_memory_promptly", lambda: True)
    result = CliRunner().invoke(main, ["run", "-n", "shop", *args], env=env)
    assert result.exit_code == 0, result.output
    settings = seen["memo"].settings  # type: ignore[attr-defined]
    assert isinstance(settings, OperatorSettings)
    return settings


def test_run_has_a_flag_and_a_variable_for_every_operator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    for name in OperatorSettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name
    assert _run_settings(monkeypatch, [], {}) == OperatorSettings()  # no flag, no variable: the model's defaults
    settings = _run_settings(
        monkeypatch,
        ["--workers", "3", "--prometheus-url-allowlist", "http://a/, http://b/", "--trust-custom-queries"],
        {"RLSCALE_METRICS_PORT": "0", "RLSCALE_START_SPREAD": "0", "RLSCALE_WORKERS": "5"},
    )
    assert settings.workers == 3  # the flag wins over the variable
    assert settings.metrics_port == 0 and settings.start_spread == 0.0
    assert settings.prometheus_url_allowlist == ("http://a/", "http://b/") and settings.trust_custom_queries
