"""Conventional baselines: the Kubernetes HPA v2 algorithm, a static policy and a proportional one.

The HPA is reproduced from the documented algorithm ("Horizontal Pod Autoscaling",
kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/) and the controller
(``pkg/controller/podautoscaler/horizontal.go``). Each rule below names the part of the
documentation it mirrors:

* *Algorithm details*: ``desiredReplicas = ceil(currentReplicas × currentMetricValue /
  desiredMetricValue)``, skipped when the ratio is within the **tolerance** (0.1 by
  default), computed over ready pods.
* *Algorithm details*, missing metrics: when the metric cannot be read, the HPA does not
  scale (we hold; it never scales down on missing data).
* *Stabilization window*: the recommendation is the **highest** recommendation of the
  last ``scaleDown.stabilizationWindowSeconds`` (300 s by default) for a scale-down, and the
  **lowest** of the last ``scaleUp.stabilizationWindowSeconds`` (0 s) for a scale-up. A new
  autoscaler's window starts holding the current count (the controller's
  ``maybeInitScaleDownStabilizationWindow``).
* *Default behavior* / *Scaling policies*: scale-up may add ``max(4 pods, 100%)`` per 15 s
  period, scale-down may remove 100% per 15 s; ``selectPolicy: Max`` picks the policy
  allowing the largest change; changes already made in the current period count against it.
* *minReplicas / maxReplicas*: the final count is clamped to the bounds.

The HPA scales on utilisation of the CPU *request*; rlscale's demo and simulator run
Guaranteed pods (request = limit), so utilisation against the limit is the same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class HpaScalingPolicy(BaseModel):
    """One HPA ``behavior`` policy: change by ``value`` pods or percent per ``period_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_s: int = Field(15, gt=0, le=1800)


class HpaConfig(BaseModel):
    """The HPA's knobs, with Kubernetes' defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_utilization: float = Field(0.7, gt=0, le=2.0, description="Target CPU utilisation (fraction).")
    tolerance: float = Field(0.1, ge=0, lt=1)
    scale_up_stabilization_s: float = Field(0.0, ge=0, le=3600)
    scale_down_stabilization_s: float = Field(300.0, ge=0, le=3600)
    scale_up_policies: tuple[HpaScalingPolicy, ...] = (
        HpaScalingPolicy(type="Pods", value=4, period_s=15),
        HpaScalingPolicy(type="Percent", value=100, period_s=15),
    )
    scale_down_policies: tuple[HpaScalingPolicy, ...] = (HpaScalingPolicy(type="Percent", value=100, period_s=15),)


@dataclass
class HpaState:
    """The HPA controller's memory: past recommendations and scale events, with times."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, replica change)
    initialized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendations": [[t, r] for t, r in self.recommendations],
            "events": [[t, d] for t, d in self.events],
            "initialized": self.initialized,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HpaState:
        return cls(
            recommendations=[(float(t), int(r)) for t, r in data.get("recommendations", [])],
            events=[(float(t), int(d)) for t, d in data.get("events", [])],
            initialized=bool(data.get("initialized", False)),
        )

    def record_change(self, cfg: HpaConfig, now: float, delta: int) -> None:
        """Remember a replica change (whoever made it): it counts against the period's policy."""
        if delta:
            self.events.append((now, delta))
        longest = max((p.period_s for p in (*cfg.scale_up_policies, *cfg.scale_down_policies)), default=0)
        self.events = [(t, d) for t, d in self.events if t > now - longest]


def _change_in_period(events: list[tuple[float, int]], now: float, period_s: int, sign: int) -> int:
    return sum(d for t, d in events if t > now - period_s and d * sign > 0) * sign


def _scale_up_limit(cfg: HpaConfig, events: list[tuple[float, int]], current: int, now: float) -> int:
    limit = -math.inf
    for p in cfg.scale_up_policies:
        start = current - _change_in_period(events, now, p.period_s, +1)
        proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
        limit = max(limit, proposed)
    return int(limit) if limit != -math.inf else current


def _scale_down_limit(cfg: HpaConfig, events: list[tuple[float, int]], current: int, now: float) -> int:
    limit = math.inf
    for p in cfg.scale_down_policies:
        start = current + _change_in_period(events, now, p.period_s, -1)
        proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
        limit = min(limit, proposed)
    return int(limit) if limit != math.inf else current


def hpa_recommend(
    cfg: HpaConfig,
    state: HpaState,
    *,
    current_replicas: int,
    ready_replicas: int,
    utilization: float | None,
    min_replicas: int,
    max_replicas: int,
    now: float,
) -> tuple[int, str]:
    """One HPA reconcile: the desired replica count and why. Updates ``state``'s history."""
    if utilization is None or not math.isfinite(utilization):
        # Missing metric: no recommendation, hold (bounds still apply, as in the controller).
        return min(max(current_replicas, min_replicas), max_replicas), "hpa: metric unavailable, holding"
    ratio = utilization / cfg.target_utilization
    base = ready_replicas if ready_replicas > 0 else current_replicas
    if abs(ratio - 1.0) <= cfg.tolerance:
        raw = current_replicas
        why = f"hpa: utilisation {utilization:.2f} within tolerance of target {cfg.target_utilization:.2f}"
    else:
        raw = math.ceil(ratio * base)
        why = f"hpa: utilisation {utilization:.2f} vs target {cfg.target_utilization:.2f} → {raw}"

    # Stabilisation window over past recommendations (the new one included). Like the
    # controller, a new autoscaler starts its scale-down window holding the current count,
    # so it never scales down in its first window.
    if not state.initialized:
        state.initialized = True
        if cfg.scale_down_stabilization_s > 0:
            state.recommendations.append((now, current_replicas))
    up_cut = now - cfg.scale_up_stabilization_s
    down_cut = now - cfg.scale_down_stabilization_s
    up_rec, down_rec = raw, raw
    for t, rec in state.recommendations:
        if t > up_cut:
            up_rec = min(up_rec, rec)
        if t > down_cut:
            down_rec = max(down_rec, rec)
    keep = max(cfg.scale_up_stabilization_s, cfg.scale_down_stabilization_s)
    state.recommendations = [(t, r) for t, r in state.recommendations if t > now - keep]
    state.recommendations.append((now, raw))
    desired = current_replicas
    desired = max(desired, up_rec)
    desired = min(desired, down_rec)
    if desired != raw:
        why += f", stabilised to {desired}"

    # Behaviour policies, then bounds.
    if desired > current_replicas:
        allowed = min(max(_scale_up_limit(cfg, state.events, current_replicas, now), current_replicas), max_replicas)
        if desired > allowed:
            desired, why = allowed, why + f", scale-up limited to {allowed}"
    elif desired < current_replicas:
        allowed = max(min(_scale_down_limit(cfg, state.events, current_replicas, now), current_replicas), min_replicas)
        if desired < allowed:
            desired, why = allowed, why + f", scale-down limited to {allowed}"
    clamped = min(max(desired, min_replicas), max_replicas)
    if clamped != desired:
        why += f", clamped to [{min_replicas}, {max_replicas}]"
    return clamped, why


def static_recommend(replicas: int, min_replicas: int, max_replicas: int) -> tuple[int, str]:
    """A fixed replica count: the "provision for the peak" baseline."""
    return min(max(replicas, min_replicas), max_replicas), f"static: {replicas} replicas"


def proportional_recommend(
    request_rate: float | None, rate_per_replica: float, current_replicas: int, min_replicas: int, max_replicas: int
) -> tuple[int, str]:
    """One replica per fixed increment of load; holds when the load is unknown."""
    if request_rate is None or not math.isfinite(request_rate):
        return min(max(current_replicas, min_replicas), max_replicas), "proportional: load unknown, holding"
    want = max(1, math.ceil(request_rate / rate_per_replica))
    return min(max(want, min_replicas), max_replicas), f"proportional: {request_rate:.1f} req/s → {want}"


class BaselineConfig(BaseModel):
    """Which conventional policy the gate compares the learned one against, and its knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["hpa", "static", "proportional"] = "hpa"
    hpa: HpaConfig = Field(default_factory=HpaConfig)
    static_replicas: int = Field(3, ge=0)
    rate_per_replica: float = Field(25.0, gt=0, description="Proportional: requests/s one replica handles.")
