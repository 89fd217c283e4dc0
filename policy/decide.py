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

``decide_batch`` is the same function for many independent controllers at once (the
evaluation steps hundreds per simulated interval): it shares the vectorisable work between
them and gives exactly what ``decide`` in a loop gives. The operator, one policy at a time
on its latency path, calls ``decide``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from rlscale.policy.actions import ACTION_NAMES, N_ACTIONS, NOOP
from rlscale.policy.baselines import (
    BaselineConfig,
    HpaState,
    hpa_recommend,
    proportional_recommend,
    static_recommend,
)
from rlscale.policy.gate import GateConfig, GateState, Source, choose, credited, note_decision, record_outcome
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import RULE_LABELS, FloatArray, MaskResult, MaskRule, ScalingState, action_proposals, check
from rlscale.policy.model import PolicyModel, masked_argmax
from rlscale.policy.observation import CONFIG_COLUMNS, FIELD_SOURCES, OBSERVED_FIELDS, Observation
from rlscale.policy.reward import Objective, reward, slo_violated
from rlscale.policy.spec import CORE_METRICS, RAW_COLUMNS, encode_matrix


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
    #: The learned policy's memory (a model with a context encoder): what it returned last
    #: time, fed back next time. ``None`` before its first decision, with a feed-forward model
    #: and while no model is loaded (the model did not see those intervals, so its memory of
    #: them would be a guess).
    context: list[float] | None = None
    #: The workload's own container limits (CPU m, memory MiB): what it had when first seen,
    #: or what someone other than this controller set since. The baseline moves the limits
    #: back to them while the gate distrusts the learned policy — the HPA it stands for
    #: never changes limits, so without this a bad model's limit cut would outlive its demotion.
    reference_limits: tuple[int, int] | None = None
    #: The limits observed at the previous decision and the limits it decided: current limits
    #: that are neither were set by someone else (a user's edit) and become the reference.
    seen_limits: tuple[int, int] | None = None
    set_limits: tuple[int, int] | None = None

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
            context=None if self.context is None else list(self.context),
            reference_limits=self.reference_limits,
            seen_limits=self.seen_limits,
            set_limits=self.set_limits,
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
            "context": self.context,
            "reference_limits": _pair_out(self.reference_limits),
            "seen_limits": _pair_out(self.seen_limits),
            "set_limits": _pair_out(self.set_limits),
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
            context=_context_from(data.get("context")),
            reference_limits=_pair_from(data.get("reference_limits")),
            seen_limits=_pair_from(data.get("seen_limits")),
            set_limits=_pair_from(data.get("set_limits")),
        )

    def track_limits(self, cpu_limit_m: int, memory_limit_mib: int) -> None:
        """Update :attr:`reference_limits` from the limits observed now (see there)."""
        now = (cpu_limit_m, memory_limit_mib)
        if self.reference_limits is None or now not in (self.seen_limits, self.set_limits):
            self.reference_limits = now
        self.seen_limits = now

    def restored_limits(self, cpu_limit_m: int, memory_limit_mib: int) -> tuple[int, int]:
        """The limits the baseline proposes: the reference while the gate distrusts the model, else the current."""
        if self.gate.distrusted and self.reference_limits is not None:
            return self.reference_limits
        return cpu_limit_m, memory_limit_mib


def _pair_out(pair: tuple[int, int] | None) -> list[int] | None:
    return None if pair is None else [pair[0], pair[1]]


def _pair_from(value: Any) -> tuple[int, int] | None:
    """A stored (CPU, memory) pair, or None for anything else (an older status has none)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def _context_from(value: Any) -> list[float] | None:
    """A stored context, or None if it is absent or not a list of finite numbers (then the model starts afresh)."""
    if not isinstance(value, list) or not value:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _context_in(states: Sequence[ControllerState], model: PolicyModel | None) -> npt.NDArray[np.float32] | None:
    """The contexts to feed ``model`` for these controllers (zeros for one that has none of its width)."""
    if model is None or not model.context_size:
        return None
    out = np.zeros((len(states), model.context_size), dtype=np.float32)
    for i, state in enumerate(states):
        if state.context is not None and len(state.context) == model.context_size:
            out[i] = state.context
    return out


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
    #: The state stage 4 started from (see :func:`regrant`); not part of what is reported.
    unremembered: _Unremembered | None = field(default=None, repr=False, compare=False)

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


def _baseline(
    config: DecisionConfig,
    state: ControllerState,
    replicas: int,
    ready_replicas: int,
    cpu_utilization: float | None,
    request_rate: float | None,
    now: float,
) -> tuple[int, str]:
    """The configured baseline's target and why; the HPA updates ``state.hpa``'s history.

    Takes the few observed values it reads rather than an :class:`Observation`, so that
    :func:`decide_batch` can feed it straight from the raw matrix.
    """
    b, lim = config.baseline, config.limits
    if b.kind == "static":
        return static_recommend(b.static_replicas, lim.min_replicas, lim.max_replicas)
    if b.kind == "proportional":
        return proportional_recommend(request_rate, b.rate_per_replica, replicas, lim.min_replicas, lim.max_replicas)
    return hpa_recommend(
        b.hpa,
        state.hpa,
        current_replicas=replicas,
        ready_replicas=ready_replicas,
        utilization=cpu_utilization,
        min_replicas=lim.min_replicas,
        max_replicas=lim.max_replicas,
        now=now,
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

    # 1. Credit the interval that just ended to whoever decided it (or made a recent change).
    outcome = _interval_reward(config, state, obs)
    if state.last_source is not None:
        source = credited(state.gate, state.last_source)
        if outcome is not None:
            record_outcome(config.gate, state.gate, source, *outcome)
    state.track_limits(obs.cpu_limit_m, obs.memory_limit_mib)

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
    baseline = _baseline(config, state, obs.replicas, obs.ready_replicas, obs.cpu_utilization, obs.request_rate, now)
    pr, pc, pm = action_proposals(config.limits, scaling)
    ref_c, ref_m = state.restored_limits(obs.cpu_limit_m, obs.memory_limit_mib)
    checked = check(
        config.limits,
        scaling,
        np.concatenate((pr, [[baseline[0], baseline[0]]]), axis=1),
        np.concatenate((pc, [[ref_c, obs.cpu_limit_m]]), axis=1),
        np.concatenate((pm, [[ref_m, obs.memory_limit_mib]]), axis=1),
    )
    learned_idx: int | None = None
    context_in = _context_in([state], model) if model is not None else None
    state.context = None
    if model is not None:
        logits, context = model.step(encode_matrix(obs.raw(config)), context_in)
        learned_idx = int(masked_argmax(logits, checked.allowed[:, :N_ACTIONS])[0])
        state.context = context[0].tolist() if model.context_size else None
    current = (obs.replicas, obs.cpu_limit_m, obs.memory_limit_mib)
    decision = _conclude(config, state, checked, 0, learned_idx, current, now, baseline, outcome, model_error)
    return decision, state


def _conclude(
    config: DecisionConfig,
    state: ControllerState,
    checked: MaskResult,
    row: int,
    learned_idx: int | None,
    current: tuple[int, int, int],
    now: float,
    baseline: tuple[int, str],
    outcome: tuple[float, bool] | None,
    model_error: str | None,
) -> Decision:
    """Stages 3 and 4 of one decision, shared by :func:`decide` and :func:`decide_batch`.

    ``checked`` is the mask over the table plus the baseline's two columns (its replica
    target with the limits it would restore, and with the current limits), ``row`` this
    controller's row in it. Updates ``state`` (gate draw, cooldown clocks, HPA events,
    bookkeeping). Written once so the single and the batch form cannot drift apart.
    """
    reasons = checked.reason[row]
    reasons.flags.writeable = False  # it goes into the frozen Decision
    baseline_replicas, baseline_why = baseline
    cur_r, cur_c, cur_m = current

    # 3. The gate picks who acts; both choices are already clamped by the mask.
    source: Source = choose(config.gate, state.gate) if learned_idx is not None else "baseline"
    col = learned_idx if source == "learned" and learned_idx is not None else N_ACTIONS
    if col == N_ACTIONS:
        # The baseline restores the limits only where the mask lets it do so without giving
        # up any of its replica target (a limit cooldown, a budget); otherwise it keeps them.
        restoring = checked.allowed[row, col] and checked.targets[0][row, col] == checked.targets[0][row, col + 1]
        col = col if restoring else col + 1
    action = ACTION_NAMES[col] if col < N_ACTIONS else f"baseline:{config.baseline.kind}"
    if checked.allowed[row, col]:
        replicas, cpu, mem = (int(t[row, col]) for t in checked.targets)
    else:
        replicas, cpu, mem = cur_r, cur_c, cur_m
    enforced_by: str | None = None
    if reasons[col]:
        enforced_by = RULE_LABELS[reasons[col]]
    elif col >= N_ACTIONS and replicas != baseline_replicas:
        enforced_by = "step_limit"
    # Defence in depth: the bounds hold whatever the path above did (and bring a
    # Deployment that was set outside them back in).
    lim = config.limits
    replicas = min(max(replicas, lim.min_replicas), lim.max_replicas)
    cpu = min(max(cpu, lim.cpu_limit_min_m), lim.cpu_limit_max_m)
    mem = min(max(mem, lim.memory_limit_min_mib), lim.memory_limit_max_mib)

    # 4. Remember what changed, for cooldowns, HPA behaviour periods and the next reward.
    before = _Unremembered(
        now,
        source,
        bool(reasons[col]) and int(reasons[col]) in _COOLDOWNS,
        current,
        state.last_scale_up_at,
        state.last_scale_down_at,
        state.last_limit_change_at,
        state.set_limits,
        state.gate.holder,
        state.gate.holder_left,
        tuple(state.hpa.events),
    )
    _remember(config, state, before, (replicas, cpu, mem))
    if col == N_ACTIONS and (cpu, mem) != (cur_c, cur_m):
        baseline_why += f"; limits back to the workload's own ({cpu}m CPU, {mem}Mi memory): the model is distrusted"
    state.last_source = source
    state.decisions += 1

    return Decision(
        replicas=replicas,
        cpu_limit_m=cpu,
        memory_limit_mib=mem,
        previous_replicas=cur_r,
        previous_cpu_limit_m=cur_c,
        previous_memory_limit_mib=cur_m,
        source=source,
        action=action,
        learned_action=ACTION_NAMES[learned_idx] if learned_idx is not None else None,
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
        unremembered=before,
    )


@dataclass(frozen=True, slots=True)
class _Unremembered:
    """What stage 4 of a decision found in the state before it remembered the change.

    Kept in the :class:`Decision` so that :func:`regrant` can remember a different change
    (the one a capacity budget granted) instead, from the same starting point.
    """

    now: float
    source: Source
    blocked: bool  # the chosen action was held by a cooldown (see gate.note_decision)
    current: tuple[int, int, int]  # replicas, CPU limit, memory limit before the decision
    last_scale_up_at: float | None
    last_scale_down_at: float | None
    last_limit_change_at: float | None
    set_limits: tuple[int, int] | None
    holder: str | None  # GateState.holder
    holder_left: int
    hpa_events: tuple[tuple[float, int], ...]


def _remember(
    config: DecisionConfig, state: ControllerState, before: _Unremembered, applied: tuple[int, int, int]
) -> None:
    """Stage 4: record the change ``applied`` (replicas, CPU, memory) for cooldowns, HPA periods and the gate."""
    replicas, cpu, mem = applied
    cur_r, cur_c, cur_m = before.current
    delta = replicas - cur_r
    if delta > 0:
        state.last_scale_up_at = before.now
    elif delta < 0:
        state.last_scale_down_at = before.now
    limits_changed = (cpu, mem) != (cur_c, cur_m)
    if limits_changed:
        state.last_limit_change_at = before.now
    state.set_limits = (cpu, mem)
    note_decision(
        config.gate,
        state.gate,
        before.source,
        reduced=delta < 0 or cpu < cur_c or mem < cur_m,
        increased=delta > 0 or cpu > cur_c or mem > cur_m,
        blocked=before.blocked,
    )
    if config.baseline.kind == "hpa":
        state.hpa.record_change(config.baseline.hpa, before.now, delta)
    state.last_replicas_changed = delta != 0
    state.last_limits_changed = limits_changed


def regrant(
    config: DecisionConfig,
    state: ControllerState,
    decision: Decision,
    replicas: int,
    cpu_limit_m: int,
    memory_limit_mib: int,
) -> tuple[Decision, ControllerState]:
    """The decision as a capacity budget granted it, and the state that remembers the grant.

    ``decide`` remembers the change it chose (the scale-up time that starts a cooldown, the
    HPA's change in its behaviour period, who the gate bills for the next intervals). When
    the budget grants less — refuses a scale-up, takes pods back — the memory must be of
    what was done: a refused scale-up starts no cooldown and is no HPA scale event, and the
    interval after it is billed as a hold. ``state`` is the state ``decide`` returned with
    ``decision``; both inputs are left as they were.
    """
    granted = (replicas, cpu_limit_m, memory_limit_mib)
    before = decision.unremembered
    if granted == (decision.replicas, decision.cpu_limit_m, decision.memory_limit_mib) or before is None:
        return decision, state
    new = state.copy()
    new.last_scale_up_at = before.last_scale_up_at
    new.last_scale_down_at = before.last_scale_down_at
    new.last_limit_change_at = before.last_limit_change_at
    new.set_limits = before.set_limits
    new.gate.holder, new.gate.holder_left = before.holder, before.holder_left
    new.hpa.events = list(before.hpa_events)
    _remember(config, new, before, granted)
    regranted = dataclasses.replace(
        decision, replicas=replicas, cpu_limit_m=cpu_limit_m, memory_limit_mib=memory_limit_mib
    )
    return regranted, new


#: The mask rules that block a policy because of a recent change (see gate.note_decision).
_COOLDOWNS = frozenset({MaskRule.SCALE_UP_COOLDOWN, MaskRule.SCALE_DOWN_COOLDOWN, MaskRule.LIMIT_COOLDOWN})


# --------------------------------------------------------------------------- the batch form

#: Raw-matrix rows the batch form reads per controller (see spec.RAW_COLUMNS).
_ROW = {name: i for i, name in enumerate(RAW_COLUMNS)}
#: The observed fields an Observation holds as ``int`` (counts and limits): a raw matrix's
#: values are truncated as ``int()`` truncates them when an Observation is built from it.
_INT_ROWS = np.array([_ROW[f.name] for f in fields(Observation) if f.type in ("int", int)], dtype=np.intp)
_DEPLOYMENT_ROWS = np.array([_ROW[n] for n, s in FIELD_SOURCES.items() if s.kind == "deployment"], dtype=np.intp)
_CORE_ROWS = np.array([_ROW[n] for n in CORE_METRICS], dtype=np.intp)
_COUNT_ROWS = np.array([_ROW[n] for n in ("replicas", "ready_replicas", "cpu_limit_m", "memory_limit_mib")])
_N_OBSERVED = len(OBSERVED_FIELDS)
_CONFIG_GETTERS = tuple(CONFIG_COLUMNS.values())

#: What :func:`decide_batch` takes as observations: one :class:`Observation` per
#: controller, or the raw matrix ``(len(RAW_COLUMNS), n)`` (NaN = unknown) the simulator holds.
Observations = Sequence[Observation] | npt.NDArray[np.float64]


class _Observed(NamedTuple):
    """The batch's observations: the raw matrix, and per controller the values read in Python."""

    raw: FloatArray  # (len(RAW_COLUMNS), n), a fresh array; config rows still to fill
    counts: list[tuple[int, int, int, int]]  # replicas, ready replicas, CPU limit, memory limit
    now: list[float]
    cpu_utilization: list[float | None]
    request_rate: list[float | None]


def _observed(observations: Observations, n: int) -> _Observed:
    """Read the observations once, into the matrix and the per-controller values.

    From a raw matrix the metrics stay NaN where unknown rather than becoming ``None``:
    everything that reads them (baselines, reward, metrics check) tests ``math.isfinite``,
    so NaN and ``None`` decide alike.
    """
    if isinstance(observations, np.ndarray):
        if observations.shape != (len(RAW_COLUMNS), n):
            raise ValueError(
                f"observations: expected a raw matrix of shape ({len(RAW_COLUMNS)}, {n}), got {observations.shape}"
            )
        raw = np.array(observations, dtype=np.float64)  # a copy: the caller's array stays as it was
        if not np.isfinite(raw[_DEPLOYMENT_ROWS]).all():
            raise ValueError("observations: the Deployment rows (timestamp, replicas, limits) must be known")
        raw[_INT_ROWS] = np.trunc(raw[_INT_ROWS])
        counts = [(int(r), int(y), int(c), int(m)) for r, y, c, m in raw[_COUNT_ROWS].T.tolist()]
        return _Observed(
            raw,
            counts,
            raw[_ROW["timestamp"]].tolist(),
            raw[_ROW["cpu_utilization"]].tolist(),
            raw[_ROW["request_rate"]].tolist(),
        )
    if len(observations) != n:
        raise ValueError(f"observations: expected {n}, got {len(observations)}")
    raw = np.empty((len(RAW_COLUMNS), n), dtype=np.float64)
    rows = [[np.nan if (v := getattr(o, name)) is None else v for name in OBSERVED_FIELDS] for o in observations]
    raw[:_N_OBSERVED] = np.array(rows, dtype=np.float64).T
    return _Observed(
        raw,
        [(o.replicas, o.ready_replicas, o.cpu_limit_m, o.memory_limit_mib) for o in observations],
        [o.timestamp for o in observations],
        [o.cpu_utilization for o in observations],
        [o.request_rate for o in observations],
    )


def _times(values: list[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _groups(keys: Sequence[Hashable]) -> list[list[int]]:
    """Row indices by key, in order of first appearance."""
    out: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return list(out.values())


def decide_batch(
    observations: Observations,
    configs: Sequence[DecisionConfig],
    states: Sequence[ControllerState],
    models: Sequence[PolicyModel | None] | None = None,
    *,
    model_errors: Sequence[str | None] | None = None,
) -> tuple[list[Decision], list[ControllerState]]:
    """Decide for ``n`` independent controllers at once; the same as :func:`decide` in a loop.

    Controller ``i`` gets exactly ``decide(observations[i], configs[i], states[i], models[i],
    model_error=model_errors[i])`` — the same Decision (``reasons`` included) and the same
    new state, bit for bit. It exists for evaluation, which steps hundreds of controllers
    (baseline grids × seeds, learned models) per simulated interval: the work that does not
    depend on one controller's history runs once for all of them — one reward computation
    per objective, one :func:`~rlscale.policy.mask.check` per limits object, one
    ``encode_matrix``, one ONNX call per model — and only the baseline, the gate and the
    bookkeeping run per controller in plain Python.

    ``observations`` is a sequence of :class:`Observation`, or better the raw matrix of shape
    ``(len(RAW_COLUMNS), n)`` (NaN = unknown; the simulator holds one), so that no
    per-controller objects are built. The matrix is read as an Observation built from it
    would hold it: counts and limits truncated to ``int``, NaN as ``None``; its configuration
    rows are ignored (each controller's own config fills them, as :meth:`Observation.raw`
    does). Neither it nor ``states`` is modified. ``models`` (default: none) holds each
    controller's model or ``None``; controllers may share one. The batch relies on the ONNX
    runner computing each row independently of the rest of its batch (true of the MLPs
    rlscale exports; the tests check it).

    Controllers are grouped by object identity (of their limits, objective and model), not
    equality: equal but distinct objects are merely grouped apart, which costs time only.
    """
    n = len(configs)
    if len(states) != n:
        raise ValueError(f"states: expected {n}, got {len(states)}")
    model_list: Sequence[PolicyModel | None] = models if models is not None else [None] * n
    error_list: Sequence[str | None] = model_errors if model_errors is not None else [None] * n
    if len(model_list) != n or len(error_list) != n:
        raise ValueError(f"models and model_errors: expected {n} each, got {len(model_list)} and {len(error_list)}")
    if n == 0:
        return [], []
    seen = _observed(observations, n)
    raw = seen.raw

    # 1. Rewards of the intervals that just ended: one vectorised call per (objective, max CPU).
    #    An interval with unknown latency has no outcome, as in decide.
    outcomes: list[tuple[float, bool] | None] = [None] * n
    latency, error = raw[_ROW["latency_p99_ms"]], raw[_ROW["error_rate"]]
    allocated = raw[_ROW["replicas"]].astype(np.int64) * raw[_ROW["cpu_limit_m"]].astype(np.int64)
    known = np.flatnonzero(np.isfinite(latency)).tolist()
    max_cpu = [float(c.limits.max_replicas * c.limits.cpu_limit_max_m) for c in configs]
    for group in _groups([(id(configs[i].objective), max_cpu[i]) for i in known]):
        rows = [known[g] for g in group]
        objective, idx = configs[rows[0]].objective, np.array(rows)
        lat, err = latency[idx], error[idx]
        rewards = reward(
            objective,
            latency_p99_ms=lat,
            error_rate=err,
            allocated_cpu_m=allocated[idx],
            max_cpu_m=max_cpu[rows[0]],
            replicas_changed=np.array([states[i].last_replicas_changed for i in rows]),
            limits_changed=np.array([states[i].last_limits_changed for i in rows]),
        ).tolist()
        violated = slo_violated(objective, lat, err).tolist()
        for i, r, v in zip(rows, rewards, violated, strict=True):
            outcomes[i] = (r, v)

    # 2. Per controller: credit the outcome to the gate, ask the baseline.
    new_states: list[ControllerState] = []
    baselines: list[tuple[int, str]] = []
    for cfg, state, outcome, (replicas, ready, cpu_limit, memory_limit), now, cpu_util, rate in zip(
        configs, states, outcomes, seen.counts, seen.now, seen.cpu_utilization, seen.request_rate, strict=True
    ):
        state = state.copy()
        if state.gate_mode != cfg.gate.mode:
            state.gate, state.gate_mode = GateState.initial(cfg.gate), cfg.gate.mode
        if state.last_source is not None:
            source = credited(state.gate, state.last_source)
            if outcome is not None:
                record_outcome(cfg.gate, state.gate, source, *outcome)
        state.track_limits(cpu_limit, memory_limit)
        baselines.append(_baseline(cfg, state, replicas, ready, cpu_util, rate, now))
        new_states.append(state)

    # 3. The mask over the table and the baseline's target: one check per limits object.
    scaling = ScalingState(
        replicas=raw[_ROW["replicas"]].astype(np.int64),
        cpu_limit_m=raw[_ROW["cpu_limit_m"]].astype(np.int64),
        memory_limit_mib=raw[_ROW["memory_limit_mib"]].astype(np.int64),
        metrics_ok=np.asarray(np.isfinite(raw[_CORE_ROWS]).all(axis=0), dtype=np.bool_),
        memory_utilization=raw[_ROW["memory_utilization"]].copy(),
        now=raw[_ROW["timestamp"]].copy(),
        last_scale_up_at=_times([s.last_scale_up_at for s in new_states]),
        last_scale_down_at=_times([s.last_scale_down_at for s in new_states]),
        last_limit_change_at=_times([s.last_limit_change_at for s in new_states]),
    )
    baseline_col = np.array([b for b, _ in baselines], dtype=np.int64)[:, None]
    restored = np.array(
        [s.restored_limits(c[2], c[3]) for s, c in zip(new_states, seen.counts, strict=True)], dtype=np.int64
    ).reshape(n, 2)
    # The baseline's two columns: its target with the limits it would restore, and with the current ones.
    baseline_cols = (
        np.concatenate((baseline_col, baseline_col), axis=1),
        np.concatenate((restored[:, :1], scaling.cpu_limit_m[:, None]), axis=1),
        np.concatenate((restored[:, 1:], scaling.memory_limit_mib[:, None]), axis=1),
    )
    checks: list[MaskResult] = []
    place = [(0, 0)] * n  # controller i → (index into checks, row in that check)
    limit_groups = _groups([id(c.limits) for c in configs])
    whole = len(limit_groups) == 1
    for rows in limit_groups:
        sub = scaling if whole else ScalingState(*(getattr(scaling, f)[rows] for f in ScalingState.__slots__))
        limits = configs[rows[0]].limits
        pr, pc, pm = action_proposals(limits, sub)
        checks.append(
            check(
                limits,
                sub,
                *(
                    np.concatenate((p, b if whole else b[rows]), axis=1)
                    for p, b in zip((pr, pc, pm), baseline_cols, strict=True)
                ),
            )
        )
        for j, i in enumerate(rows):
            place[i] = (len(checks) - 1, j)

    # 4. The learned policies: one encode for all, one ONNX call per model over its rows.
    learned: list[int | None] = [None] * n
    model_groups = [rows for rows in _groups([id(m) for m in model_list]) if model_list[rows[0]] is not None]
    # The memory each model is fed (read before it is cleared: a controller without a model keeps none).
    contexts_in = [_context_in([new_states[i] for i in rows], model_list[rows[0]]) for rows in model_groups]
    for state in new_states:
        state.context = None
    if model_groups:
        if whole:
            allowed = checks[0].allowed[:, :N_ACTIONS]
        else:
            allowed = np.empty((n, N_ACTIONS), dtype=bool)
            for rows, result in zip(limit_groups, checks, strict=True):
                allowed[rows] = result.allowed[:, :N_ACTIONS]
        config_rows = {id(c): [get(c) for get in _CONFIG_GETTERS] for c in configs}
        raw[_N_OBSERVED:] = np.array([config_rows[id(c)] for c in configs], dtype=np.float64).T
        encoded = encode_matrix(raw)
        for rows, context_in in zip(model_groups, contexts_in, strict=True):
            model = model_list[rows[0]]
            assert model is not None
            every = len(rows) == n
            members = new_states if every else [new_states[i] for i in rows]
            logits, contexts = model.step(encoded if every else encoded[rows], context_in)
            best = masked_argmax(logits, allowed if every else allowed[rows]).tolist()
            for i, b in zip(rows, best, strict=True):
                learned[i] = b
            if model.context_size:
                for state, context in zip(members, contexts.tolist(), strict=True):
                    state.context = context

    # 5. Per controller: the gate, the final clamp, the bookkeeping.
    return [
        _conclude(cfg, state, checks[g], j, li, (c[0], c[2], c[3]), now, b, outcome, err)
        for cfg, state, (g, j), li, c, now, b, outcome, err in zip(
            configs, new_states, place, learned, seen.counts, seen.now, baselines, outcomes, error_list, strict=True
        )
    ], new_states


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


__all__ = [
    "NOOP",
    "ControllerState",
    "Decision",
    "DecisionConfig",
    "Observation",
    "Observations",
    "decide",
    "decide_batch",
    "explain",
    "regrant",
]
