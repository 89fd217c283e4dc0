"""The orchestration study, reproduced: PPO vs a threshold autoscaler, the heuristic and DQN, plus a 3× surge.

The paper compares a PPO orchestrator with a DQN agent and a threshold autoscaler on
latency, task failures, utilisation variance and cost, and tests robustness with a sudden
tripling of load. It reports latency −31 % (198.5 → 136.4 ms), failures 4.8 % → 0.9 % and
utilisation variance −23 % for PPO against the baselines.

Here, on the **test window** of every public trace (chronological 70/15/15 split), every
policy runs through :func:`rlscale.policy.decide.decide` in the same simulator with the
same seeds (common random numbers):

* **PPO** — the shipped model (``policy/models/default.onnx``: the default config, trained
  on generated load only; docs/training.md);
* **DQN** — :mod:`rlscale.training.dqn` trained here on the same training world and data as
  the shipped PPO (the default config's simulator and generated mix), same features and
  actions, masked Q-values; its budget is :data:`DQN_CONFIG` (the PPO had 4 M steps and
  an HPA warm start — said beside the table);
* **threshold** — :mod:`rlscale.training.threshold`, its upper/lower thresholds and cooldown
  tuned on the trace's training window;
* **heuristic** — the proportional baseline, its load per replica tuned on the training window.

Metrics per run: mean latency, served share of the offered load (throughput), failure
rate (dropped or errored requests / all requests answered or dropped), the variance over
time of CPU utilisation, cost (allocated CPU core-hours, and relative to the threshold
rule on the same trace and seed), SLO-violation minutes. The **surge** scenario triples the
load for :data:`SURGE_MINUTES` minutes from a third into the test window
(:mod:`rlscale.training.surge`) and adds the recovery time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.model import PolicyModel, load_default_model
from rlscale.training.dqn import DqnConfig
from rlscale.training.episodes import EpisodeLog, episode_metrics, run_episodes
from rlscale.training.evaluate import aggregate, decide_fn, decision_config, tune_baseline
from rlscale.training.ppo_config import TrainConfig
from rlscale.training.reproduce import format_table, plot_bars
from rlscale.training.sim_config import SimConfig
from rlscale.training.surge import recovery_minutes, surge
from rlscale.training.threshold import threshold_fn, tune_threshold
from rlscale.training.workloads import load_trace, traces_dir, training_mix

SURGE_FACTOR = 3.0
SURGE_MINUTES = 60
DQN_CONFIG = DqnConfig(total_steps=400_000)
POLICIES: tuple[str, ...] = ("PPO", "DQN", "threshold", "heuristic")
PAPER = {
    "mean_latency_ms": {"baseline": 198.5, "PPO": 136.4},
    "failure_rate_pct": {"baseline": 4.8, "PPO": 0.9},
    "utilisation_variance_change_pct": {"PPO": -23.0},
}

#: (metric key, heading, decimals) of the main table and of the surge table.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("mean_latency_ms", "mean latency ms", 1),
    ("served_pct", "served %", 2),
    ("failure_rate_pct", "failures %", 2),
    ("utilisation_variance", "util. variance", 4),
    ("cost_vs_threshold", "cost ÷ threshold", 3),
    ("slo_violation_minutes", "SLO-viol. min", 1),
)
SURGE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("recovery_minutes", "recovery min", 1),
    ("surge_violation_minutes", "SLO-viol. min in surge", 1),
    ("surge_failure_rate_pct", "failures % in surge", 2),
    ("surge_mean_latency_ms", "mean latency ms in surge", 1),
)


def run_metrics(log: EpisodeLog, surge_rows: tuple[int, int] | None = None) -> dict[str, float]:
    """The study's metrics of one run (from the simulator's truth)."""
    s = log.steps
    base = episode_metrics(log)
    served, dropped, offered = (float(s[k].sum()) for k in ("served", "dropped", "offered"))
    allocated = s["cpu_allocated_m"].astype(np.float64)
    util = np.divide(s["cpu_used_m"], allocated, out=np.zeros_like(allocated), where=allocated > 0)
    out = {
        "mean_latency_ms": base["mean_latency_ms"],
        "throughput_rps": served / (len(log) * log.step_s),
        "served_pct": 100.0 * served / offered if offered > 0 else 100.0,
        "failure_rate_pct": 100.0 * dropped / max(served + dropped, 1e-12),
        "utilisation_variance": float(np.var(util)),
        "cpu_hours": base["cpu_hours"],
        "replica_hours": base["replica_hours"],
        "slo_violation_minutes": base["slo_violation_minutes"],
    }
    if surge_rows is not None:
        lo, hi = surge_rows
        w_served, w_dropped = float(s["served"][lo:hi].sum()), float(s["dropped"][lo:hi].sum())
        p50, w = s["latency_p50_ms"][lo:hi], s["served"][lo:hi]
        out |= {
            "recovery_minutes": recovery_minutes(s["slo_violated"], lo, log.step_s),
            "surge_violation_minutes": float(s["slo_violated"][lo:hi].sum()) * log.step_s / 60.0,
            "surge_failure_rate_pct": 100.0 * w_dropped / max(w_served + w_dropped, 1e-12),
            "surge_mean_latency_ms": float((p50 * w).sum() / w.sum()) if w.sum() > 0 else float(p50.mean()),
        }
    return out


def train_dqn(steps: int | None, seed: int = 0) -> tuple[PolicyModel, dict[str, Any]]:
    """DQN on the shipped PPO's training world and data (the default config's)."""
    from rlscale.training.trainers import train_export

    config = TrainConfig()
    cfg = DQN_CONFIG if steps is None else DQN_CONFIG.model_copy(update={"total_steps": steps})
    d = config.data
    mix = training_mix(d.seed, n_generated=d.n_generated, n_steps=d.n_steps, patterns=d.patterns)
    model, trained = train_export("dqn", config.sim, list(mix.loads), seed=seed, dqn=cfg)
    return model, {
        "steps": trained.global_step,
        "seconds": round(trained.wall_seconds, 1),
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
    }


def _policies(
    sim: SimConfig, ppo: PolicyModel, dqn: PolicyModel, tuned: dict[str, Any]
) -> list[Callable[[], Callable[..., Any]]]:
    """Factories of fresh decision callbacks, in :data:`POLICIES` order."""
    learned = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
    heuristic = decision_config(sim, tuned["heuristic"])
    base = decision_config(sim, BaselineConfig(kind="static"))
    return [
        lambda: decide_fn(learned, ppo),
        lambda: decide_fn(learned, dqn),
        lambda: threshold_fn(base, tuned["threshold"]),
        lambda: decide_fn(heuristic),
    ]


def run(
    seeds: Sequence[int] = range(3),
    *,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    trace_paths: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """Every policy on every trace's test window, with and without the surge; ``steps``: DQN's budget."""
    say = progress if progress is not None else (lambda _msg: None)
    sim = SimConfig()
    paths = list(trace_paths) if trace_paths is not None else sorted(traces_dir().glob("*.csv"))
    say(f"orchestration: training DQN ({steps or DQN_CONFIG.total_steps} steps) ...")
    dqn, dqn_info = train_dqn(steps)
    ppo = load_default_model()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {"normal": {p: [] for p in POLICIES}, "surge": {}}
    runs["surge"] = {p: [] for p in POLICIES}
    traces: dict[str, Any] = {}
    for path in paths:
        trace = load_trace(path)
        split = trace.split()
        say(f"orchestration: tuning the threshold rule and the heuristic on {trace.name}'s training window ...")
        th = tune_threshold(sim, split.train)
        heuristic = tune_baseline("heuristic", sim, split.train)
        factories = _policies(sim, ppo, dqn, {"threshold": th["chosen"], "heuristic": heuristic.chosen})
        start = len(split.test) // 3
        windows = {"normal": split.test, "surge": surge(split.test, start, SURGE_MINUTES, SURGE_FACTOR)}
        per_trace: dict[str, Any] = {"threshold": th["chosen"].model_dump(), "heuristic": heuristic.summary()}
        for scenario, window in windows.items():
            say(f"orchestration: {trace.name} test window, {scenario} ...")
            fns = [make() for _ in seeds for make in factories]
            logs = run_episodes(sim, window, fns, [s for s in seeds for _ in factories])
            rows = (start, start + SURGE_MINUTES) if scenario == "surge" else None
            table: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
            for k in range(len(seeds)):
                ms = [run_metrics(logs[k * len(POLICIES) + i], rows) for i in range(len(POLICIES))]
                for name, m in zip(POLICIES, ms, strict=True):
                    m["cost_vs_threshold"] = m["cpu_hours"] / ms[POLICIES.index("threshold")]["cpu_hours"]
                    table[name].append(m)
                    runs[scenario][name].append(m)
            per_trace[scenario] = {name: aggregate(v) for name, v in table.items()}
        traces[trace.name] = per_trace
    return {
        "experiment": "orchestration",
        "window": "test",
        "seeds": len(seeds),
        "traces": traces,
        "policies": {name: aggregate(v) for name, v in runs["normal"].items()},
        "surge": {
            "factor": SURGE_FACTOR,
            "minutes": SURGE_MINUTES,
            "policies": {name: aggregate(v) for name, v in runs["surge"].items()},
        },
        "dqn": dqn_info,
        "ppo": {"model": ppo.source, "global_step": ppo.training.get("global_step")},
        "paper": PAPER,
    }


def format_result(result: dict[str, Any]) -> str:
    n_traces = len(result["traces"])
    main = format_table(
        f"orchestration: test windows of {n_traces} traces × {result['seeds']} seeds (mean ± std over runs)",
        result["policies"],
        COLUMNS,
    )
    s = result["surge"]
    surge_table = format_table(
        f"{s['factor']:g}× surge for {s['minutes']} min from a third into each test window",
        s["policies"],
        SURGE_COLUMNS,
    )
    paper = "paper: latency 198.5 → 136.4 ms (−31 %), failures 4.8 % → 0.9 %, utilisation variance −23 % (PPO)"
    return "\n\n".join([main, surge_table, paper])


def plot_result(result: dict[str, Any], path: Path) -> None:
    merged = {
        "policies": {
            name: {**m, **{k: v for k, v in result["surge"]["policies"][name].items() if k.startswith(("recovery",))}}
            for name, m in result["policies"].items()
        }
    }
    cols = (*COLUMNS[:4], SURGE_COLUMNS[0])
    plot_bars(merged, cols, path, "orchestration (test windows, mean ± std over traces × seeds)")


__all__ = ["DQN_CONFIG", "POLICIES", "format_result", "plot_result", "run", "run_metrics", "train_dqn"]
