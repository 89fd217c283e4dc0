"""The ``rlscale`` console script.

Sub-commands live next to the code they drive and are imported lazily, so that
``rlscale run`` (the operator) never imports torch and ``rlscale --help`` is fast.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
_COMMANDS: dict[str, str] = {
    "calibrate": "rlscale.devstack.calibrate:calibrate_cmd",
    "cluster": "rlscale.devstack.cli:cluster",
    "crd": "rlscale.operator.crd:crd_command",
    "demo": "rlscale.devstack.demo:demo",
    "evaluate": "rlscale.training.cli:evaluate_cmd",
    "evaluate-all": "rlscale.training.cli:evaluate_all_cmd",
    "evaluate-budget": "rlscale.training.budget_cli:evaluate_budget_cmd",
    "export": "rlscale.training.cli:export_cmd",
    "history": "rlscale.history:history_cmd",
    "real-ranking": "rlscale.devstack.real_ranking:real_ranking_cmd",
    "reproduce": "rlscale.training.cli:reproduce_cmd",
    "run": "rlscale.operator.cli:run",
    "seed000": "rlscale.training.cli:seed000_cmd",
    "train": "rlscale.training.cli:train_cmd",
    "train-budget": "rlscale.training.budget_cli:train_budget_cmd",
}


class _LazyGroup(click.Group):
    """A click group that imports each sub-command only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="rlscale")
def main() -> None:
    """rlscale: RL-driven Kubernetes autoscaling."""
