"""The figure of ``rlscale evaluate-budget --plot``: who held the budget, and who paid for it.

Top: CPU allocated by each member over time under each policy (stacked, first seed), with
the budget as a line. Bottom: each member's SLO-violation minutes per policy (mean over
seeds), so a policy that lowers the total by starving one member shows it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from rlscale.training.budget_eval import BudgetEvaluation


def plot_budget(evaluation: BudgetEvaluation, out: Path) -> Path:
    """Write the PNG to ``out`` and return it."""
    policies = list(evaluation.logs)
    fig, axes = plt.subplots(2, len(policies), figsize=(5 * len(policies), 7), squeeze=False)
    report = evaluation.report()
    for i, name in enumerate(policies):
        logs = evaluation.logs[name][0]
        hours = np.arange(len(logs[0])) * logs[0].step_s / 3600.0
        stacked = np.array([log.steps["cpu_allocated_m"] / 1000.0 for log in logs])
        ax = axes[0][i]
        ax.stackplot(hours, stacked, labels=evaluation.members)
        ax.axhline(evaluation.budget_cores, color="black", linestyle="--", label="budget")
        ax.set_title(f"{name}: CPU allocated (seed {evaluation.seeds[0]})")
        ax.set_xlabel("hours")
        ax.set_ylabel("cores")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
        members = report["policies"][name]["members"]
        bar = axes[1][i]
        bar.bar(range(len(members)), [m["slo_violation_minutes"] for m in members.values()])
        bar.set_xticks(range(len(members)), [m.split("_")[0] for m in members], fontsize=8)
        bar.set_title(f"SLO-violation minutes (Jain {report['policies'][name]['jain_index']:.3f})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
