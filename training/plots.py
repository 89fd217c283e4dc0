"""Figures for evaluations and training runs (matplotlib, Agg backend: no display needed).

One figure per evaluation answers "what did each policy do when the load moved?": load
on top, replicas in the middle, p99 latency (log scale, with the SLO) at the bottom, all
policies on shared time axes, from the first seed's episode (the load is the same for
every policy within a seed).
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from rlscale.training.evaluate import Evaluation

_COLOURS = {"learned": "tab:red", "hpa": "tab:blue", "static": "tab:grey", "heuristic": "tab:green"}


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
