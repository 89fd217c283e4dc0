"""Status conditions: the standard ``metav1.Condition`` shape, with stable transition times.

``lastTransitionTime`` changes only when a condition's *status* changes, as the Kubernetes
API conventions ask, so ``kubectl wait --for=condition=Ready`` and alerting on transitions
behave. Messages are cut to a bounded length: they may quote user input.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rlscale.operator.models import Condition, ConditionType

MAX_MESSAGE = 1024

#: The order conditions are listed in status.
ORDER: tuple[ConditionType, ...] = ("Ready", "MetricsAvailable", "ModelLoaded", "ScalingActive", "ScalingLimited")


def rfc3339(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with second precision (what metav1.Time stores)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make(
    type_: ConditionType, ok: bool | None, reason: str, message: str, *, now: float, generation: int | None
) -> Condition:
    """A condition with status True/False/Unknown (``ok=None``)."""
    status = "Unknown" if ok is None else "True" if ok else "False"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=rfc3339(now),
        observed_generation=generation,
    )


def merge(previous: Iterable[Condition], updates: Iterable[Condition]) -> list[Condition]:
    """Previous conditions with ``updates`` applied; a condition keeps its transition time unless its status changed."""
    by_type = {c.type: c for c in previous}
    for new in updates:
        old = by_type.get(new.type)
        if old is not None and old.status == new.status:
            new = new.model_copy(update={"last_transition_time": old.last_transition_time})
        by_type[new.type] = new
    return [by_type[t] for t in ORDER if t in by_type]
