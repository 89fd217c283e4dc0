"""Play whole load windows through the simulator with decision callbacks, and log every step.

:class:`~rlscale.training.sim.VectorSim` owns the world; this module is how policies are
*evaluated* in it. :func:`run_episodes` hands each callback — the learned policy, the HPA,
a static count, all through :func:`rlscale.policy.decide.decide` — its own env's
observation every interval, applies the replicas and limits it returns, and records the
simulator's truth in an :class:`EpisodeLog`. Running several callbacks in one batch with
one seed gives them the same load and the same measurement noise (common random numbers),
which is what makes the evaluation's comparison fair.

:func:`run_controllers` is the fast path for the common case where every policy *is*
``decide`` with a config and maybe a model: it steps all controllers with one
:func:`~rlscale.policy.decide.decide_batch` call per interval, fed the simulator's raw
columns, so no per-env Observation is built. Its logs are the callback path's, exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rlscale.policy.decide import ControllerState, DecisionConfig, Observation, decide_batch
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import RAW_COLUMNS
from rlscale.training.sim import LoadLike, VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace


class DecisionLike(Protocol):
    """What a decision callback returns: :class:`rlscale.policy.decide.Decision` fits."""

    @property
    def replicas(self) -> int: ...
    @property
    def cpu_limit_m(self) -> int: ...
    @property
    def memory_limit_mib(self) -> int: ...


DecideFn = Callable[[Observation], DecisionLike]


@dataclass(frozen=True, slots=True)
class _Target:
    """A target set by a schedule rather than a controller (:func:`run_schedules`)."""

    replicas: int
    cpu_limit_m: int
    memory_limit_mib: int


#: Per-step metrics an :class:`EpisodeLog` keeps (all from the simulator's truth, not the noisy view).
LOG_KEYS: tuple[str, ...] = (
    "timestamp",
    "offered",
    "served",
    "dropped",
    "request_rate",
    "latency_p50_ms",
    "latency_p99_ms",
    "error_rate",
    "cpu_utilization",
    "memory_utilization",
    "queue_per_replica",
    "backlog",
    "replicas",
    "ready_replicas",
    "cpu_limit_m",
    "memory_limit_mib",
    "cpu_allocated_m",
    "memory_allocated_mib",
    "cpu_used_m",
    "slo_violated",
    "oom_kills",
    "replicas_changed",
    "limits_changed",
    "reward",
)


@dataclass
class EpisodeLog:
    """One episode of one policy: per-step arrays of :data:`LOG_KEYS`, and what the policy returned."""

    seed: int | None
    load_name: str
    step_s: float
    steps: dict[str, np.ndarray]
    decisions: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.steps["reward"].size)

    def summary(self) -> dict[str, float]:
        """Headline numbers: served share, SLO-violation share, cost, churn, reward."""
        s = self.steps
        offered = float(s["offered"].sum())
        hours = len(self) * self.step_s / 3600.0
        return {
            "steps": float(len(self)),
            "total_reward": float(s["reward"].sum()),
            "mean_reward": float(s["reward"].mean()),
            "served_fraction": float(s["served"].sum() / offered) if offered > 0 else 1.0,
            "dropped_fraction": float(s["dropped"].sum() / offered) if offered > 0 else 0.0,
            "slo_violation_fraction": float(s["slo_violated"].mean()),
            "latency_p99_ms_mean": float(s["latency_p99_ms"].mean()),
            "latency_p99_ms_p95": float(np.percentile(s["latency_p99_ms"], 95)),
            "mean_replicas": float(s["replicas"].mean()),
            "cpu_core_hours": float(s["cpu_allocated_m"].sum() * self.step_s / 3600.0 / 1000.0),
            "mean_cpu_allocated_cores": float(s["cpu_allocated_m"].mean() / 1000.0),
            "hours": hours,
            "replica_changes": float(s["replicas_changed"].sum()),
            "limit_changes": float(s["limits_changed"].sum()),
            "oom_kills": float(s["oom_kills"].sum()),
        }


@dataclass(frozen=True)
class Controller:
    """One controller for :func:`run_controllers`: ``decide`` with this config and model.

    ``model_error`` is passed on as ``decide``'s (why there is no model), for the
    explanation; ``state`` is the state to start from (default: a fresh one).
    """

    config: DecisionConfig
    model: PolicyModel | None = None
    model_error: str | None = None
    state: ControllerState | None = None


#: One interval of decisions for every env: gets the simulator, returns one decision per env.
_StepFn = Callable[[VectorSim], Sequence[DecisionLike]]


def run_episodes(
    config: SimConfig,
    load: LoadLike,
    decide_fns: Sequence[DecideFn],
    seed: int | Sequence[int] | None = 0,
    *,
    keep_decisions: bool = False,
) -> list[EpisodeLog]:
    """Play the whole ``load`` once per callback, all in one batch (one env each).

    Each callback sees its own env's (delayed, noisy) :class:`Observation` every interval
    and returns the replicas and limits to set. Nothing is masked here: the callback is
    the decision function, which masks and enforces itself (``decide`` does).

    With one ``seed``, all callbacks face the same load and the same noise, identical to
    what :func:`run_episode` with this seed gives a single callback (common random numbers:
    differences between policies are theirs, not the dice's). With a sequence of seeds, one
    per callback, callback ``i`` gets exactly the run :func:`run_episode` would give it with
    ``seed[i]`` — so policies × seeds can share one batch.

    When every callback is ``decide`` with a config and maybe a model, :func:`run_controllers`
    gives the same logs several times faster.
    """
    if len(decide_fns) == 0:
        raise ValueError("decide_fns: give at least one callback")

    def step(sim: VectorSim) -> list[DecisionLike]:
        return [fn(sim.observation(i)) for i, fn in enumerate(decide_fns)]

    return _play(config, load, len(decide_fns), step, seed, keep_decisions, what="callback")


def run_controllers(
    config: SimConfig,
    load: LoadLike,
    controllers: Sequence[Controller],
    seed: int | Sequence[int] | None = 0,
    *,
    keep_decisions: bool = False,
) -> list[EpisodeLog]:
    """Play the whole ``load`` once per controller, deciding for all of them in one call per interval.

    The same as :func:`run_episodes` with, for each controller, a callback that threads its
    state through ``decide(obs, c.config, state, c.model, model_error=c.model_error)`` —
    the same logs and Decisions, bit for bit — but each interval is one
    :func:`~rlscale.policy.decide.decide_batch` over the simulator's raw columns: no
    per-env Observation, one mask check per limits object, one ONNX call per model. This is
    what lets an evaluation step a whole baseline grid × seeds, plus learned models, at once.
    ``seed`` works as in :func:`run_episodes` (one shared, or one per controller).
    """
    if len(controllers) == 0:
        raise ValueError("controllers: give at least one controller")
    configs = [c.config for c in controllers]
    models = [c.model for c in controllers]
    errors = [c.model_error for c in controllers]
    states = [c.state if c.state is not None else ControllerState.initial(c.config) for c in controllers]

    def step(sim: VectorSim) -> list[DecisionLike]:
        nonlocal states
        columns = sim.columns()
        raw = np.stack([columns[name] for name in RAW_COLUMNS])
        decisions, states = decide_batch(raw, configs, states, models, model_errors=errors)
        return list(decisions)

    return _play(config, load, len(controllers), step, seed, keep_decisions, what="controller")


def run_schedules(
    config: SimConfig, load: LoadLike, schedules: Sequence[npt.NDArray[np.int64]], seeds: Sequence[int]
) -> list[EpisodeLog]:
    """Play fixed replica schedules (one count per interval, at the initial limits), each under its own seed.

    For references that are not controllers — a count computed ahead for every interval, such
    as :mod:`rlscale.training.persistence`'s rules — with the same simulator loop, seeds and logs
    as :func:`run_controllers`. A schedule shorter than the window holds its last count.
    """
    if len(schedules) != len(seeds):
        raise ValueError(f"seeds: one per schedule, got {len(seeds)} for {len(schedules)}")
    t = 0

    def step(_sim: VectorSim) -> list[DecisionLike]:
        nonlocal t
        out: list[DecisionLike] = [
            _Target(int(s[min(t, s.size - 1)]), config.initial_cpu_limit_m, config.initial_memory_limit_mib)
            for s in schedules
        ]
        t += 1
        return out

    return _play(config, load, len(schedules), step, [int(s) for s in seeds], False, what="schedule")


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


def _play(
    config: SimConfig,
    load: LoadLike,
    n: int,
    step: _StepFn,
    seed: int | Sequence[int] | None,
    keep_decisions: bool,
    *,
    what: str,
) -> list[EpisodeLog]:
    """The simulator loop behind both entry points: one env per policy, ``step`` decides for all."""
    shared: int | None = None
    per_env: list[int] | None = None
    if seed is None or isinstance(seed, int):
        shared = seed
    else:
        per_env = [int(x) for x in seed]
        if len(per_env) != n:
            raise ValueError(f"seed: expected one seed per {what} ({n}), got {len(per_env)}")
    trace = load if isinstance(load, Trace) else None
    sim = VectorSim(
        config,
        load,
        n_envs=n,
        seed=shared,
        autoreset=False,
        fixed_start=True,
        common_noise=per_env is None,
        env_seeds=per_env,
        episode_steps=10**12,
    )
    sim.reset()
    steps = int(sim._ep_len[0])
    logs = {key: [] for key in LOG_KEYS}  # type: dict[str, list[np.ndarray]]
    decisions: list[list[Any]] = [[] for _ in range(n)]
    r = np.zeros(n, dtype=np.int64)
    c = np.zeros(n, dtype=np.int64)
    m = np.zeros(n, dtype=np.int64)
    for _ in range(steps):
        for i, d in enumerate(step(sim)):
            r[i], c[i], m[i] = int(d.replicas), int(d.cpu_limit_m), int(d.memory_limit_mib)
            if keep_decisions:
                decisions[i].append(d)
        _, _, _, _, info = sim.step_targets(r, c, m)
        for key in LOG_KEYS:
            logs[key].append(np.asarray(info[key]))
    name = f"{trace.name}[{trace.window}]" if trace is not None else sim.series_names[0]
    out = []
    for i in range(n):
        per_step = {key: np.array([row[i] for row in logs[key]]) for key in LOG_KEYS}
        env_seed = per_env[i] if per_env is not None else shared
        out.append(
            EpisodeLog(seed=env_seed, load_name=name, step_s=config.step_s, steps=per_step, decisions=decisions[i])
        )
    return out


def run_episode(
    config: SimConfig, load: LoadLike, decide_fn: DecideFn, seed: int | None = 0, *, keep_decisions: bool = False
) -> EpisodeLog:
    """Play the whole ``load`` with one decision callback; see :func:`run_episodes`."""
    return run_episodes(config, load, [decide_fn], seed, keep_decisions=keep_decisions)[0]


__all__ = [
    "LOG_KEYS",
    "Controller",
    "DecideFn",
    "DecisionLike",
    "EpisodeLog",
    "episode_metrics",
    "run_controllers",
    "run_episode",
    "run_episodes",
    "run_schedules",
]
