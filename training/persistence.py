"""The persistence oracle: how cheap perfect knowledge of the *past* can make a policy, without a forecast.

The clairvoyant oracle (:mod:`rlscale.training.oracle`) knows the future; no causal policy does.
Between it and the HPA lies the question that decides what a learned policy can hope for: how
much of that room is reachable by *measuring* better — knowing exactly how many pods every past
interval needed, at once, with none of the metrics' delay or noise — and how much only by
*forecasting* the next interval better than "like the last ones"?

A persistence rule sets the pods of interval ``t`` from the clairvoyant oracle's exact needs of
the intervals before it (under the same seed, so the same random draws)::

    replicas[t] = ceil(multiplier × max(need[t-k .. t-1])) + margin_pods

optionally with the linear trend ``2·need[t-1] − need[t-2]`` as a floor under that max. The
count is set at the start of ``t``, so new pods face the start-up delay as any policy's do;
the safety mask's step limits and cooldowns are not applied (they could only make it dearer).
Every rule of the grid is played in the simulator under the evaluation's seeds and matched
against the HPA frontier exactly like a policy. The best rule is picked with hindsight on the
reported window, as the frontier's HPA settings are, so this is an optimistic reference for any
policy that only reacts — a measurement, not a policy: where even it cannot reach a cost_ratio,
only a forecast better than persistence can.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rlscale.policy.limits import ScalingLimits
from rlscale.training.episodes import episode_metrics, run_schedules
from rlscale.training.frontier import match
from rlscale.training.oracle import OracleRun
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

IntArray = npt.NDArray[np.int64]

#: The grid of rules: multipliers 1.00, 1.05, …, 1.60, 1.8, 2.0; look-backs in intervals; whole pods added.
MULTIPLIERS: tuple[float, ...] = (*(round(1.0 + 0.05 * i, 2) for i in range(13)), 1.8, 2.0)
LOOKBACKS: tuple[int, ...] = (1, 2, 4, 8)
MARGIN_PODS: tuple[int, ...] = (0, 1)
#: Extra SLO-violation minutes over the tuned HPA's that ``best_at_hpa_slo`` allows (the policy issue's bar).
SLO_SLACK_MIN = 1.0


@dataclass(frozen=True, slots=True)
class PersistenceRule:
    """One rule of the grid; see the module docstring."""

    multiplier: float
    lookback: int
    margin_pods: int
    trend: bool

    def schedule(self, needed: IntArray, first: int, limits: ScalingLimits) -> IntArray:
        """Replicas per interval: ``first`` (the Deployment as found) at 0, then the rule, within the bounds."""
        need = np.asarray(needed, dtype=np.float64)
        out = np.empty(need.size, dtype=np.int64)
        out[0] = first
        for t in range(1, need.size):
            base = float(need[max(0, t - self.lookback) : t].max())
            if self.trend and t >= 2:
                base = max(base, 2.0 * need[t - 1] - need[t - 2])
            out[t] = math.ceil(self.multiplier * base - 1e-9) + self.margin_pods
        return np.clip(out, limits.min_replicas, limits.max_replicas)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_grid() -> list[PersistenceRule]:
    """Every rule the report tries."""
    return [
        PersistenceRule(m, k, a, tr)
        for m, k, a, tr in itertools.product(MULTIPLIERS, LOOKBACKS, MARGIN_PODS, (False, True))
    ]


def persistence_report(
    sim: SimConfig,
    window: Trace,
    seeds: Sequence[int],
    oracles: Mapping[int, OracleRun],
    hpa_mean: Sequence[Mapping[str, float]],
    oracle_rh: float,
    hpa_slo_minutes: float | None = None,
) -> dict[str, Any]:
    """The JSON ``persistence`` object: the best rule at any SLO, and within the tuned HPA's SLO + 1 minute.

    ``oracles`` holds the clairvoyant oracle's run per seed (its ``needed`` counts are what the
    rules look back on, its ``found`` count what they start from); ``hpa_mean`` the HPA grid's
    means on ``window`` (the frontier) and ``oracle_rh`` the oracle's replica-hours, as for every
    policy's cost at matched SLO.
    """
    rules = rule_grid()
    schedules, env_seeds = [], []
    for seed in seeds:
        run = oracles[seed]
        for rule in rules:
            schedules.append(rule.schedule(run.needed, run.found, sim.limits))
            env_seeds.append(int(seed))
    metrics = [episode_metrics(log) for log in run_schedules(sim, window, schedules, env_seeds)]
    results: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        runs = [metrics[k * len(rules) + i] for k in range(len(seeds))]
        slo = float(np.mean([m["slo_violation_minutes"] for m in runs]))
        rh = float(np.mean([m["replica_hours"] for m in runs]))
        matched = match(slo, rh, hpa_mean, oracle_rh)
        results.append({**rule.as_dict(), "slo_violation_minutes": slo, "replica_hours": rh, **matched})
    priced = [r for r in results if r["cost_ratio"] is not None]

    def cheapest(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
        return min(candidates, key=lambda r: (r["cost_ratio"], r["slo_violation_minutes"])) if candidates else None

    out: dict[str, Any] = {"rules": len(rules), "best": cheapest(priced)}
    if hpa_slo_minutes is not None:
        cap = hpa_slo_minutes + SLO_SLACK_MIN
        out["slo_cap_minutes"] = cap
        out["best_at_hpa_slo"] = cheapest([r for r in priced if r["slo_violation_minutes"] <= cap])
    return out


__all__ = ["PersistenceRule", "persistence_report", "rule_grid"]
