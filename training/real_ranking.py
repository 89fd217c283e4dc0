"""The simulator's prediction of the demo's two policies on a load pattern, and how it ranks them.

Issue 12 asks whether the simulator, fitted to the real demo service, ranks the tuned HPA
and the learned policy the way the real stack does. The real half
(:mod:`rlscale.devstack.real_ranking`) runs ``rlscale demo --node-kind real`` twice on one
step pattern at 1× — gate ``shadow`` (the HPA acts) and ``full`` (the learned policy acts).
This module is the other half, and needs no cluster: the same pattern through
:func:`~rlscale.training.episodes.run_controllers` with the *same* decision config the
operator builds from the demo's ``AutoscalePolicy`` (its limits, cooldowns, HPA settings
and gate mode), the same decision interval, the same absolute load and the same starting
Deployment, under a service config fitted by ``rlscale calibrate``.

Why a step pattern of whole minutes at 1×: the demo normally replays a day at 60×, one
pattern minute per wall second, which the simulator's 60 s load rows cannot represent at a
5 s decision interval; at 1× the load generator holds each minute's rate for 60 wall seconds,
exactly as the simulator holds a trace row.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rlscale.policy.decide import DecisionConfig
from rlscale.policy.model import PolicyModel
from rlscale.training.episodes import episode_metrics
from rlscale.training.evaluate import aggregate, play
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

PolicyName = Literal["hpa", "learned"]
#: The gate mode that makes each policy act: ``shadow`` — the HPA decides, the model is only
#: recorded; ``full`` — the model decides (through the mask).
GATE_MODE: dict[PolicyName, str] = {"hpa": "shadow", "learned": "full"}

#: 20 minutes of whole-minute steps, as fractions of the peak: a quiet start, a ramp to the
#: peak, a drop, a second (sudden) peak and a tail. Both directions of scaling, a ramp the
#: HPA can follow and a step it cannot anticipate.
STEP_PATTERN: tuple[float, ...] = (
    0.25, 0.25, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5,
    0.25, 0.25, 0.25, 1.0, 1.0, 1.0, 0.6, 0.3, 0.3, 0.3,
)  # fmt: skip

#: Differences the comparison calls a tie rather than a ranking: half a minute of SLO
#: violation (six 5 s intervals), and 3 % of replica-seconds.
TIE_SLO_MIN = 0.5
TIE_COST_REL = 0.03


def step_pattern(start_s: float = 0.0) -> Trace:
    """:data:`STEP_PATTERN` as a trace (value 100 = the peak), its first row at unix time ``start_s``."""
    return Trace(name="steps-20min", values=np.array(STEP_PATTERN) * 100.0, start_s=start_s, kind="generated")


class RealService(BaseModel):
    """What the demo's real Deployment starts as and what the calibration measured of its pods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_replicas: int = 1
    initial_cpu_limit_m: int = 150
    initial_memory_limit_mib: int = 128
    #: The calibration measured 37–38 MiB per pod at every point (docs/simulator.md).
    working_set_mib: float = 38.0
    peak_rps: float = 60.0
    interval_s: float = 5.0


def ranking_sim_config(service: SimConfig, decision: DecisionConfig, real: RealService, pattern: Trace) -> SimConfig:
    """``service``'s fitted parameters, with everything else as the real demo run has it.

    The limits and objective are the policy's (so the mask and the reward are the
    operator's); the load is absolute (the busiest row is ``real.peak_rps``); the decision
    interval is the policy's; the memory model is the measured working set (the default
    256 MiB idle would OOM-kill the real pods' 128 MiB in the simulator only).
    """
    data = service.model_dump()
    data.update(
        limits=decision.limits.model_dump(),
        objective=decision.objective.model_dump(),
        step_s=real.interval_s,
        initial_replicas=real.initial_replicas,
        initial_cpu_limit_m=real.initial_cpu_limit_m,
        initial_memory_limit_mib=real.initial_memory_limit_mib,
        absolute_rps_per_unit=real.peak_rps / float(np.max(pattern.values)),
        load_scale_range=(1.0, 1.0),
        memory_base_mib=real.working_set_mib,
        memory_per_inflight_mib=0.1,
    )
    return SimConfig.model_validate(data)


class PolicyOutcome(BaseModel):
    """One policy's run over the pattern: the numbers the ranking compares."""

    model_config = ConfigDict(frozen=True)

    slo_violation_minutes: float
    replica_seconds: float
    cpu_core_seconds: float
    replicas_max: float
    #: Intervals in which the replica count changed (churn: each change starts or stops pods).
    replica_changes: float = 0.0
    #: Spread over simulator seeds (0 for the single real run).
    slo_violation_minutes_std: float = 0.0
    replica_seconds_std: float = 0.0


def predict(
    sim: SimConfig,
    pattern: Trace,
    configs: Mapping[PolicyName, DecisionConfig],
    model: PolicyModel | None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict[PolicyName, PolicyOutcome]:
    """Each policy's outcome in the simulator, mean over ``seeds`` (one batch, common random numbers)."""
    names = list(configs)
    by_policy = play(sim, pattern, [(configs[name], model) for name in names], seeds)
    out: dict[PolicyName, PolicyOutcome] = {}
    for name, logs in zip(names, by_policy, strict=True):
        per_seed = []
        for log in logs:
            m = episode_metrics(log)
            per_seed.append(
                {
                    "slo": m["slo_violation_minutes"],
                    "rs": m["replica_hours"] * 3600.0,
                    "cs": m["cpu_hours"] * 3600.0,
                    "max": float(log.steps["replicas"].max()),
                    "changes": float(log.steps["replicas_changed"].sum()),
                }
            )
        agg = aggregate(per_seed)
        out[name] = PolicyOutcome(
            slo_violation_minutes=agg["slo"],
            replica_seconds=agg["rs"],
            cpu_core_seconds=agg["cs"],
            replicas_max=agg["max"],
            replica_changes=agg["changes"],
            slo_violation_minutes_std=agg["slo_std"],
            replica_seconds_std=agg["rs_std"],
        )
    return out


Verdict = Literal["hpa", "learned", "tie"]


def better(a: PolicyOutcome, b: PolicyOutcome, metric: Literal["slo", "cost"]) -> Verdict:
    """Which of the HPA (``a``) and the learned policy (``b``) does better on ``metric``, or a tie."""
    if metric == "slo":
        diff = b.slo_violation_minutes - a.slo_violation_minutes
        if abs(diff) < TIE_SLO_MIN:
            return "tie"
    else:
        diff = b.replica_seconds - a.replica_seconds
        if abs(diff) < TIE_COST_REL * max(a.replica_seconds, b.replica_seconds):
            return "tie"
    return "hpa" if diff > 0 else "learned"


class RankingComparison(BaseModel):
    """Real vs predicted outcomes of both policies, and whether the rankings agree."""

    model_config = ConfigDict(frozen=True)

    real: dict[PolicyName, PolicyOutcome]
    predicted: dict[PolicyName, PolicyOutcome]
    real_better: dict[str, Verdict]
    predicted_better: dict[str, Verdict]
    agrees: dict[str, bool]


def compare(
    real: Mapping[PolicyName, PolicyOutcome], predicted: Mapping[PolicyName, PolicyOutcome]
) -> RankingComparison:
    """Rank both policies on SLO minutes and on replica-seconds, on the real stack and in the simulator."""
    real_better = {m: better(real["hpa"], real["learned"], m) for m in ("slo", "cost")}  # type: ignore[arg-type]
    pred_better = {m: better(predicted["hpa"], predicted["learned"], m) for m in ("slo", "cost")}  # type: ignore[arg-type]
    return RankingComparison(
        real=dict(real),
        predicted=dict(predicted),
        real_better=real_better,
        predicted_better=pred_better,
        agrees={m: real_better[m] == pred_better[m] for m in real_better},
    )


def format_comparison(c: RankingComparison) -> str:
    """A markdown table: each policy real vs predicted, then the rankings."""
    lines = [
        "| policy | SLO-violation min real / predicted (± std) | replica-s real / predicted (± std) "
        "| CPU core-s real / predicted | max replicas real / predicted | replica changes real / predicted |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("hpa", "learned"):
        r, p = c.real[name], c.predicted[name]  # type: ignore[index]
        lines.append(
            f"| {name} | {r.slo_violation_minutes:.1f} / {p.slo_violation_minutes:.1f} ± "
            f"{p.slo_violation_minutes_std:.1f} | {r.replica_seconds:.0f} / {p.replica_seconds:.0f} ± "
            f"{p.replica_seconds_std:.0f} | {r.cpu_core_seconds:.0f} / {p.cpu_core_seconds:.0f} | "
            f"{r.replicas_max:.0f} / {p.replicas_max:.1f} | {r.replica_changes:.0f} / {p.replica_changes:.0f} |"
        )
    lines += ["", "| better on | real stack | simulator | agree |", "|---|---|---|---|"]
    for metric, label in (("slo", "SLO-violation minutes"), ("cost", "replica-seconds")):
        lines.append(
            f"| {label} | {c.real_better[metric]} | {c.predicted_better[metric]} | "
            f"{'yes' if c.agrees[metric] else 'no'} |"
        )
    return "\n".join(lines)


def outcome_from_samples(samples: Sequence[Mapping[str, Any]], step_s: float) -> PolicyOutcome:
    """A real run's outcome from its 5 s samples (``TwinSample`` as dicts): the same sums the simulator's are."""
    if not samples:
        raise ValueError("no samples: the real run ended before Prometheus had a reading")
    return PolicyOutcome(
        slo_violation_minutes=sum(bool(s["slo_violated"]) for s in samples) * step_s / 60.0,
        replica_seconds=sum(float(s["replicas"]) for s in samples) * step_s,
        cpu_core_seconds=sum(float(s["replicas"]) * float(s["cpu_limit_m"]) for s in samples) / 1000.0 * step_s,
        replicas_max=max(float(s["replicas"]) for s in samples),
        replica_changes=float(sum(a["replicas"] != b["replicas"] for a, b in itertools.pairwise(samples))),
    )


__all__ = [
    "GATE_MODE",
    "STEP_PATTERN",
    "PolicyOutcome",
    "RankingComparison",
    "RealService",
    "better",
    "compare",
    "format_comparison",
    "outcome_from_samples",
    "predict",
    "ranking_sim_config",
    "step_pattern",
]
