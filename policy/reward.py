"""The multi-objective reward, shared by PPO training and the rollout gate's comparison.

One interval's reward weighs throughput served, latency against the SLO (with an extra
SLA-violation penalty), resource cost and control overhead (changes, especially limit
changes that restart pods). All terms are scale-free — fractions and ratios — so the same
weights mean the same thing for a 2-pod and a 200-pod service.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]


class RewardWeights(BaseModel):
    """Weights of the reward terms; larger means that term matters more."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    throughput: float = Field(1.0, ge=0, description="Reward per unit of served fraction of requests.")
    latency: float = Field(0.5, ge=0, description="Penalty per unit of p99 latency / SLO (capped at 5).")
    sla_violation: float = Field(2.0, ge=0, description="Extra penalty for an interval that breaks the SLO.")
    cost: float = Field(1.0, ge=0, description="Penalty per unit of allocated CPU / maximum allocatable CPU.")
    scaling_change: float = Field(0.02, ge=0, description="Penalty for an interval whose replica count changed.")
    limit_change: float = Field(0.2, ge=0, description="Penalty for a limit change (it restarts pods).")


class Objective(BaseModel):
    """What the user wants: a latency SLO, a tolerable error rate, and the reward weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_slo_ms: float = Field(250.0, gt=0, le=600_000, description="Target p99 latency.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Error/drop fraction above which the SLO is broken.")
    weights: RewardWeights = Field(default_factory=RewardWeights)


def slo_violated(objective: Objective, latency_p99_ms: ArrayLike, error_rate: ArrayLike) -> npt.NDArray[np.bool_]:
    """True where the interval broke the SLO. Unknown (NaN) latency or errors are not a violation."""
    return np.asarray(
        np.greater(latency_p99_ms, objective.latency_slo_ms) | np.greater(error_rate, objective.max_error_rate)
    )


def reward(
    objective: Objective,
    *,
    latency_p99_ms: ArrayLike,
    error_rate: ArrayLike,
    allocated_cpu_m: ArrayLike,
    max_cpu_m: float,
    replicas_changed: ArrayLike,
    limits_changed: ArrayLike,
) -> FloatArray:
    """Reward of one interval, element-wise over arrays of shape ``(n,)`` (or scalars).

    ``allocated_cpu_m`` is replicas × CPU limit; ``max_cpu_m`` the most the limits allow
    (max replicas × max CPU limit), which makes cost a fraction in [0, 1]. Unknown (NaN)
    errors count as none and unknown latency as on target; callers skip intervals whose
    outcome is unknown altogether.
    """
    w = objective.weights
    err = np.minimum(np.maximum(error_rate, 0.0), 1.0)
    err = np.where(np.isnan(err), 0.0, err)
    lat = np.minimum(np.maximum(np.divide(latency_p99_ms, objective.latency_slo_ms), 0.0), 5.0)
    lat = np.where(np.isnan(lat), 1.0, lat)
    violated = slo_violated(objective, latency_p99_ms, error_rate)
    cost = np.divide(allocated_cpu_m, max(max_cpu_m, 1.0))
    return np.asarray(
        w.throughput * (1.0 - err)
        - w.latency * lat
        - w.sla_violation * violated
        - w.cost * cost
        - w.scaling_change * np.asarray(replicas_changed, dtype=np.float64)
        - w.limit_change * np.asarray(limits_changed, dtype=np.float64),
        dtype=np.float64,
    )
