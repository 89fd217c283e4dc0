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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

from rlscale.policy.decide import Observation

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


def _div(num: float | None, den: float) -> float | None:
    return None if num is None or den <= 0 else num / den


def _times(v: float | None, factor: float) -> float | None:
    return None if v is None else v * factor


def build_observation(
    now: float,
    view: DeploymentView,
    current: Mapping[str, float | None],
    previous: Mapping[str, float | None],
) -> tuple[Observation, list[str]]:
    """The observation ``decide`` takes, and the names of the fields that are unknown.

    ``current`` and ``previous`` map signal keys (see :data:`rlscale.operator.queries.SIGNALS`)
    to values at ``now`` and ``TREND_WINDOW_S`` earlier.
    """
    g = {k: _finite(v) for k, v in current.items()}
    p = {k: _finite(v) for k, v in previous.items()}
    pod_cpu_m = sum(c.cpu_limit_m for c in view.containers)
    pod_mem_mib = sum(c.memory_limit_mib for c in view.containers)
    error_rate = g.get("error_rate")
    if error_rate is not None and error_rate > 1.0:
        error_rate = None  # a fraction above 1 is a broken query, not a fact
    in_flight = g.get("in_flight")
    obs = Observation(
        timestamp=now,
        replicas=view.replicas,
        ready_replicas=view.ready_replicas,
        cpu_limit_m=view.primary.cpu_limit_m,
        memory_limit_mib=view.primary.memory_limit_mib,
        cpu_utilization=_div(_times(g.get("cpu_usage"), 1000.0), pod_cpu_m),
        memory_utilization=_div(_times(g.get("memory_working_set"), 1.0 / (1024 * 1024)), pod_mem_mib),
        request_rate=g.get("request_rate"),
        request_rate_prev=p.get("request_rate"),
        latency_p50_ms=_times(g.get("latency_p50"), 1000.0),
        latency_p99_ms=_times(g.get("latency_p99"), 1000.0),
        latency_p99_prev_ms=_times(p.get("latency_p99"), 1000.0),
        error_rate=error_rate,
        queue_per_replica=None if in_flight is None else in_flight / max(view.ready_replicas, 1),
    )
    unknown = [
        name
        for name in (
            "cpu_utilization",
            "memory_utilization",
            "request_rate",
            "request_rate_prev",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_p99_prev_ms",
            "error_rate",
            "queue_per_replica",
        )
        if getattr(obs, name) is None
    ]
    return obs, unknown
