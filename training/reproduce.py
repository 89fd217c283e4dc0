"""``rlscale reproduce NAME``: the experiments of the papers rlscale grew out of, re-run here.

Each experiment is a module that returns one JSON-able result — with a ``policies`` object
keyed by policy name, every metric as a mean over seeds plus ``_std`` / ``_min`` / ``_max``
(:func:`rlscale.training.evaluate.aggregate`) — and knows how to print it as a table and,
optionally, draw it. This module is the registry and the shared table printer; the
experiments run in the project's simulator, through :func:`rlscale.policy.decide.decide`,
and docs/experiments.md sets each table beside the paper's numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Experiment:
    """One reproducible experiment: ``module`` provides ``run(seeds, progress, **options)``, ``format`` and ``plot``."""

    name: str
    module: str
    summary: str
    default_seeds: int

    def _mod(self) -> Any:
        return importlib.import_module(self.module)

    def run(self, seeds: int, progress: Callable[[str], None], steps: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._mod().run(range(seeds), progress=progress, steps=steps)
        return result

    def format(self, result: dict[str, Any]) -> str:
        text: str = self._mod().format_result(result)
        return text

    def plot(self, result: dict[str, Any], path: Path) -> None:
        self._mod().plot_result(result, path)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "five-levels",
            "rlscale.training.five_levels",
            "5 allocation levels, reward −(latency + α·resources): PPO vs static 3 and proportional",
            5,
        ),
        Experiment(
            "orchestration",
            "rlscale.training.orchestration",
            "PPO vs a tuned threshold autoscaler, the heuristic and DQN, with a 3× surge and recovery time",
            3,
        ),
        Experiment(
            "grpo",
            "rlscale.training.grpo_study",
            "GRPO vs PPO on equal environment-step budgets: learning curves and final evaluation",
            3,
        ),
        Experiment(
            "actor-critic-alibaba",
            "rlscale.training.alibaba_study",
            "the TH / LAT / RU / COST table on the Alibaba 2018 trace (70/15/15 chronological split)",
            3,
        ),
    )
}


def mean_std(metrics: dict[str, float], key: str, digits: int) -> str:
    """``mean ± std`` of an aggregated metric."""
    return f"{metrics[key]:.{digits}f} ± {metrics[key + '_std']:.{digits}f}"


def format_table(
    title: str, policies: dict[str, dict[str, float]], columns: Sequence[tuple[str, str, int]], *, first: str = "policy"
) -> str:
    """A plain-text table: one row per policy, columns ``(metric key, heading, decimals)`` as mean ± std."""
    rows = [[first, *(h for _, h, _ in columns)]]
    for name, m in policies.items():
        rows.append([name, *(mean_std(m, key, d) if key in m else "—" for key, _, d in columns)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title]
    for row in rows:
        cells = (c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot_bars(result: dict[str, Any], columns: Sequence[tuple[str, str, int]], path: Path, title: str) -> None:
    """One bar chart per metric (mean with the std as error bar), policies side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["policies"])
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.6), squeeze=False)
    for ax, (key, heading, _) in zip(axes[0], columns, strict=True):
        means = [result["policies"][n].get(key, float("nan")) for n in names]
        stds = [result["policies"][n].get(key + "_std", 0.0) for n in names]
        ax.bar(range(len(names)), means, yerr=stds, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_title(heading, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["EXPERIMENTS", "Experiment", "format_table", "mean_std", "plot_bars"]
