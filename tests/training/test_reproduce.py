"""``rlscale reproduce``: every experiment is registered, and five-levels runs end to end with a PPO row."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlscale.cli import main
from rlscale.training.reproduce import EXPERIMENTS


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_has_run_format_and_plot(name: str) -> None:
    module = importlib.import_module(EXPERIMENTS[name].module)
    for attr in ("run", "format_result", "plot_result"):
        assert callable(getattr(module, attr)), f"{EXPERIMENTS[name].module} lacks {attr}"


@pytest.mark.slow
def test_five_levels_trains_ppo_and_reports_every_policy(tmp_path: Path) -> None:
    plot = tmp_path / "five.png"
    result = CliRunner().invoke(
        main, ["reproduce", "five-levels", "--seeds", "1", "--steps", "4096", "--json", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["policies"]) == {"static (3 units)", "proportional (1 unit per 25 load)", "PPO (trained here)"}
    ppo = report["policies"]["PPO (trained here)"]
    assert ppo["mean_latency_ms"] > 0 and 0 < ppo["utilisation"] <= 1
    assert report["ppo"]["training"][0]["steps"] == 4096
    assert plot.stat().st_size > 1000
