"""What one reconcile reports: the status document, its conditions, and the Events.

:mod:`~rlscale.operator.reconcile` decides what happens; this module says it. Nothing here
does I/O: status documents are returned for the reconcile to write, Events go to the sink
in the :class:`Tick`. Status documents are JSON dicts in the CRD's spelling, without
``None`` fields, because they are sent as merge patches — which is also why a finished
``pending`` change is cleared with an explicit ``None``.

Status objects are built by pydantic from the objects they describe — the policy's
:class:`~rlscale.policy.decide.Decision`, the gate's state, the observation — by field name
(:func:`_fields_of`), so a field added to both sides is reported without a line here.

Events are worded for ``kubectl describe``; condition messages are cut to
:data:`~rlscale.operator.conditions.MAX_MESSAGE` by :mod:`~rlscale.operator.conditions`.
A refusal and a metrics or model outage post their Warning once, when the condition
changes, not on every tick.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from rlscale.operator import conditions as cond
from rlscale.operator.models import (
    AutoscalePolicySpec,
    AutoscalePolicyStatus,
    Condition,
    DecisionStatus,
    MaskedSummary,
    ModelStatus,
    ObservedStatus,
    PendingAction,
    RolloutStatus,
)
from rlscale.operator.modelstore import LoadedModel
from rlscale.operator.naming import crd_alias
from rlscale.operator.prometheus import SignalValues
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation
from rlscale.policy.model import SPEC_HASH

#: Posts a Kubernetes Event: (type "Normal"/"Warning", reason, message).
EventSink = Callable[[str, str, str], None]

#: Longest ``lastDecision.explanation`` kept in status (the CRD's maxLength).
MAX_EXPLANATION = 4096

#: Examples of masked actions kept per mask rule.
MASKED_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Identity of the policy being reconciled."""

    namespace: str
    name: str
    generation: int = 0


SpecT = TypeVar("SpecT", AutoscalePolicySpec, None)


@dataclass(frozen=True, slots=True)
class Tick(Generic[SpecT]):
    """One reconcile of one policy: what every step needs to act and to report.

    ``spec`` is ``None`` while the spec is being validated — only a refusal can happen
    then — and the validated spec afterwards; ``Tick[None]`` and ``Tick[AutoscalePolicySpec]``
    keep the two apart for the type checker, so no step after validation checks for ``None``.
    """

    ref: PolicyRef
    previous: AutoscalePolicyStatus
    now: float
    event: EventSink
    spec: SpecT

    @property
    def interval_s(self) -> float:
        """When to reconcile again: the spec's interval, or 15 s while there is no valid spec."""
        return self.spec.interval_s if self.spec is not None else 15.0

    def with_spec(self, spec: AutoscalePolicySpec) -> Tick[AutoscalePolicySpec]:
        return Tick(self.ref, self.previous, self.now, self.event, spec)


# --- reading the previous status -----------------------------------------------------------------------------------


def previous_status(raw: Mapping[str, Any] | None) -> AutoscalePolicyStatus:
    """The previous status; a status that does not parse (hand-edited) is treated as empty, except its state."""
    if not raw:
        return AutoscalePolicyStatus()
    try:
        return AutoscalePolicyStatus.model_validate(dict(raw))
    except ValidationError:
        state = raw.get("controllerState")
        return AutoscalePolicyStatus(controller_state=state if isinstance(state, dict) else None)


# --- no decision ---------------------------------------------------------------------------------------------------


def refusal(tick: Tick[Any], reason: str, message: str) -> dict[str, Any]:
    """Why no decision was made: Ready and ScalingActive False; everything else in status stays as it was."""
    g = tick.ref.generation
    updates = [
        cond.make("Ready", False, reason, message, now=tick.now, generation=g),
        cond.make("ScalingActive", False, reason, message, now=tick.now, generation=g),
    ]
    conditions = cond.merge(tick.previous.conditions, updates)
    status = {
        "observedGeneration": g,
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
    }
    old_ready = next((c for c in tick.previous.conditions if c.type == "Ready"), None)
    if old_ready is None or old_ready.reason != reason or old_ready.message != message[: cond.MAX_MESSAGE - 1]:
        tick.event("Warning", reason, message)
    return status


# --- a change decided before a restart -----------------------------------------------------------------------------

#: What became of a pending change: applied now, dropped (dry run, too old, target gone), or failed again.
PendingFate = Literal["resumed", "dry_run", "expired", "gone", "failed"]


def pending_event(tick: Tick[AutoscalePolicySpec], fate: PendingFate, detail: str = "") -> None:
    """The Event for what became of the pending change in ``tick.previous``; ``detail`` is the error of ``failed``."""
    pending = tick.previous.pending
    assert pending is not None
    if fate == "resumed":
        tick.event("Normal", "Resumed", f"applied decision {pending.number} that was decided before a restart")
    elif fate == "dry_run":
        tick.event("Normal", "PendingDropped", f"decision {pending.number} not applied: the policy is now in dryRun")
    elif fate == "expired":
        age = tick.now - pending.created_at
        tick.event(
            "Warning",
            "PendingDropped",
            f"decision {pending.number} was decided {age:.0f}s ago and never confirmed; dropped, not applied",
        )
    elif fate == "gone":
        tick.event("Warning", "PendingDropped", f"Deployment {tick.ref.namespace}/{tick.spec.target_ref.name} is gone")
    else:
        tick.event("Warning", "ApplyFailed", f"decision {pending.number}: {detail}; will retry")


def pending_status(tick: Tick[AutoscalePolicySpec], *, applied: bool) -> dict[str, Any]:
    """The previous status with the pending change cleared, and marked applied in ``lastDecision`` if it was."""
    pending = tick.previous.pending
    assert pending is not None
    status = tick.previous.model_dump(mode="json", by_alias=True, exclude_none=True)
    status["pending"] = None
    if applied and status.get("lastDecision", {}).get("number") == pending.number:
        status["lastDecision"]["applied"] = True
        if pending.replicas is not None:
            status["replicas"] = pending.replicas
    return status


# --- a decision ----------------------------------------------------------------------------------------------------


def decision_conditions(
    tick: Tick[AutoscalePolicySpec],
    *,
    obs: Observation,
    unknown: list[str],
    current: SignalValues,
    loaded: LoadedModel,
    decision: Decision,
) -> list[Condition]:
    """Every condition after a decision: what was read, which model ran, whether the decision acts or is clamped."""
    spec, now, g = tick.spec, tick.now, tick.ref.generation
    out = [cond.make("Ready", True, "DryRun" if spec.dry_run else "Reconciled", "", now=now, generation=g)]
    problems = "; ".join(sorted(current.problems.values()))
    if current.error:
        out.append(cond.make("MetricsAvailable", False, "PrometheusUnavailable", current.error, now=now, generation=g))
    elif not obs.metrics_ok:
        out.append(
            cond.make(
                "MetricsAvailable",
                False,
                "CoreMetricsMissing",
                f"holding (no scale-down, no limit change): {problems or ', '.join(unknown)}",
                now=now,
                generation=g,
            )
        )
    else:
        message = f"unknown: {problems}" if problems else "all signals known"
        out.append(cond.make("MetricsAvailable", True, "MetricsRead", message, now=now, generation=g))
    if loaded.model is not None:
        lim = spec.limits
        paced_s = min(lim.scale_up_cooldown_s, lim.scale_down_cooldown_s)
        mismatch = interval_mismatch(loaded.model.trained_interval_s, spec.interval_s, paced_s)
        if mismatch:
            reason, message = "IntervalMismatch", f"{loaded.source}: {mismatch}"
        else:
            reason, message = "Loaded", loaded.source
        out.append(cond.make("ModelLoaded", True, reason, message, now=now, generation=g))
    else:
        out.append(
            cond.make(
                "ModelLoaded",
                False,
                "ModelUnavailable",
                f"the baseline ({spec.baseline.kind}) acts: {loaded.error}",
                now=now,
                generation=g,
            )
        )
    if spec.dry_run:
        out.append(
            cond.make("ScalingActive", False, "DryRun", "spec.dryRun: nothing is patched", now=now, generation=g)
        )
    else:
        out.append(
            cond.make(
                "ScalingActive",
                True,
                "Scaling" if decision.changed else "Holding",
                decision.explanation[: cond.MAX_MESSAGE],
                now=now,
                generation=g,
            )
        )
    if decision.enforced_by:
        out.append(
            cond.make(
                "ScalingLimited",
                True,
                "Clamped",
                f"the decision was clamped by {decision.enforced_by}",
                now=now,
                generation=g,
            )
        )
    else:
        out.append(cond.make("ScalingLimited", False, "WithinLimits", "", now=now, generation=g))
    return out


def apply_failed(tick: Tick[AutoscalePolicySpec], error: str) -> Condition:
    """ScalingActive False: the decided change did not reach the Deployment."""
    return cond.make("ScalingActive", False, "ApplyFailed", error, now=tick.now, generation=tick.ref.generation)


def decision_status(
    tick: Tick[AutoscalePolicySpec],
    *,
    config: DecisionConfig,
    obs: Observation,
    unknown: list[str],
    loaded: LoadedModel,
    decision: Decision,
    state: ControllerState,
    conditions: list[Condition],
    pending: PendingAction | None,
    applied: bool,
) -> dict[str, Any]:
    """The whole status after a decision, with ``state`` (the new ControllerState) and ``pending`` as given."""
    now = cond.rfc3339(tick.now)
    model_loaded = loaded.model is not None
    status = AutoscalePolicyStatus(
        observed_generation=tick.ref.generation,
        conditions=cond.merge(tick.previous.conditions, conditions),
        replicas=decision.replicas if applied or not decision.replicas_changed else decision.previous_replicas,
        ratio=state.gate.ratio,
        last_action=decision.action,
        last_decision=DecisionStatus.model_validate(
            {
                **_fields_of(decision, DecisionStatus),
                "number": state.decisions,
                "time": now,
                "explanation": decision.explanation[:MAX_EXPLANATION],
                "masked": _masked(decision),
                "applied": applied,
                "dry_run": tick.spec.dry_run,
            }
        ),
        observed=ObservedStatus.model_validate({"time": now, "unknown": unknown, **_fields_of(obs, ObservedStatus)}),
        rollout=RolloutStatus.model_validate({**_fields_of(state.gate, RolloutStatus), "mode": config.gate.mode}),
        model=ModelStatus.model_validate(
            {
                **_fields_of(loaded, ModelStatus),
                "loaded": model_loaded,
                "spec_hash": SPEC_HASH if model_loaded else None,
            }
        ),
        pending=pending,
        controller_state=state.to_dict(),
    )
    out = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    # A merge patch keeps absent keys: clear a finished pending change explicitly, and every
    # field that is unset now (the reward of a blind interval, values Prometheus did not give),
    # or the stored status would show the previous decision's value as this one's.
    out.setdefault("pending", None)
    for key, section in (("lastDecision", DecisionStatus), ("observed", ObservedStatus), ("model", ModelStatus)):
        for name, info in section.model_fields.items():
            out[key].setdefault(info.alias or name, None)
    return out


def decision_events(tick: Tick[AutoscalePolicySpec], decision: Decision, *, acted: bool, error: str | None) -> None:
    """ApplyFailed if the change did not go through; else Scaled / LimitsChanged if it did, DryRun if not tried."""
    if error:
        tick.event("Warning", "ApplyFailed", error)
    elif acted:
        if decision.replicas_changed:
            tick.event(
                "Normal",
                "Scaled",
                f"replicas {decision.previous_replicas}→{decision.replicas} ({decision.source}: {decision.action})",
            )
        if decision.limits_changed:
            tick.event(
                "Normal",
                "LimitsChanged",
                f"cpu {decision.previous_cpu_limit_m}m→{decision.cpu_limit_m}m, memory "
                f"{decision.previous_memory_limit_mib}Mi→{decision.memory_limit_mib}Mi "
                f"({decision.source}: {decision.action})",
            )
    elif decision.changed and tick.spec.dry_run:
        tick.event("Normal", "DryRun", f"would set {_moves(decision)} ({decision.source}: {decision.action})")


#: How far a policy's interval may be from the one its model was trained at before status says so.
INTERVAL_TOLERANCE = 2.0


def interval_mismatch(trained_s: float | None, interval_s: float, paced_s: float = 0.0) -> str:
    """Why the model's moves do not fit this interval, or "" when they do (or the model does not say).

    Within a factor of :data:`INTERVAL_TOLERANCE` either way the model is in its element;
    beyond it the model still decides (its moves stay inside the safety mask), but it
    moves about ``trained / interval`` times as often as it learnt to (measured: the
    shipped model at 15 s makes 1.0-2.8x the changes it makes at 60 s, docs/training.md).
    ``paced_s`` is the shorter of the scale-up and scale-down cooldowns: a policy that
    decides fast but may move only that often is paced like the model, and not flagged.
    """
    if trained_s is None:
        return ""
    moves_every_s = max(interval_s, paced_s)
    if trained_s / INTERVAL_TOLERANCE <= moves_every_s and interval_s <= trained_s * INTERVAL_TOLERANCE:
        return ""
    message = f"trained at {trained_s:g} s decisions, this policy decides every {interval_s:g} s "
    message += "(spec.intervalSeconds); "
    if interval_s > trained_s:
        return message + "expect fewer moves than it learnt to make"
    return message + (
        f"expect more moves than it learnt to make (spec.limits.scaleUpCooldownSeconds: {trained_s:g} paces its "
        "scale-ups)"
    )


def transition_events(tick: Tick[AutoscalePolicySpec], status: Mapping[str, Any]) -> None:
    """Warnings when MetricsAvailable or ModelLoaded turn False, or the model meets an interval it was not
    trained for (once, not on every decision)."""
    old = {c.type: (c.status, c.reason) for c in tick.previous.conditions}
    for c in status.get("conditions", []):
        was_status, was_reason = old.get(c["type"], ("", ""))
        watched = c["type"] in ("MetricsAvailable", "ModelLoaded")
        turned_false = watched and c["status"] == "False" and was_status != "False"
        mismatched = c["type"] == "ModelLoaded" and c["reason"] == "IntervalMismatch" and was_reason != c["reason"]
        if turned_false or mismatched:
            tick.event("Warning", c["reason"], c.get("message", ""))


# --- what a user sees ----------------------------------------------------------------------------------------------

#: Conditions whose message is per-tick detail (the decision's explanation, sample ages), refreshed by the heartbeat.
_DETAIL_MESSAGES = frozenset({"ScalingActive", "MetricsAvailable"})
#: The parts of ``lastDecision`` that say what the operator did, rather than what it measured on the way.
_DECISION_SEEN = tuple(
    crd_alias(f)
    for f in ("source", "action", "replicas", "cpu_limit_m", "memory_limit_mib", "enforced_by", "applied", "dry_run")
)


def visible(status: Mapping[str, Any]) -> str:
    """What a user reads in ``status`` (``kubectl get/describe asp``, alerts on conditions), as a comparable string.

    Two statuses with the same ``visible`` differ only in what changes on every decision
    without telling anyone something new: measured values and times (``observed``,
    ``lastDecision``'s numbers and explanation), the controller's memory
    (``controllerState``) and the per-tick wording of two condition messages. The
    reconcile writes a status whose ``visible`` changed at once, and the rest on a slow
    heartbeat (``--status-heartbeat-s``).
    """
    shown: dict[str, Any] = {
        k: v for k, v in status.items() if k not in ("controllerState", "observed", "lastDecision", "conditions")
    }
    last = status.get("lastDecision")
    if isinstance(last, Mapping):
        shown["lastDecision"] = {k: last.get(k) for k in _DECISION_SEEN}
    observed = status.get("observed")
    if isinstance(observed, Mapping):
        shown["unknown"] = observed.get("unknown")
    shown["conditions"] = [
        {
            k: v
            for k, v in c.items()
            if k in ("type", "status", "reason", "observedGeneration")
            or (k == "message" and c.get("type") not in _DETAIL_MESSAGES)
        }
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    ]
    return json.dumps(shown, sort_keys=True, default=str)


# --- helpers -------------------------------------------------------------------------------------------------------


def _fields_of(obj: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The dataclass fields of ``obj`` that ``model`` declares too, by name: what pydantic's
    ``from_attributes`` would read, for a model that also has fields ``obj`` lacks."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name in model.model_fields}


def _masked(decision: Decision) -> list[MaskedSummary]:
    """Per mask rule (sorted): how many actions it forbade, and the first few of them."""
    counts = Counter(rule for _, rule in decision.masked)
    examples: dict[str, list[str]] = {}
    for action, rule in decision.masked:
        examples.setdefault(rule, [])
        if len(examples[rule]) < MASKED_EXAMPLES:
            examples[rule].append(action)
    return [MaskedSummary(rule=rule, count=n, examples=examples[rule]) for rule, n in sorted(counts.items())]


def _moves(d: Decision) -> str:
    parts = []
    if d.replicas_changed:
        parts.append(f"replicas {d.previous_replicas}→{d.replicas}")
    if d.limits_changed:
        parts.append(f"cpu {d.cpu_limit_m}m, memory {d.memory_limit_mib}Mi")
    return ", ".join(parts)
