"""From a Deployment and Prometheus signals to policy/'s :class:`~rlscale.policy.decide.Observation`.

Pure functions, tested without a cluster. Two rules run through them:

* an unknown value stays ``None`` (never 0) all the way into ``decide``, whose mask then
  forbids scale-downs and limit changes;
* utilisation is measured against the *limits* of the managed containers, summed per pod
  (the observation's ``cpu_limit_m``/``memory_limit_mib`` are those of the first managed
  container, which is the one the policy's limit steps are defined on).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

from rlscale.policy.observation import FIELD_SOURCES, METRIC_FIELDS, Observation, measured_source

_MIB = Decimal(1024 * 1024)


class TargetError(ValueError):
    """The Deployment cannot be scaled as the policy says (container missing, no limits, …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    """One managed container's limits and requests (millicores, MiB; ``None`` = not set)."""

    name: str
    cpu_limit_m: int
    memory_limit_mib: int
    cpu_request_m: int | None
    memory_request_mib: int | None


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """The parts of a Deployment the operator reads."""

    name: str
    replicas: int
    ready_replicas: int
    containers: tuple[ContainerLimits, ...]
    generation: int
    observed_generation: int

    @property
    def primary(self) -> ContainerLimits:
        return self.containers[0]


def _quantity(value: Any, what: str) -> Decimal:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise TargetError("InvalidQuantity", f"{what}: cannot parse quantity {value!r}") from exc


def _millicores(value: Any, what: str) -> int:
    return int((_quantity(value, what) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def _mib(value: Any, what: str) -> int:
    return int((_quantity(value, what) / _MIB).to_integral_value(rounding="ROUND_CEILING"))


def deployment_view(deployment: Mapping[str, Any], managed: Sequence[str]) -> DeploymentView:
    """Read replicas and the managed containers' limits; :class:`TargetError` says what is wrong."""
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status", {}) or {}
    pod_containers = {c.get("name"): c for c in spec.get("template", {}).get("spec", {}).get("containers", [])}
    name = meta.get("name", "")
    out: list[ContainerLimits] = []
    for cname in managed:
        c = pod_containers.get(cname)
        if c is None:
            raise TargetError(
                "ContainerNotFound",
                f"spec.containers: Deployment {name} has no container {cname!r} "
                f"(it has {', '.join(sorted(map(str, pod_containers))) or 'none'})",
            )
        res = c.get("resources", {}) or {}
        limits, requests = res.get("limits", {}) or {}, res.get("requests", {}) or {}
        missing = [k for k in ("cpu", "memory") if k not in limits]
        if missing:
            raise TargetError(
                "ContainerLimitsMissing",
                f"container {cname!r} of Deployment {name} has no {' and no '.join(missing)} limit; "
                "rlscale measures utilisation against limits and needs both",
            )
        where = f"container {cname!r} of Deployment {name}"
        out.append(
            ContainerLimits(
                name=cname,
                cpu_limit_m=_millicores(limits["cpu"], f"{where} cpu limit"),
                memory_limit_mib=_mib(limits["memory"], f"{where} memory limit"),
                cpu_request_m=_millicores(requests["cpu"], f"{where} cpu request") if "cpu" in requests else None,
                memory_request_mib=_mib(requests["memory"], f"{where} memory request")
                if "memory" in requests
                else None,
            )
        )
    replicas = spec.get("replicas", 1)
    return DeploymentView(
        name=name,
        replicas=int(replicas if replicas is not None else 1),
        ready_replicas=int(status.get("readyReplicas", 0) or 0),
        containers=tuple(out),
        generation=int(meta.get("generation", 0) or 0),
        observed_generation=int(status.get("observedGeneration", 0) or 0),
    )


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) and v >= 0 else None


#: The Deployment-sourced fields of an observation, read from the Deployment (and the clock).
_FROM_DEPLOYMENT: dict[str, Callable[[float, DeploymentView], float]] = {
    "timestamp": lambda now, view: now,
    "replicas": lambda now, view: view.replicas,
    "ready_replicas": lambda now, view: view.ready_replicas,
    "cpu_limit_m": lambda now, view: view.primary.cpu_limit_m,
    "memory_limit_mib": lambda now, view: view.primary.memory_limit_mib,
}
_undeclared = {n for n, s in FIELD_SOURCES.items() if s.kind == "deployment"} ^ set(_FROM_DEPLOYMENT)
if _undeclared:
    raise ImportError(f"observe: the Deployment fields of the observation and _FROM_DEPLOYMENT differ: {_undeclared}")


def build_observation(
    now: float, view: DeploymentView, readings: Mapping[float, Mapping[str, float | None]]
) -> tuple[Observation, list[str]]:
    """The observation ``decide`` takes, and the names of the fields that are unknown.

    ``readings`` maps seconds before ``now`` (the keys of
    :data:`rlscale.policy.observation.SIGNAL_READS`) to signal values read then (keys of
    :data:`rlscale.operator.queries.SIGNALS`). Each metric field is the signal its
    declaration names, converted to the field's unit; anything missing, negative, not
    finite or above the field's bound stays ``None``.
    """
    per = {
        "pod_cpu_limit_m": float(sum(c.cpu_limit_m for c in view.containers)),
        "pod_memory_limit_mib": float(sum(c.memory_limit_mib for c in view.containers)),
        "ready_replicas": float(max(view.ready_replicas, 1)),
    }
    values: dict[str, Any] = {name: get(now, view) for name, get in _FROM_DEPLOYMENT.items()}
    unknown: list[str] = []
    for name in METRIC_FIELDS:
        base, offset = measured_source(name)
        src = FIELD_SOURCES[base]
        assert src.signal is not None
        v = _finite(readings.get(offset, {}).get(src.signal))
        if v is not None:
            v = v * src.scale
            if src.per is not None:
                v = v / per[src.per] if per[src.per] > 0 else None
        if v is not None and src.upper is not None and v > src.upper:
            v = None  # e.g. an error fraction above 1 is a broken query, not a fact
        values[name] = v
        if v is None:
            unknown.append(name)
    return Observation(**values), unknown
