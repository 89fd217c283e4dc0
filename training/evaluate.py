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
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.model import PolicyModel
from rlscale.training.episodes import Controller, EpisodeLog, episode_metrics, run_controllers
from rlscale.training.frontier import frontier_points, hpa_grid, matched_report
from rlscale.training.oracle import oracle_report, run_oracles
from rlscale.training.persistence import persistence_report
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

PolicyName = Literal["learned", "tuned", "hpa", "static", "heuristic"]
#: Every policy ``evaluate`` knows; the default set leaves out ``tuned``.
ALL_POLICY_NAMES: tuple[PolicyName, ...] = ("learned", "tuned", "hpa", "static", "heuristic")
POLICY_NAMES: tuple[PolicyName, ...] = ("learned", "hpa", "static", "heuristic")
#: Policies that run a model (once per model given).
MODEL_POLICIES: tuple[str, ...] = ("learned", "tuned")
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
STATIC_FACTORS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)


# --------------------------------------------------------------------------- metrics


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
    """Each baseline of ``grid`` played on ``window`` under every seed (all in one batch), aggregated."""
    per_seed = play(sim, window, [(decision_config(sim, b), None) for b in grid], seeds)
    return [aggregate([episode_metrics(log) for log in logs]) for logs in per_seed]


def play(
    sim: SimConfig,
    window: Trace,
    controllers: Sequence[tuple[DecisionConfig, PolicyModel | None]],
    seeds: Sequence[int],
) -> list[list[EpisodeLog]]:
    """Every (config, model) on ``window`` under every seed, in one simulator batch; logs per controller, by seed.

    Env ``(seed, i)`` draws exactly what a single run of controller ``i`` with ``seed`` would
    (common random numbers across controllers), and every interval is one ``decide_batch``.
    """
    batch = [Controller(cfg, model) for _ in seeds for cfg, model in controllers]
    env_seeds = [int(seed) for seed in seeds for _ in controllers]
    logs = run_controllers(sim, window, batch, env_seeds)
    n = len(controllers)
    return [[logs[k * n + i] for k in range(len(seeds))] for i in range(n)]


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
    matched: dict[str, Any] = field(default_factory=dict)  # cost at matched SLO (with --frontier)
    fine_tune: list[dict[str, Any]] = field(default_factory=list)  # ``tuned``: what each fine-tune did

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = aggregate(self.per_seed)
        out["runs"] = len(self.per_seed)
        if self.name in MODEL_POLICIES:
            out["models"] = list(self.models)
        else:
            out["baseline"] = self.config.baseline.kind
        if self.name == "tuned":
            out["fine_tuned"] = True
            out["fine_tune"] = list(self.fine_tune)
        if self.tuned is not None:
            out["tuning"] = self.tuned.summary()
        out.update(self.matched)
        return out

    def seeded(self) -> list[tuple[int, dict[str, float]]]:
        """(seed, metrics) of every run, for matching each run against the HPA grid under its seed."""
        return [(int(log.seed or 0), m) for log, m in zip(self.logs, self.per_seed, strict=True)]


@dataclass
class Evaluation:
    trace: str
    window: str
    seeds: list[int]
    runs: dict[str, PolicyRun]
    #: With ``frontier``: the HPA grid (and the static grid) replayed on the reported window.
    frontier: dict[str, list[dict[str, Any]]] | None = None
    #: With ``frontier``: the clairvoyant oracle (:func:`rlscale.training.oracle.oracle_report`).
    oracle: dict[str, Any] | None = None
    #: With ``frontier``: the persistence oracle (:func:`rlscale.training.persistence.persistence_report`).
    persistence: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        """The ``--json`` document: one object, policies by name (plus ``frontier``, ``oracle`` and ``persistence``)."""
        out: dict[str, Any] = {
            "trace": self.trace,
            "window": self.window,
            "seeds": len(self.seeds),
            "policies": {name: run.report() for name, run in self.runs.items()},
        }
        if self.frontier is not None:
            out["frontier"] = self.frontier
            out["oracle"] = self.oracle
            out["persistence"] = self.persistence
        return out


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
    frontier: bool = False,
    tune_minutes: float | None = None,
    tune_steps: int | None = None,
) -> Evaluation:
    """Run ``policies`` on ``window`` of ``trace`` over ``seeds``, baselines tuned on its training window.

    ``trace`` is the whole series; it is split chronologically here, the baselines see only
    ``split.train`` while being tuned, and the results are measured on ``window``. With
    several ``models`` (e.g. one per training seed) the learned policy's spread covers
    models and seeds. With ``frontier``, the HPA grid of :mod:`rlscale.training.frontier`
    and the static grid are replayed on ``window`` under the same seeds, the clairvoyant
    oracle and the persistence oracle (:mod:`rlscale.training.persistence`) are computed,
    and every policy gets its cost at matched SLO.

    ``tuned`` is each model fine-tuned on ``split.train`` of this trace
    (:func:`rlscale.training.finetune.fine_tune`, default budget unless ``tune_minutes`` /
    ``tune_steps`` say otherwise): the same right the baselines get, on the same rows.
    """
    if not policies:
        raise ValueError("policies: name at least one of " + ", ".join(ALL_POLICY_NAMES))
    unknown = [p for p in policies if p not in ALL_POLICY_NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; choose from {', '.join(ALL_POLICY_NAMES)}")
    if any(p in MODEL_POLICIES for p in policies) and not models:
        raise ValueError("the learned policy needs a model (give --model or ship policy/models/default.onnx)")
    windows = trace.split(*split)
    reported = windows[window]
    # (policy name, config, model): baselines once, the model policies once per model.
    entries: list[tuple[str, DecisionConfig, PolicyModel | None]] = []
    tuned: dict[str, Tuned] = {}
    for name in dict.fromkeys(policies):
        if name == "learned":
            cfg = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
            entries += [(name, cfg, m) for m in models]
        elif name == "tuned":
            cfg = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
            fine = _fine_tuned(models, windows.train, tune_minutes, tune_steps)
            entries += [(name, cfg, m) for m in fine]
        else:
            tuned[name] = tune_baseline(name, sim, windows.train, seeds=tune_seeds, criterion=criterion)
            entries.append((name, decision_config(sim, tuned[name].chosen), None))
    runs: dict[str, PolicyRun] = {}
    for run_name, cfg, _ in entries:
        runs.setdefault(run_name, PolicyRun(run_name, cfg, [], [], tuned.get(run_name)))
    for run_name, _, model in entries:
        if model is not None:
            runs[run_name].models.append(model.source)
            if run_name == "tuned":
                ft = model.training.get("fine_tune", {})
                runs[run_name].fine_tune.append({k: ft.get(k) for k in ("steps_done", "wall_seconds", "stopped_by")})
    played = play(sim, reported, [(cfg, model) for _, cfg, model in entries], seeds)
    for k in range(len(seeds)):  # seed-major, as the spread and the per-seed matching expect
        for (run_name, _, _), logs in zip(entries, played, strict=True):
            runs[run_name].per_seed.append(episode_metrics(logs[k]))
            runs[run_name].logs.append(logs[k])
    result = Evaluation(trace.name, window, list(seeds), runs)
    if frontier:
        _add_frontier(result, sim, reported)
    return result


def _fine_tuned(
    models: Sequence[PolicyModel], train: Trace, minutes: float | None, steps: int | None
) -> list[PolicyModel]:
    """Each model fine-tuned on ``train`` (a training window: ``fine_tune`` refuses any other), seed = its index."""
    from rlscale.training.finetune import fine_tune

    return [
        PolicyModel.from_bytes(
            fine_tune(m, train, minutes=minutes, steps=steps, seed=i), source=f"tuned:{train.name}:{m.source}"
        )
        for i, m in enumerate(models)
    ]


def _add_frontier(evaluation: Evaluation, sim: SimConfig, reported: Trace) -> None:
    """The HPA and static grids on the reported window, the oracle, and each policy's cost at matched SLO."""
    seeds = evaluation.seeds
    hpa_configs = hpa_grid()
    static_configs = baseline_grid("static", sim)
    played = play(sim, reported, [(decision_config(sim, b), None) for b in (*hpa_configs, *static_configs)], seeds)
    metrics = [[episode_metrics(log) for log in logs] for logs in played]
    hpa_by_seed = {seed: [m[k] for m in metrics[: len(hpa_configs)]] for k, seed in enumerate(seeds)}
    static_by_seed = {seed: [m[k] for m in metrics[len(hpa_configs) :]] for k, seed in enumerate(seeds)}
    hpa_mean = [aggregate([hpa_by_seed[s][i] for s in seeds]) for i in range(len(hpa_configs))]
    static_mean = [aggregate([static_by_seed[s][i] for s in seeds]) for i in range(len(static_configs))]
    oracle_runs = run_oracles(sim, reported, seeds)
    oracle = oracle_report(sim, reported, seeds, oracle_runs)
    oracle_rh = oracle["replica_hours"]
    assert isinstance(oracle_rh, float)
    evaluation.oracle = oracle
    hpa_run = evaluation.runs.get("hpa")
    hpa_slo = aggregate(hpa_run.per_seed)["slo_violation_minutes"] if hpa_run is not None else None
    evaluation.persistence = persistence_report(
        sim, reported, seeds, {s: oracle_runs[(False, s)] for s in seeds}, hpa_mean, oracle_rh, hpa_slo
    )
    evaluation.frontier = {
        "hpa": frontier_points(hpa_configs, hpa_mean),
        "static": [
            {
                "static_replicas": b.static_replicas,
                "slo_violation_minutes": m["slo_violation_minutes"],
                "replica_hours": m["replica_hours"],
            }
            for b, m in zip(static_configs, static_mean, strict=True)
        ],
    }
    for run in evaluation.runs.values():
        run.matched = matched_report(run.seeded(), hpa_by_seed, hpa_mean, oracle_rh)


# --------------------------------------------------------------------------- all traces


def _evaluate_one(path: Any, model_paths: Sequence[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """One trace of :func:`evaluate_all`, in a worker process (models travel as paths: sessions do not pickle)."""
    from rlscale.training.workloads import load_trace

    models = [PolicyModel.load(p) for p in model_paths]
    return evaluate(load_trace(path), models=models, **kwargs).report()


def evaluate_all(
    trace_paths: Sequence[Any],
    models: Sequence[PolicyModel],
    *,
    sim: SimConfig,
    window: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    criterion: TuneCriterion = "reward",
    frontier: bool = False,
    policies: Sequence[PolicyName] = POLICY_NAMES,
    jobs: int = 1,
    tune_minutes: float | None = None,
    tune_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every policy on ``window`` of every trace; the model policies once per model.

    With ``frontier`` every trace gets its HPA frontier, oracle and each policy's cost at
    matched SLO (:func:`evaluate`). ``tuned`` is opt-in (in ``policies``): it fine-tunes
    every model on every trace, minutes each. ``jobs`` > 1 evaluates
    that many traces at once in worker processes (the results are the same: every run is
    seeded, nothing is shared).
    """
    if not trace_paths:
        raise ValueError("no trace files to evaluate")
    kwargs: dict[str, Any] = {
        "sim": sim,
        "policies": tuple(policies),
        "window": window,
        "seeds": tuple(seeds),
        "criterion": criterion,
        "frontier": frontier,
        "tune_minutes": tune_minutes,
        "tune_steps": tune_steps,
    }
    model_paths = [m.source for m in models]
    if jobs > 1 and len(trace_paths) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        # Longest first, so the last worker does not start the week-long trace alone.
        order = sorted(range(len(trace_paths)), key=lambda i: -Path(trace_paths[i]).stat().st_size)
        with ProcessPoolExecutor(min(jobs, len(trace_paths)), mp_context=get_context("spawn")) as pool:
            futures = {i: pool.submit(_evaluate_one, trace_paths[i], model_paths, kwargs) for i in order}
            traces = []
            for i in range(len(trace_paths)):
                if progress is not None:
                    progress(f"waiting for {Path(trace_paths[i]).stem} [{window}] ...")
                traces.append(futures[i].result())
    else:
        traces = []
        for path in trace_paths:
            if progress is not None:
                progress(f"evaluating {Path(path).stem} [{window}] ...")
            traces.append(_evaluate_one(path, model_paths, kwargs))
    return {
        "window": window,
        "seeds": len(seeds),
        "criterion": criterion,
        "frontier": frontier,
        "models": [{"source": m.source, **_training_summary(m)} for m in models],
        "traces": traces,
    }


def _training_summary(model: PolicyModel) -> dict[str, Any]:
    t = model.training
    return {k: t.get(k) for k in ("seed", "global_step", "wall_seconds", "date")}
