"""The one decision function shared by the simulator, the operator and the tests.

``decide`` turns what is observed about a workload into what to set, and why::

    observation ──► learned policy (ONNX logits) ─┐
    baseline (HPA / static / proportional) ───────┤
                                                  ▼
                 safety mask (hard limits; the no-op is always allowed)
                                                  ▼
                 rollout gate (shadow / gradual ratio / full, demotion on bad windows)
                                                  ▼
                 final clamp → decision: replicas, limits, source, masked actions, explanation

It is pure: the caller passes the controller state in and stores the new state it gets
back (the operator keeps it in the custom resource's status, so a restart resumes it).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rlscale.policy.actions import ACTIONS, NOOP
from rlscale.policy.baselines import (
    BaselineConfig,
    HpaState,
    hpa_recommend,
    proportional_recommend,
    static_recommend,
)
from rlscale.policy.gate import GateConfig, GateState, Source, choose, record_outcome
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import MaskRule, ScalingState, action_mask, enforce
from rlscale.policy.model import PolicyModel, masked_argmax
from rlscale.policy.reward import Objective, reward, slo_violated
from rlscale.policy.spec import encode


class DecisionConfig(BaseModel):
    """Everything a user configures about how one workload is scaled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: ScalingLimits = Field(default_factory=ScalingLimits)
    objective: Objective = Field(default_factory=Objective)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="after")
    def _baseline_within_limits(self) -> DecisionConfig:
        return self


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known about a workload at one moment. ``None`` marks an unknown metric."""

    timestamp: float
    replicas: int
    ready_replicas: int
    cpu_limit_m: int
    memory_limit_mib: int
    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    request_rate: float | None = None
    request_rate_prev: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p99_prev_ms: float | None = None
    error_rate: float | None = None
    queue_per_replica: float | None = None

    @property
    def metrics_ok(self) -> bool:
        """All core metrics known (see :data:`rlscale.policy.spec.CORE_METRICS`)."""
        return all(
            v is not None and math.isfinite(v) for v in (self.cpu_utilization, self.request_rate, self.latency_p99_ms)
        )

    def columns(self, config: DecisionConfig) -> dict[str, np.ndarray]:
        """The raw columns :func:`rlscale.policy.spec.encode` takes, as a batch of one."""

        def col(v: float | None) -> np.ndarray:
            return np.array([np.nan if v is None else v], dtype=np.float64)

        lim = config.limits
        return {
            "timestamp": col(self.timestamp),
            "replicas": col(self.replicas),
            "ready_replicas": col(self.ready_replicas),
            "cpu_limit_m": col(self.cpu_limit_m),
            "memory_limit_mib": col(self.memory_limit_mib),
            "cpu_utilization": col(self.cpu_utilization),
            "memory_utilization": col(self.memory_utilization),
            "request_rate": col(self.request_rate),
            "request_rate_prev": col(self.request_rate_prev),
            "latency_p50_ms": col(self.latency_p50_ms),
            "latency_p99_ms": col(self.latency_p99_ms),
            "latency_p99_prev_ms": col(self.latency_p99_prev_ms),
            "error_rate": col(self.error_rate),
            "queue_per_replica": col(self.queue_per_replica),
            "slo_ms": col(config.objective.latency_slo_ms),
            "max_replicas": col(lim.max_replicas),
            "cpu_limit_max_m": col(lim.cpu_limit_max_m),
            "memory_limit_max_mib": col(lim.memory_limit_max_mib),
        }


@dataclass
class ControllerState:
    """What the controller remembers between decisions; serialises to a small dict."""

    gate: GateState
    hpa: HpaState = field(default_factory=HpaState)
    gate_mode: str = ""
    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    last_limit_change_at: float | None = None
    last_source: Source | None = None
    last_replicas_changed: bool = False
    last_limits_changed: bool = False
    decisions: int = 0

    @classmethod
    def initial(cls, config: DecisionConfig) -> ControllerState:
        return cls(gate=GateState.initial(config.gate), gate_mode=config.gate.mode)

    def copy(self) -> ControllerState:
        return replace(
            self,
            gate=replace(self.gate),
            hpa=HpaState(list(self.hpa.recommendations), list(self.hpa.events)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.to_dict(),
            "hpa": self.hpa.to_dict(),
            "gate_mode": self.gate_mode,
            "last_scale_up_at": self.last_scale_up_at,
            "last_scale_down_at": self.last_scale_down_at,
            "last_limit_change_at": self.last_limit_change_at,
            "last_source": self.last_source,
            "last_replicas_changed": self.last_replicas_changed,
            "last_limits_changed": self.last_limits_changed,
            "decisions": self.decisions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControllerState:
        return cls(
            gate=GateState.from_dict(data["gate"]),
            hpa=HpaState.from_dict(data.get("hpa", {})),
            gate_mode=str(data.get("gate_mode", "")),
            last_scale_up_at=data.get("last_scale_up_at"),
            last_scale_down_at=data.get("last_scale_down_at"),
            last_limit_change_at=data.get("last_limit_change_at"),
            last_source=data.get("last_source"),
            last_replicas_changed=bool(data.get("last_replicas_changed", False)),
            last_limits_changed=bool(data.get("last_limits_changed", False)),
            decisions=int(data.get("decisions", 0)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What to set and why."""

    replicas: int
    cpu_limit_m: int
    memory_limit_mib: int
    previous_replicas: int
    previous_cpu_limit_m: int
    previous_memory_limit_mib: int
    source: Source
    action: str
    learned_action: str | None
    baseline_replicas: int
    masked: tuple[tuple[str, str], ...]
    enforced_by: str | None
    explanation: str
    reward: float | None = None
    slo_violated: bool | None = None
    model_error: str | None = None

    @property
    def replicas_changed(self) -> bool:
        return self.replicas != self.previous_replicas

    @property
    def limits_changed(self) -> bool:
        return (self.cpu_limit_m, self.memory_limit_mib) != (self.previous_cpu_limit_m, self.previous_memory_limit_mib)

    @property
    def changed(self) -> bool:
        return self.replicas_changed or self.limits_changed


def _baseline(config: DecisionConfig, state: ControllerState, obs: Observation) -> tuple[int, str]:
    b, lim = config.baseline, config.limits
    if b.kind == "static":
        return static_recommend(b.static_replicas, lim.min_replicas, lim.max_replicas)
    if b.kind == "proportional":
        return proportional_recommend(
            obs.request_rate, b.rate_per_replica, obs.replicas, lim.min_replicas, lim.max_replicas
        )
    return hpa_recommend(
        b.hpa,
        state.hpa,
        current_replicas=obs.replicas,
        ready_replicas=obs.ready_replicas,
        utilization=obs.cpu_utilization,
        min_replicas=lim.min_replicas,
        max_replicas=lim.max_replicas,
        now=obs.timestamp,
    )


def _interval_reward(config: DecisionConfig, state: ControllerState, obs: Observation) -> tuple[float, bool] | None:
    """Reward of the interval that just ended, or None when its outcome is unknown."""
    if obs.latency_p99_ms is None or not math.isfinite(obs.latency_p99_ms):
        return None
    lat = np.array([obs.latency_p99_ms])
    err = np.array([obs.error_rate if obs.error_rate is not None else np.nan])
    lim = config.limits
    r = reward(
        config.objective,
        latency_p99_ms=lat,
        error_rate=err,
        allocated_cpu_m=np.array([obs.replicas * obs.cpu_limit_m], dtype=np.float64),
        max_cpu_m=float(lim.max_replicas * lim.cpu_limit_max_m),
        replicas_changed=np.array([state.last_replicas_changed]),
        limits_changed=np.array([state.last_limits_changed]),
    )
    return float(r[0]), bool(slo_violated(config.objective, lat, err)[0])


def decide(
    obs: Observation,
    config: DecisionConfig,
    state: ControllerState,
    model: PolicyModel | None = None,
    *,
    model_error: str | None = None,
) -> tuple[Decision, ControllerState]:
    """Decide replicas and limits for one workload; returns the decision and the new state.

    ``model`` is the loaded learned policy, or ``None`` when there is none or it was
    refused (``model_error`` says why); the baseline then acts. ``state`` is not modified.
    """
    state = state.copy()
    now = obs.timestamp
    if state.gate_mode != config.gate.mode:
        state.gate, state.gate_mode = GateState.initial(config.gate), config.gate.mode

    # 1. Credit the interval that just ended to whoever decided it.
    outcome = _interval_reward(config, state, obs)
    if outcome is not None and state.last_source is not None:
        record_outcome(config.gate, state.gate, state.last_source, *outcome)

    # 2. What the hard limits allow now.
    scaling = ScalingState.single(
        replicas=obs.replicas,
        cpu_limit_m=obs.cpu_limit_m,
        memory_limit_mib=obs.memory_limit_mib,
        metrics_ok=obs.metrics_ok,
        memory_utilization=obs.memory_utilization,
        now=now,
        last_scale_up_at=state.last_scale_up_at,
        last_scale_down_at=state.last_scale_down_at,
        last_limit_change_at=state.last_limit_change_at,
    )
    mask = action_mask(config.limits, scaling)

    # 3. Both policies' proposals.
    baseline_replicas, baseline_why = _baseline(config, state, obs)
    learned_idx: int | None = None
    if model is not None:
        logits = model.logits(encode(obs.columns(config)))
        learned_idx = int(masked_argmax(logits, mask.allowed)[0])

    # 4. The gate picks who acts; the final clamp applies to either.
    source: Source = choose(config.gate, state.gate) if learned_idx is not None else "baseline"
    if source == "learned" and learned_idx is not None:
        want = (
            int(mask.replicas[0, learned_idx]),
            int(mask.cpu_limit_m[0, learned_idx]),
            int(mask.memory_limit_mib[0, learned_idx]),
        )
        action = ACTIONS[learned_idx].name
    else:
        want = (baseline_replicas, obs.cpu_limit_m, obs.memory_limit_mib)
        action = f"baseline:{config.baseline.kind}"
    replicas, cpu, mem, rule = enforce(config.limits, scaling, *want)
    enforced_by = None
    if (replicas, cpu, mem) != want:
        enforced_by = rule.label if rule != MaskRule.ALLOWED else "step_or_bounds"

    # 5. Remember what changed, for cooldowns, HPA behaviour periods and the next reward.
    delta = replicas - obs.replicas
    if delta > 0:
        state.last_scale_up_at = now
    elif delta < 0:
        state.last_scale_down_at = now
    limits_changed = (cpu, mem) != (obs.cpu_limit_m, obs.memory_limit_mib)
    if limits_changed:
        state.last_limit_change_at = now
    if config.baseline.kind == "hpa":
        state.hpa.record_change(config.baseline.hpa, now, delta)
    state.last_source = source
    state.last_replicas_changed = delta != 0
    state.last_limits_changed = limits_changed
    state.decisions += 1

    masked = tuple((ACTIONS[i].name, MaskRule(int(code)).label) for i, code in enumerate(mask.reason[0]) if code)
    learned_action = ACTIONS[learned_idx].name if learned_idx is not None else None
    decision = Decision(
        replicas=replicas,
        cpu_limit_m=cpu,
        memory_limit_mib=mem,
        previous_replicas=obs.replicas,
        previous_cpu_limit_m=obs.cpu_limit_m,
        previous_memory_limit_mib=obs.memory_limit_mib,
        source=source,
        action=action,
        learned_action=learned_action,
        baseline_replicas=baseline_replicas,
        masked=masked,
        enforced_by=enforced_by,
        explanation="",
        reward=outcome[0] if outcome else None,
        slo_violated=outcome[1] if outcome else None,
        model_error=model_error,
    )
    return replace(decision, explanation=explain(decision, config, state, baseline_why)), state


def explain(decision: Decision, config: DecisionConfig, state: ControllerState, baseline_why: str) -> str:
    """A one-paragraph, human-readable account of a decision."""
    d = decision
    parts = [f"{d.source} acted ({d.action})"]
    if d.changed:
        moves = []
        if d.replicas_changed:
            moves.append(f"replicas {d.previous_replicas}→{d.replicas}")
        if d.cpu_limit_m != d.previous_cpu_limit_m:
            moves.append(f"cpu limit {d.previous_cpu_limit_m}m→{d.cpu_limit_m}m")
        if d.memory_limit_mib != d.previous_memory_limit_mib:
            moves.append(f"memory limit {d.previous_memory_limit_mib}Mi→{d.memory_limit_mib}Mi")
        parts.append(", ".join(moves))
    else:
        parts.append(f"no change at {d.replicas} replicas")
    if d.enforced_by:
        parts.append(f"clamped by {d.enforced_by}")
    parts.append(baseline_why)
    if d.learned_action is not None and d.source != "learned":
        parts.append(f"learned would have chosen {d.learned_action}")
    if d.model_error:
        parts.append(f"learned policy unavailable: {d.model_error}")
    if d.masked:
        counts = Counter(rule for _, rule in d.masked)
        parts.append("masked " + ", ".join(f"{n}×{rule}" for rule, n in sorted(counts.items())))
    g = state.gate
    parts.append(f"gate {config.gate.mode} ratio {g.ratio:.2f}" + (f" ({g.last_verdict})" if g.last_verdict else ""))
    return "; ".join(parts)


__all__ = ["NOOP", "ControllerState", "Decision", "DecisionConfig", "Observation", "decide", "explain"]
