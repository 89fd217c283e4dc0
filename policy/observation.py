"""The observation contract: every observed field, declared once, with its unit and source.

An :class:`Observation` is what is known about a workload at one decision. Each of its
fields carries, as dataclass metadata, a :class:`FieldSource` that says what the field
means and where both producers of observations get it:

* the **operator** reads a *Deployment* field from the Deployment, and a *measured* field
  from one Prometheus signal (a key of ``rlscale.operator.queries.SIGNALS``) converted to
  the field's unit (``scale``, then divided by ``per``);
* the **simulator** fills a *measured* field from its metrics pipeline under the same name
  (it refuses to start when one has no source there);
* a *lagged* field is another measured field read ``offset_s`` seconds earlier: the
  operator evaluates the same signal at ``now - offset_s``, the simulator reads its
  history that many intervals back. Adding one needs no code in either producer.

Everything that enumerates fields derives from this declaration — the raw columns of the
spec (:data:`rlscale.policy.spec.RAW_COLUMNS`), :meth:`Observation.raw`, the simulator's
raw columns, the operator's signal reads and its list of unknown metrics, and the
``status.observed`` schema — so a new field is one line here, plus its source in the
simulator (measured fields only) and a query template in the operator (new signals only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from rlscale.policy.decide import DecisionConfig

#: Trends compare the current value with the value this many seconds earlier.
TREND_WINDOW_S = 300

SourceKind = Literal["deployment", "measured", "lagged"]
#: What a measured signal is divided by to reach the field's unit (the operator's view of
#: the Deployment; the simulator's metrics are already in the field's unit).
PerWhat = Literal["pod_cpu_limit_m", "pod_memory_limit_mib", "ready_replicas"]


@dataclass(frozen=True, slots=True)
class FieldSource:
    """Where one observed field comes from, and in what unit (the metadata of a field)."""

    kind: SourceKind
    unit: str
    doc: str
    #: measured: the operator's Prometheus signal key, and its conversion to ``unit``.
    signal: str | None = None
    scale: float = 1.0
    per: PerWhat | None = None
    #: measured: a value above this is a broken query, not a fact (it becomes unknown).
    upper: float | None = None
    #: lagged: the measured field this one repeats, and how long before the decision.
    lag_of: str | None = None
    offset_s: float = 0.0


def _deployment(unit: str, doc: str) -> Any:
    return field(metadata={"source": FieldSource("deployment", unit, doc)})


def _measured(
    signal: str, unit: str, doc: str, *, scale: float = 1.0, per: PerWhat | None = None, upper: float | None = None
) -> Any:
    source = FieldSource("measured", unit, doc, signal=signal, scale=scale, per=per, upper=upper)
    return field(default=None, metadata={"source": source})


def _lagged(of: str, offset_s: float, unit: str, doc: str) -> Any:
    return field(default=None, metadata={"source": FieldSource("lagged", unit, doc, lag_of=of, offset_s=offset_s)})


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known about a workload at one moment. ``None`` marks an unknown metric.

    The field order is the order of :data:`rlscale.policy.spec.RAW_COLUMNS` (and so part
    of the spec hash): append new fields, never reorder.
    """

    timestamp: float = field(metadata={"source": FieldSource("deployment", "s", "decision time, unix seconds, UTC")})
    replicas: int = _deployment("pods", "desired replicas currently set on the Deployment")
    ready_replicas: int = _deployment("pods", "ready replicas of the Deployment")
    cpu_limit_m: int = _deployment("millicores", "CPU limit of the first managed container")
    memory_limit_mib: int = _deployment("MiB", "memory limit of the first managed container")
    cpu_utilization: float | None = _measured(
        "cpu_usage", "fraction", "mean CPU usage / CPU limit over ready pods", scale=1000.0, per="pod_cpu_limit_m"
    )
    memory_utilization: float | None = _measured(
        "memory_working_set",
        "fraction",
        "working set / memory limit of the most-loaded pod (what the OOM killer sees)",
        scale=1.0 / (1024 * 1024),
        per="pod_memory_limit_mib",
    )
    request_rate: float | None = _measured("request_rate", "1/s", "requests per second, whole Deployment")
    request_rate_prev: float | None = _lagged(
        "request_rate", TREND_WINDOW_S, "1/s", f"request_rate {TREND_WINDOW_S} s earlier"
    )
    latency_p50_ms: float | None = _measured("latency_p50", "ms", "median latency", scale=1000.0)
    latency_p99_ms: float | None = _measured("latency_p99", "ms", "99th-percentile latency", scale=1000.0)
    latency_p99_prev_ms: float | None = _lagged(
        "latency_p99_ms", TREND_WINDOW_S, "ms", f"latency_p99_ms {TREND_WINDOW_S} s earlier"
    )
    error_rate: float | None = _measured(
        "error_rate", "fraction", "failed or dropped requests / all requests", upper=1.0
    )
    queue_per_replica: float | None = _measured(
        "in_flight", "requests", "requests in flight or queued per ready replica", per="ready_replicas"
    )

    @property
    def metrics_ok(self) -> bool:
        """All core metrics known (see :data:`rlscale.policy.spec.CORE_METRICS`)."""
        return all(
            v is not None and math.isfinite(v) for v in (self.cpu_utilization, self.request_rate, self.latency_p99_ms)
        )

    def raw(self, config: DecisionConfig) -> npt.NDArray[np.float64]:
        """The raw matrix :func:`rlscale.policy.spec.encode_matrix` takes, shape ``(len(RAW_COLUMNS), 1)``."""
        values = [getattr(self, name) for name in OBSERVED_FIELDS]
        values += [get(config) for get in CONFIG_COLUMNS.values()]
        return np.array([[np.nan if v is None else v] for v in values], dtype=np.float64)

    def columns(self, config: DecisionConfig) -> dict[str, npt.NDArray[np.float64]]:
        """The same values as named columns, for :func:`rlscale.policy.spec.encode`."""
        raw = self.raw(config)
        return {name: raw[i] for i, name in enumerate((*OBSERVED_FIELDS, *CONFIG_COLUMNS))}


#: Every field's source, in declaration order.
FIELD_SOURCES: dict[str, FieldSource] = {f.name: f.metadata["source"] for f in fields(Observation)}
#: Every observed field, in raw-column order.
OBSERVED_FIELDS: tuple[str, ...] = tuple(FIELD_SOURCES)
#: The fields that can be unknown (measured now or earlier): ``None`` in an observation.
METRIC_FIELDS: tuple[str, ...] = tuple(n for n, s in FIELD_SOURCES.items() if s.kind != "deployment")
#: The fields measured at the decision (the simulator's metrics pipeline provides each).
MEASURED_FIELDS: tuple[str, ...] = tuple(n for n, s in FIELD_SOURCES.items() if s.kind == "measured")


def measured_source(name: str) -> tuple[str, float]:
    """The measured field a metric field reads, and how many seconds before the decision."""
    src = FIELD_SOURCES[name]
    if src.kind == "lagged":
        assert src.lag_of is not None and FIELD_SOURCES[src.lag_of].kind == "measured", name
        return src.lag_of, src.offset_s
    if src.kind != "measured":
        raise ValueError(f"{name}: a {src.kind} field is not measured")
    return name, 0.0


def _signal_reads() -> dict[float, tuple[str, ...]]:
    reads: dict[float, list[str]] = {}
    for name in METRIC_FIELDS:
        base, offset = measured_source(name)
        src = FIELD_SOURCES[base]
        assert src.signal is not None, name
        keys = reads.setdefault(offset, [])
        if src.signal not in keys:
            keys.append(src.signal)
    return {offset: tuple(keys) for offset, keys in sorted(reads.items())}


#: The Prometheus signals the operator reads, by how many seconds before the decision.
SIGNAL_READS: dict[float, tuple[str, ...]] = _signal_reads()

#: Raw columns that come from the policy's configuration rather than the world.
CONFIG_COLUMNS: dict[str, Callable[[DecisionConfig], float]] = {
    "slo_ms": lambda c: c.objective.latency_slo_ms,  # the latency objective (p99)
    "max_replicas": lambda c: c.limits.max_replicas,
    "cpu_limit_max_m": lambda c: c.limits.cpu_limit_max_m,
    "memory_limit_max_mib": lambda c: c.limits.memory_limit_max_mib,
}

__all__ = [
    "CONFIG_COLUMNS",
    "FIELD_SOURCES",
    "MEASURED_FIELDS",
    "METRIC_FIELDS",
    "OBSERVED_FIELDS",
    "SIGNAL_READS",
    "TREND_WINDOW_S",
    "FieldSource",
    "Observation",
    "measured_source",
]
