"""Figures for evaluations and training runs (matplotlib, Agg backend: no display needed).

One figure per evaluation answers "what did each policy do when the load moved?": load
on top, replicas in the middle, p99 latency (log scale, with the SLO) at the bottom, all
policies on shared time axes, from the first seed's episode (the load is the same for
every policy within a seed).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from rlscale.training.evaluate import Evaluation

_COLOURS = {
    "learned": "tab:red",
    "tuned": "tab:purple",
    "hpa": "tab:blue",
    "static": "tab:grey",
    "heuristic": "tab:green",
}


def plot_evaluation(evaluation: Evaluation, out: Path) -> Path:
    """Load, replicas and p99 latency over time for every policy; writes ``out`` (PNG)."""
    runs = evaluation.runs
    if not runs:
        raise ValueError("nothing to plot: the evaluation has no policies")
    first = next(iter(runs.values())).logs[0]
    hours = np.arange(len(first)) * first.step_s / 3600.0
    slo = next(iter(runs.values())).config.objective.latency_slo_ms
    fig, (ax_load, ax_rep, ax_lat) = plt.subplots(3, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    ax_load.plot(hours, first.steps["request_rate"], color="black", linewidth=0.8)
    ax_load.set_ylabel("load (req/s)")
    ax_load.set_title(f"{evaluation.trace} [{evaluation.window}], seed {evaluation.seeds[0]}")
    for name, run in runs.items():
        log = run.logs[0]
        colour = _COLOURS.get(name)
        ax_rep.step(hours, log.steps["replicas"], where="post", label=name, color=colour, linewidth=1.0)
        ax_lat.plot(hours, np.maximum(log.steps["latency_p99_ms"], 1.0), label=name, color=colour, linewidth=0.8)
    ax_rep.set_ylabel("replicas")
    ax_rep.legend(loc="upper left", ncols=len(runs), fontsize="small")
    ax_lat.axhline(slo, color="black", linestyle="--", linewidth=0.8, label="SLO")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("p99 latency (ms)")
    ax_lat.set_xlabel("hours into the window")
    ax_lat.legend(loc="upper left", ncols=len(runs) + 1, fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_frontier(report: dict[str, Any], out: Path, ax: Any = None) -> Path:
    """Replica-hours (x) against SLO-violation minutes (y): the HPA grid and its Pareto frontier,
    the static grid, the clairvoyant and persistence oracles and every policy (mean ± std over runs); writes ``out``.
    """
    if "frontier" not in report:
        raise ValueError("nothing to plot: the evaluation was run without --frontier")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(8, 5.5), constrained_layout=True)
    hpa = report["frontier"]["hpa"]
    ax.scatter(
        [p["replica_hours"] for p in hpa],
        [p["slo_violation_minutes"] for p in hpa],
        s=14,
        color="tab:blue",
        alpha=0.35,
        label="HPA grid (target × stabilisation)",
    )
    front = sorted((p for p in hpa if p["pareto"]), key=lambda p: p["replica_hours"])
    ax.step(
        [p["replica_hours"] for p in front],
        [p["slo_violation_minutes"] for p in front],
        where="post",
        color="tab:blue",
        linewidth=1.2,
        label="HPA Pareto frontier",
    )
    static = report["frontier"].get("static", [])
    ax.scatter(
        [p["replica_hours"] for p in static],
        [p["slo_violation_minutes"] for p in static],
        marker="s",
        s=14,
        color="tab:grey",
        alpha=0.6,
        label="static grid",
    )
    o = report["oracle"]
    ax.scatter([o["replica_hours"]], [o["slo_violation_minutes"]], marker="*", s=160, color="gold", edgecolor="black",
               label="clairvoyant oracle", zorder=5)  # fmt: skip
    ax.axvline(o["replica_hours"], color="gold", linewidth=0.8, linestyle=":")
    best = (report.get("persistence") or {}).get("best_at_hpa_slo")
    if best:
        ax.scatter([best["replica_hours"]], [best["slo_violation_minutes"]], marker="P", s=110, color="white",
                   edgecolor="black", label="persistence oracle (past known exactly)", zorder=5)  # fmt: skip
    for name, run in report["policies"].items():
        ax.errorbar(
            run["replica_hours"],
            run["slo_violation_minutes"],
            xerr=run.get("replica_hours_std", 0.0),
            yerr=run.get("slo_violation_minutes_std", 0.0),
            fmt="o" if name in ("learned", "tuned") else "D",
            color=_COLOURS.get(name),
            markersize=7,
            label=name + ("" if name in ("learned", "tuned") else " (tuned on training window)"),
            zorder=6,
        )
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("replica-hours")
    ax.set_ylabel("SLO-violation minutes")
    ax.set_title(f"{report['trace']} [{report['window']}], {report['seeds']} seed(s)")
    ax.legend(fontsize="x-small", loc="upper right")
    if own:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return out


def plot_frontiers(reports: list[dict[str, Any]], out: Path) -> Path:
    """One frontier panel per trace (``evaluate-all --frontier``); writes ``out``."""
    cols = 2
    rows = (len(reports) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.6 * rows), constrained_layout=True, squeeze=False)
    for ax, report in zip(axes.ravel(), reports, strict=False):
        plot_frontier(report, out, ax=ax)
    for ax in axes.ravel()[len(reports) :]:
        ax.set_visible(False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_training(progress_csv: Path, out: Path) -> Path:
    """Mean step reward, entropy and explained variance over a training run's ``progress.csv``."""
    with progress_csv.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{progress_csv} has no updates to plot")
    step = np.array([float(r["global_step"]) for r in rows])
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True, constrained_layout=True)
    for ax, key in zip(axes, ("mean_step_reward", "entropy", "explained_variance"), strict=True):
        ax.plot(step, [float(r[key]) if r[key] else np.nan for r in rows], linewidth=1.0)
        ax.set_ylabel(key.replace("_", " "))
    axes[-1].set_xlabel("environment steps")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
