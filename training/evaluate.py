"""Evaluate autoscaling policies on a trace window in the simulator, with tuned baselines.

Every policy — the learned one included — runs through
:func:`rlscale.policy.decide.decide`, the function the operator calls, inside
:func:`rlscale.training.episodes.run_episodes`, so all of them meet the same mask, the same
load and the same measurement noise (common random numbers per seed).

Honesty rules this module enforces:

* **Baselines are tuned, on the training window only.** The HPA's target utilisation, the
  static replica count and the heuristic's load per replica are each picked from a small
  grid by :func:`tune_baseline`, which is handed ``split.train`` and nothing else; the
  chosen value is then applied to the window being reported. The criterion is documented
  in docs/evaluation.md (default: highest cumulative reward — the objective the user
  declared, which the learned policy is trained on too).
* **Mean and spread over seeds.** Each metric is reported as the mean over ``seeds`` runs
  plus ``<metric>_std`` (sample standard deviation), ``_min`` and ``_max``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.model import PolicyModel
from rlscale.training.episodes import EpisodeLog, run_episodes
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

PolicyName = Literal["learned", "hpa", "static", "heuristic"]
POLICY_NAMES: tuple[PolicyName, ...] = ("learned", "hpa", "static", "heuristic")
TuneCriterion = Literal["reward", "slo"]

#: The metrics reported per policy, in report order.
METRICS: tuple[str, ...] = (
    "slo_violation_minutes",
    "replica_hours",
    "cpu_hours",
    "memory_gib_hours",
    "mean_latency_ms",
    "p99_latency_ms",
    "utilisation",
    "dropped_requests",
    "cumulative_reward",
    "scaling_actions",
)

#: Tuning grids, on the training window. HPA: target CPU utilisation. Heuristic: load per
#: replica as a fraction of one pod's capacity at the initial CPU limit. Static: replicas
#: (the simulator maps every series so that its 95th percentile needs
#: ``SimConfig.target_replicas_p95`` pods, so this grid spans 0.2× to 3× of that).
HPA_TARGETS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
HEURISTIC_FRACTIONS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
#: HPA targets replayed on the reported window for the cost-matched comparison (:func:`hpa_at_cost`).
HPA_FRONTIER_TARGETS: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)
STATIC_FACTORS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)


# --------------------------------------------------------------------------- metrics


def episode_metrics(log: EpisodeLog) -> dict[str, float]:
    """The report's metrics of one episode, from the simulator's truth (not the noisy view).

    * ``slo_violation_minutes`` — minutes whose interval broke the SLO (p99 or error rate);
    * ``replica_hours``, ``cpu_hours`` (allocated cores × hours), ``memory_gib_hours``;
    * ``mean_latency_ms`` — the per-interval median latency, weighted by requests served;
    * ``p99_latency_ms`` — the 99th percentile over intervals of the per-interval p99;
    * ``utilisation`` — CPU used / CPU allocated over the whole episode;
    * ``dropped_requests``; ``cumulative_reward``; ``scaling_actions`` — intervals in which
      replicas or limits changed.
    """
    s = log.steps
    hours = log.step_s / 3600.0
    served = s["served"].astype(np.float64)
    p50 = s["latency_p50_ms"].astype(np.float64)
    mean_latency = float((p50 * served).sum() / served.sum()) if served.sum() > 0 else float(p50.mean())
    allocated = float(s["cpu_allocated_m"].sum())
    return {
        "slo_violation_minutes": float(s["slo_violated"].sum()) * log.step_s / 60.0,
        "replica_hours": float(s["replicas"].sum()) * hours,
        "cpu_hours": float(s["cpu_allocated_m"].sum()) / 1000.0 * hours,
        "memory_gib_hours": float(s["memory_allocated_mib"].sum()) / 1024.0 * hours,
        "mean_latency_ms": mean_latency,
        "p99_latency_ms": float(np.percentile(s["latency_p99_ms"], 99)),
        "utilisation": float(s["cpu_used_m"].sum()) / allocated if allocated > 0 else 0.0,
        "dropped_requests": float(s["dropped"].sum()),
        "cumulative_reward": float(s["reward"].sum()),
        "scaling_actions": float((s["replicas_changed"] | s["limits_changed"]).sum()),
    }


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds, plus ``_std`` (sample, 0 for one seed), ``_min`` and ``_max``."""
    out: dict[str, float] = {}
    for key in per_seed[0]:
        values = np.array([m[key] for m in per_seed], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[f"{key}_min"] = float(values.min())
        out[f"{key}_max"] = float(values.max())
    return out


# --------------------------------------------------------------------------- policies


def decision_config(sim: SimConfig, baseline: BaselineConfig, *, learned: bool = False) -> DecisionConfig:
    """The operator's config for one evaluated policy: the simulator's limits and objective.

    The learned policy runs with the gate in ``full`` mode (it decides every time); a
    baseline runs with no model, so the baseline acts whatever the gate says.
    """
    gate = GateConfig(mode="full") if learned else GateConfig()
    return DecisionConfig(limits=sim.limits, objective=sim.objective, baseline=baseline, gate=gate)


def decide_fn(config: DecisionConfig, model: PolicyModel | None = None) -> Callable[[Observation], Decision]:
    """A stateful callback for the simulator: ``decide`` with its controller state threaded through."""
    state = ControllerState.initial(config)

    def fn(obs: Observation) -> Decision:
        nonlocal state
        decision, state = decide(obs, config, state, model)
        return decision

    return fn


def _heuristic(sim: SimConfig, fraction: float) -> BaselineConfig:
    per_pod = sim.pod_capacity_rps(sim.initial_cpu_limit_m)
    return BaselineConfig(kind="proportional", rate_per_replica=round(per_pod * fraction, 3))


def _static(sim: SimConfig, factor: float) -> BaselineConfig:
    lim = sim.limits
    replicas = min(max(round(sim.target_replicas_p95 * factor), lim.min_replicas, 1), lim.max_replicas)
    return BaselineConfig(kind="static", static_replicas=replicas)


def baseline_grid(kind: Literal["hpa", "static", "heuristic"], sim: SimConfig) -> list[BaselineConfig]:
    """The candidate configurations :func:`tune_baseline` chooses from."""
    if kind == "hpa":
        return [BaselineConfig(kind="hpa", hpa=HpaConfig(target_utilization=t)) for t in HPA_TARGETS]
    if kind == "heuristic":
        return [_heuristic(sim, f) for f in HEURISTIC_FRACTIONS]
    unique: dict[int, BaselineConfig] = {}
    for f in STATIC_FACTORS:
        b = _static(sim, f)
        unique.setdefault(b.static_replicas, b)
    return list(unique.values())


def baseline_knob(b: BaselineConfig) -> dict[str, float]:
    """The tuned value of a baseline, for reports."""
    if b.kind == "hpa":
        return {"target_utilization": b.hpa.target_utilization}
    if b.kind == "static":
        return {"static_replicas": float(b.static_replicas)}
    return {"rate_per_replica": b.rate_per_replica}


def _score(metrics: dict[str, float], criterion: TuneCriterion) -> tuple[float, ...]:
    """Sort key, lower is better."""
    if criterion == "reward":
        return (-metrics["cumulative_reward"],)
    return (metrics["slo_violation_minutes"], metrics["replica_hours"])


@dataclass
class Tuned:
    """A tuned baseline and the evidence: every candidate's training-window metrics."""

    kind: str
    chosen: BaselineConfig
    window: str
    criterion: TuneCriterion
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "tuned_on": self.window,
            "criterion": self.criterion,
            **baseline_knob(self.chosen),
            "grid": [c["knob"] for c in self.candidates],
        }


def grid_metrics(
    sim: SimConfig, window: Trace, grid: Sequence[BaselineConfig], seeds: Sequence[int]
) -> list[dict[str, float]]:
    """Each baseline of ``grid`` played on ``window`` under every seed (all in one batch per seed), aggregated."""
    per_seed: list[list[dict[str, float]]] = [[] for _ in grid]
    for seed in seeds:
        fns = [decide_fn(decision_config(sim, b)) for b in grid]
        for i, log in enumerate(run_episodes(sim, window, fns, seed)):
            per_seed[i].append(episode_metrics(log))
    return [aggregate(ms) for ms in per_seed]


def tune_baseline(
    kind: Literal["hpa", "static", "heuristic"],
    sim: SimConfig,
    train_window: Trace,
    *,
    seeds: Sequence[int] = (0,),
    criterion: TuneCriterion = "reward",
) -> Tuned:
    """Pick the baseline's knob from :func:`baseline_grid` on ``train_window`` alone.

    The caller hands over the training window and nothing else, so the choice cannot
    depend on the window that will be reported. A window that is not a training window
    is refused, to make a mistaken call loud.
    """
    if train_window.window != "train":
        raise ValueError(f"baselines are tuned on a training window only, got the {train_window.window!r} window")
    grid = baseline_grid(kind, sim)
    results = grid_metrics(sim, train_window, grid, seeds)
    candidates = [{"knob": baseline_knob(b), "metrics": m} for b, m in zip(grid, results, strict=True)]
    best = min(range(len(grid)), key=lambda i: _score(candidates[i]["metrics"], criterion))
    return Tuned(kind, grid[best], train_window.window, criterion, candidates)


# --------------------------------------------------------------------------- evaluation


@dataclass
class PolicyRun:
    """One policy's results on the reported window (for ``learned``: every model × every seed)."""

    name: str
    config: DecisionConfig
    per_seed: list[dict[str, float]]
    logs: list[EpisodeLog]
    tuned: Tuned | None = None
    models: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = aggregate(self.per_seed)
        out["runs"] = len(self.per_seed)
        if self.name == "learned":
            out["models"] = list(self.models)
        else:
            out["baseline"] = self.config.baseline.kind
        if self.tuned is not None:
            out["tuning"] = self.tuned.summary()
        return out


@dataclass
class Evaluation:
    trace: str
    window: str
    seeds: list[int]
    runs: dict[str, PolicyRun]

    def report(self) -> dict[str, Any]:
        """The ``--json`` document: one object, policies by name."""
        return {
            "trace": self.trace,
            "window": self.window,
            "seeds": len(self.seeds),
            "policies": {name: run.report() for name, run in self.runs.items()},
        }


def evaluate(
    trace: Trace,
    *,
    sim: SimConfig,
    policies: Sequence[PolicyName] = POLICY_NAMES,
    models: Sequence[PolicyModel] = (),
    window: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    tune_seeds: Sequence[int] = (0,),
    criterion: TuneCriterion = "reward",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Evaluation:
    """Run ``policies`` on ``window`` of ``trace`` over ``seeds``, baselines tuned on its training window.

    ``trace`` is the whole series; it is split chronologically here, the baselines see only
    ``split.train`` while being tuned, and the results are measured on ``window``. With
    several ``models`` (e.g. one per training seed) the learned policy's spread covers
    models and seeds.
    """
    if not policies:
        raise ValueError("policies: name at least one of " + ", ".join(POLICY_NAMES))
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICY_NAMES)}")
    if "learned" in policies and not models:
        raise ValueError("the learned policy needs a model (give --model or ship policy/models/default.onnx)")
    windows = trace.split(*split)
    reported = windows[window]
    # (policy name, config, model): baselines once, the learned policy once per model.
    entries: list[tuple[str, DecisionConfig, PolicyModel | None]] = []
    tuned: dict[str, Tuned] = {}
    for name in dict.fromkeys(policies):
        if name == "learned":
            cfg = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
            entries += [(name, cfg, m) for m in models]
        else:
            tuned[name] = tune_baseline(name, sim, windows.train, seeds=tune_seeds, criterion=criterion)
            entries.append((name, decision_config(sim, tuned[name].chosen), None))
    runs: dict[str, PolicyRun] = {}
    for run_name, cfg, _ in entries:
        runs.setdefault(run_name, PolicyRun(run_name, cfg, [], [], tuned.get(run_name)))
    if "learned" in runs:
        runs["learned"].models.extend(m.source for m in models)
    for seed in seeds:
        fns = [decide_fn(cfg, model) for _, cfg, model in entries]
        for (run_name, _, _), log in zip(entries, run_episodes(sim, reported, fns, seed), strict=True):
            runs[run_name].per_seed.append(episode_metrics(log))
            runs[run_name].logs.append(log)
    return Evaluation(trace.name, window, list(seeds), runs)


# --------------------------------------------------------------------------- all traces


def bar_check(evaluation: Evaluation) -> dict[str, Any]:
    """The project's bar on one trace: fewer SLO-violation minutes than the tuned HPA at no more replica-hours.

    Compared on means over seeds (and models). CPU-hours are reported beside it, because a
    policy that also moves CPU limits could trade pods for bigger pods.
    """
    learned = aggregate(evaluation.runs["learned"].per_seed)
    hpa = aggregate(evaluation.runs["hpa"].per_seed)
    fewer_violations = learned["slo_violation_minutes"] < hpa["slo_violation_minutes"]
    no_more_replicas = learned["replica_hours"] <= hpa["replica_hours"]
    return {
        "met": bool(fewer_violations and no_more_replicas),
        "fewer_slo_violation_minutes": bool(fewer_violations),
        "no_more_replica_hours": bool(no_more_replicas),
        "no_more_cpu_hours": bool(learned["cpu_hours"] <= hpa["cpu_hours"]),
    }


def hpa_avoidable(evaluation: Evaluation, sim: SimConfig, reported: Trace) -> dict[str, Any]:
    """How many of the tuned HPA's SLO-violation minutes any policy could have avoided.

    Replays the reported window, seed by seed, with a *max-capacity oracle*: a policy that
    scales straight to ``max_replicas`` as fast as the step limits allow. In the simulator,
    more ready pods never raise latency and no policy that keeps the limits has more pods than
    the oracle, so an interval the oracle breaks is broken for every such policy. In a window's
    first interval — where pods started by the first decision are not ready in time, and where
    the unavoidable violations on the public traces are — it is broken for *every* policy,
    since a limit change there only restarts pods. Where the HPA's violations are all of that
    kind, "fewer SLO-violation minutes than the HPA" is unattainable.
    """
    mean = avoidable_minutes(sim, reported, evaluation.seeds, evaluation.runs["hpa"].logs)
    return {"hpa_avoidable_slo_minutes": mean, "attainable": mean > 0}


def avoidable_minutes(sim: SimConfig, reported: Trace, seeds: Sequence[int], logs: Sequence[EpisodeLog]) -> float:
    """Mean over seeds of the SLO-violation minutes in ``logs`` (one per seed) that the max-capacity oracle avoids."""
    oracle = decision_config(sim, BaselineConfig(kind="static", static_replicas=sim.limits.max_replicas))
    step_min = sim.step_s / 60.0
    avoidable: list[float] = []
    for seed, log in zip(seeds, logs, strict=True):
        (oracle_log,) = run_episodes(sim, reported, [decide_fn(oracle)], seed)
        broken, oracle_broken = log.steps["slo_violated"], oracle_log.steps["slo_violated"]
        avoidable.append(float((broken & ~oracle_broken).sum()) * step_min)
    return float(np.mean(avoidable))


def hpa_at_cost(evaluation: Evaluation, sim: SimConfig, reported: Trace) -> dict[str, Any]:
    """The best any HPA target does on the reported window at no more replica-hours than the learned policy.

    Not a tuning: each target of :data:`HPA_FRONTIER_TARGETS` is replayed on the reported
    window itself, and the one with the fewest SLO-violation minutes among those that use no
    more replica-hours than the learned policy is kept — a comparison *in the HPA's favour*
    (it gets to pick its target with hindsight), which answers what the bar is after: is the
    learned policy better than the HPA at the same cost? ``None`` where every target costs more.
    """
    learned_rh = aggregate(evaluation.runs["learned"].per_seed)["replica_hours"]
    grid = [BaselineConfig(kind="hpa", hpa=HpaConfig(target_utilization=t)) for t in HPA_FRONTIER_TARGETS]
    points = [
        {"target_utilization": t, **{k: m[k] for k in ("slo_violation_minutes", "replica_hours")}}
        for t, m in zip(HPA_FRONTIER_TARGETS, grid_metrics(sim, reported, grid, evaluation.seeds), strict=True)
    ]
    affordable = [p for p in points if p["replica_hours"] <= learned_rh]
    best = min(affordable, key=lambda p: (p["slo_violation_minutes"], p["replica_hours"]), default=None)
    return {"hpa_at_learned_cost": best, "hpa_frontier": points}


def evaluate_all(
    trace_paths: Sequence[Any],
    models: Sequence[PolicyModel],
    *,
    sim: SimConfig,
    window: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    criterion: TuneCriterion = "reward",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every policy on ``window`` of every trace; the learned policy once per model."""
    from rlscale.training.workloads import load_trace

    if not trace_paths:
        raise ValueError("no trace files to evaluate")
    traces = []
    met = attainable = 0
    for path in trace_paths:
        trace = load_trace(path)
        if progress is not None:
            progress(f"evaluating {trace.name} [{window}] ...")
        ev = evaluate(trace, sim=sim, models=models, window=window, seeds=seeds, criterion=criterion)
        entry = ev.report()
        reported = trace.split()[window]
        entry["bar"] = {**bar_check(ev), **hpa_avoidable(ev, sim, reported)}
        entry["cost_matched"] = hpa_at_cost(ev, sim, reported)
        met += entry["bar"]["met"]
        attainable += entry["bar"]["attainable"]
        traces.append(entry)
    return {
        "window": window,
        "seeds": len(seeds),
        "criterion": criterion,
        "models": [{"source": m.source, **_training_summary(m)} for m in models],
        "traces": traces,
        "bar_met": met,
        "bar_attainable": attainable,
        "bar_traces": len(traces),
    }


def _training_summary(model: PolicyModel) -> dict[str, Any]:
    t = model.training
    return {k: t.get(k) for k in ("seed", "global_step", "wall_seconds", "date")}
