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
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rlscale.policy.actions import ACTION_NAMES, N_ACTIONS, NOOP
from rlscale.policy.baselines import (
    BaselineConfig,
    HpaState,
    hpa_recommend,
    proportional_recommend,
    static_recommend,
)
from rlscale.policy.gate import GateConfig, GateState, Source, choose, record_outcome
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import RULE_LABELS, ScalingState, action_proposals, check
from rlscale.policy.model import PolicyModel, masked_argmax
from rlscale.policy.reward import Objective, reward, slo_violated
from rlscale.policy.observation import Observation
from rlscale.policy.spec import encode_matrix


class DecisionConfig(BaseModel):
    """Everything a user configures about how one workload is scaled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: ScalingLimits = Field(default_factory=ScalingLimits)
    objective: Objective = Field(default_factory=Objective)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    gate: GateConfig = Field(default_factory=GateConfig)


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
        # By hand rather than dataclasses.replace, which re-runs field introspection on
        # every call: this runs once per decision, on the operator's latency path.
        return ControllerState(
            gate=GateState(**self.gate.__dict__),
            hpa=HpaState(list(self.hpa.recommendations), list(self.hpa.events), self.hpa.initialized),
            gate_mode=self.gate_mode,
            last_scale_up_at=self.last_scale_up_at,
            last_scale_down_at=self.last_scale_down_at,
            last_limit_change_at=self.last_limit_change_at,
            last_source=self.last_source,
            last_replicas_changed=self.last_replicas_changed,
            last_limits_changed=self.last_limits_changed,
            decisions=self.decisions,
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


@dataclass(frozen=True)
class Decision:
    """What to set and why.

    ``masked`` and ``explanation`` are derived on first use from the mask's reason codes
    and the facts captured at decision time: the simulator makes millions of decisions and
    reads neither, the operator reads both once.
    """

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
    enforced_by: str | None
    reasons: np.ndarray = field(repr=False, compare=False)  # MaskRule code of each action of the table (0: allowed)
    baseline_why: str = ""
    gate_mode: str = ""
    gate_ratio: float = 0.0
    gate_verdict: str = ""
    reward: float | None = None
    slo_violated: bool | None = None
    model_error: str | None = None

    @cached_property
    def masked(self) -> tuple[tuple[str, str], ...]:
        """(action, rule) of every forbidden action of the table."""
        return tuple((ACTION_NAMES[i], RULE_LABELS[self.reasons[i]]) for i in np.flatnonzero(self.reasons))

    @cached_property
    def explanation(self) -> str:
        """A one-paragraph, human-readable account of this decision."""
        return explain(
            source=self.source,
            action=self.action,
            before=(self.previous_replicas, self.previous_cpu_limit_m, self.previous_memory_limit_mib),
            after=(self.replicas, self.cpu_limit_m, self.memory_limit_mib),
            enforced_by=self.enforced_by,
            baseline_why=self.baseline_why,
            learned_action=self.learned_action,
            model_error=self.model_error,
            masked=self.masked,
            gate=(self.gate_mode, self.gate_ratio, self.gate_verdict),
        )

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
    err = obs.error_rate if obs.error_rate is not None else np.nan
    lim = config.limits
    r = reward(
        config.objective,
        latency_p99_ms=obs.latency_p99_ms,
        error_rate=err,
        allocated_cpu_m=obs.replicas * obs.cpu_limit_m,
        max_cpu_m=float(lim.max_replicas * lim.cpu_limit_max_m),
        replicas_changed=state.last_replicas_changed,
        limits_changed=state.last_limits_changed,
    )
    return float(r), bool(slo_violated(config.objective, obs.latency_p99_ms, err))


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

    # 2. Both policies' proposals, checked against the hard limits in one pass: the 63
    #    actions of the table, plus the baseline's target as one more column.
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
    baseline_replicas, baseline_why = _baseline(config, state, obs)
    pr, pc, pm = action_proposals(config.limits, scaling)
    checked = check(
        config.limits,
        scaling,
        np.concatenate((pr, [[baseline_replicas]]), axis=1),
        np.concatenate((pc, [[obs.cpu_limit_m]]), axis=1),
        np.concatenate((pm, [[obs.memory_limit_mib]]), axis=1),
    )
    reasons = checked.reason[0]
    reasons.flags.writeable = False  # it goes into the frozen Decision
    learned_idx: int | None = None
    if model is not None:
        logits = model.logits(encode_matrix(obs.raw(config)))
        learned_idx = int(masked_argmax(logits, checked.allowed[:, :N_ACTIONS])[0])

    # 3. The gate picks who acts; both choices are already clamped by the mask.
    source: Source = choose(config.gate, state.gate) if learned_idx is not None else "baseline"
    col = learned_idx if source == "learned" and learned_idx is not None else N_ACTIONS
    action = ACTION_NAMES[col] if col < N_ACTIONS else f"baseline:{config.baseline.kind}"
    if checked.allowed[0, col]:
        replicas, cpu, mem = (int(t[0, col]) for t in checked.targets)
    else:
        replicas, cpu, mem = obs.replicas, obs.cpu_limit_m, obs.memory_limit_mib
    enforced_by: str | None = None
    if reasons[col]:
        enforced_by = RULE_LABELS[reasons[col]]
    elif col == N_ACTIONS and replicas != baseline_replicas:
        enforced_by = "step_limit"
    # Defence in depth: the bounds hold whatever the path above did (and bring a
    # Deployment that was set outside them back in).
    lim = config.limits
    replicas = min(max(replicas, lim.min_replicas), lim.max_replicas)
    cpu = min(max(cpu, lim.cpu_limit_min_m), lim.cpu_limit_max_m)
    mem = min(max(mem, lim.memory_limit_min_mib), lim.memory_limit_max_mib)

    # 4. Remember what changed, for cooldowns, HPA behaviour periods and the next reward.
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

    learned_action = ACTION_NAMES[learned_idx] if learned_idx is not None else None
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
        enforced_by=enforced_by,
        reasons=reasons[:N_ACTIONS],
        baseline_why=baseline_why,
        gate_mode=config.gate.mode,
        gate_ratio=state.gate.ratio,
        gate_verdict=state.gate.last_verdict,
        reward=outcome[0] if outcome else None,
        slo_violated=outcome[1] if outcome else None,
        model_error=model_error,
    )
    return decision, state


def explain(
    *,
    source: Source,
    action: str,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    enforced_by: str | None,
    baseline_why: str,
    learned_action: str | None,
    model_error: str | None,
    masked: tuple[tuple[str, str], ...],
    gate: tuple[str, float, str],
) -> str:
    """A one-paragraph, human-readable account of a decision."""
    parts = [f"{source} acted ({action})"]
    labels = ("replicas {}→{}", "cpu limit {}m→{}m", "memory limit {}Mi→{}Mi")
    moves = [label.format(b, a) for label, b, a in zip(labels, before, after, strict=True) if a != b]
    parts.append(", ".join(moves) if moves else f"no change at {after[0]} replicas")
    if enforced_by:
        parts.append(f"clamped by {enforced_by}")
    parts.append(baseline_why)
    if learned_action is not None and source != "learned":
        parts.append(f"learned would have chosen {learned_action}")
    if model_error:
        parts.append(f"learned policy unavailable: {model_error}")
    if masked:
        counts = Counter(rule for _, rule in masked)
        parts.append("masked " + ", ".join(f"{n}×{rule}" for rule, n in sorted(counts.items())))
    mode, ratio, verdict = gate
    parts.append(f"gate {mode} ratio {ratio:.2f}" + (f" ({verdict})" if verdict else ""))
    return "; ".join(parts)


__all__ = ["NOOP", "ControllerState", "Decision", "DecisionConfig", "Observation", "decide", "explain"]
