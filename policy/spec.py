"""The observation spec: the ordered, named features a policy sees, and their normalisation.

The operator builds these columns from Prometheus and the Deployment; the simulator
builds them from its state. Both call :func:`encode`, so the learned policy sees the same
numbers in training and in the cluster. Features are scale-free where they can be
(utilisation against limits, latency against the SLO, replicas against the maximum), so
a model trained on one service size transfers to another.

The spec's identity is :data:`SPEC_HASH`: a hash of every feature's name, formula and
range, the action table and the trend window. A model records the hash it was trained
with, and :class:`~rlscale.policy.model.PolicyModel` refuses any other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rlscale.policy.actions import action_table

SPEC_VERSION = 1
#: Trends compare the current value with the value this many seconds earlier.
TREND_WINDOW_S = 300

Array = npt.NDArray[np.float64]
Columns = Mapping[str, Array]

#: Raw input columns, all float arrays of one length; NaN marks an unknown value.
RAW_COLUMNS: tuple[str, ...] = (
    "timestamp",  # unix seconds, UTC
    "replicas",  # desired replicas currently set on the Deployment
    "ready_replicas",
    "cpu_limit_m",  # per-container CPU limit, millicores
    "memory_limit_mib",
    "cpu_utilization",  # mean CPU usage / CPU limit over ready pods
    "memory_utilization",  # mean working set / memory limit
    "request_rate",  # requests per second, whole Deployment
    "request_rate_prev",  # the same, TREND_WINDOW_S earlier
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_p99_prev_ms",  # TREND_WINDOW_S earlier
    "error_rate",  # failed or dropped / offered
    "queue_per_replica",  # in-flight or queued requests per ready replica
    "slo_ms",  # the latency objective (p99)
    "max_replicas",
    "cpu_limit_max_m",
    "memory_limit_max_mib",
)

#: Columns that must be known for a policy to scale down or shrink limits.
CORE_METRICS: tuple[str, ...] = ("cpu_utilization", "request_rate", "latency_p99_ms")


def _ratio(num: Array, den: Array) -> Array:
    return np.asarray(num / np.maximum(den, 1e-9), dtype=np.float64)


def _log_scaled(x: Array, scale: float) -> Array:
    return np.asarray(np.log1p(np.maximum(x, 0.0)) / np.log1p(scale), dtype=np.float64)


def _cyc(period_s: float, fn: Callable[[Array], Array], offset_s: float = 0.0) -> Callable[[Columns], Array]:
    def feature(c: Columns) -> Array:
        return fn(2.0 * np.pi * ((c["timestamp"] + offset_s) % period_s) / period_s)

    return feature


def _trend(now: str, prev: str) -> Callable[[Columns], Array]:
    def feature(c: Columns) -> Array:
        return np.asarray(np.log((np.maximum(c[now], 0) + 1.0) / (np.maximum(c[prev], 0) + 1.0)))

    return feature


def _metrics_available(c: Columns) -> Array:
    known = np.ones_like(c["timestamp"], dtype=bool)
    for name in CORE_METRICS:
        known &= ~np.isnan(c[name])
    return known.astype(np.float64)


# 1970-01-01 was a Thursday; shifting by 3 days puts Monday 00:00 at phase 0.
_WEEK_OFFSET_S = 3 * 86_400.0


@dataclass(frozen=True, slots=True)
class Feature:
    """One named feature: how it is computed from raw columns and the range it is clipped to.

    ``formula`` is the human-readable definition and is part of the spec hash, so
    changing a feature's meaning changes the hash even when its name stays.
    """

    name: str
    formula: str
    lo: float
    hi: float
    fill: float
    compute: Callable[[Columns], Array]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "formula": self.formula, "lo": self.lo, "hi": self.hi, "fill": self.fill}


FEATURES: tuple[Feature, ...] = (
    Feature("cpu_utilization", "cpu_utilization", 0.0, 3.0, 0.0, lambda c: c["cpu_utilization"]),
    Feature("memory_utilization", "memory_utilization", 0.0, 2.0, 0.0, lambda c: c["memory_utilization"]),
    Feature(
        "request_rate", "log1p(request_rate)/log1p(1e4)", 0.0, 2.0, 0.0, lambda c: _log_scaled(c["request_rate"], 1e4)
    ),
    Feature(
        "request_rate_per_replica",
        "log1p(request_rate/max(ready_replicas,1))/log1p(1e3)",
        0.0,
        2.0,
        0.0,
        lambda c: _log_scaled(c["request_rate"] / np.maximum(c["ready_replicas"], 1.0), 1e3),
    ),
    Feature("latency_p50", "latency_p50_ms/slo_ms", 0.0, 5.0, 0.0, lambda c: _ratio(c["latency_p50_ms"], c["slo_ms"])),
    Feature("latency_p99", "latency_p99_ms/slo_ms", 0.0, 5.0, 0.0, lambda c: _ratio(c["latency_p99_ms"], c["slo_ms"])),
    Feature("error_rate", "error_rate", 0.0, 1.0, 0.0, lambda c: c["error_rate"]),
    Feature(
        "replicas_fraction", "replicas/max_replicas", 0.0, 1.5, 0.0, lambda c: _ratio(c["replicas"], c["max_replicas"])
    ),
    Feature("replicas_log", "log1p(replicas)/log1p(1e3)", 0.0, 1.5, 0.0, lambda c: _log_scaled(c["replicas"], 1e3)),
    Feature(
        "ready_fraction",
        "ready_replicas/max(replicas,1)",
        0.0,
        1.0,
        1.0,
        lambda c: c["ready_replicas"] / np.maximum(c["replicas"], 1.0),
    ),
    Feature(
        "queue_per_replica",
        "log1p(queue_per_replica)/log1p(1e3)",
        0.0,
        2.0,
        0.0,
        lambda c: _log_scaled(c["queue_per_replica"], 1e3),
    ),
    Feature(
        "cpu_limit_fraction",
        "cpu_limit_m/cpu_limit_max_m",
        0.0,
        1.5,
        0.5,
        lambda c: _ratio(c["cpu_limit_m"], c["cpu_limit_max_m"]),
    ),
    Feature(
        "memory_limit_fraction",
        "memory_limit_mib/memory_limit_max_mib",
        0.0,
        1.5,
        0.5,
        lambda c: _ratio(c["memory_limit_mib"], c["memory_limit_max_mib"]),
    ),
    Feature("time_of_day_sin", "sin(2π·(timestamp mod 86400)/86400)", -1.0, 1.0, 0.0, _cyc(86_400.0, np.sin)),
    Feature("time_of_day_cos", "cos(2π·(timestamp mod 86400)/86400)", -1.0, 1.0, 0.0, _cyc(86_400.0, np.cos)),
    Feature(
        "day_of_week_sin",
        "sin(2π·((timestamp+3d) mod 7d)/7d)",
        -1.0,
        1.0,
        0.0,
        _cyc(7 * 86_400.0, np.sin, _WEEK_OFFSET_S),
    ),
    Feature(
        "day_of_week_cos",
        "cos(2π·((timestamp+3d) mod 7d)/7d)",
        -1.0,
        1.0,
        0.0,
        _cyc(7 * 86_400.0, np.cos, _WEEK_OFFSET_S),
    ),
    Feature(
        "load_trend",
        "log((request_rate+1)/(request_rate_prev+1))",
        -2.0,
        2.0,
        0.0,
        _trend("request_rate", "request_rate_prev"),
    ),
    Feature(
        "latency_trend",
        "log((latency_p99_ms+1)/(latency_p99_prev_ms+1))",
        -2.0,
        2.0,
        0.0,
        _trend("latency_p99_ms", "latency_p99_prev_ms"),
    ),
    Feature("metrics_available", "1 if all of CORE_METRICS are known else 0", 0.0, 1.0, 0.0, _metrics_available),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES: int = len(FEATURES)
_LO = np.array([f.lo for f in FEATURES])
_HI = np.array([f.hi for f in FEATURES])
_FILL = np.array([f.fill for f in FEATURES])


def spec_document() -> dict[str, object]:
    """The whole contract as plain data: features, action table, trend window."""
    return {
        "version": SPEC_VERSION,
        "trend_window_s": TREND_WINDOW_S,
        "core_metrics": list(CORE_METRICS),
        "features": [f.describe() for f in FEATURES],
        "actions": action_table(),
    }


SPEC_HASH: str = hashlib.sha256(
    json.dumps(spec_document(), sort_keys=True, separators=(",", ":")).encode()
).hexdigest()[:16]


def encode(columns: Columns) -> npt.NDArray[np.float32]:
    """Encode raw columns (each shape ``(n,)``) into observations of shape ``(n, N_FEATURES)``.

    Unknown inputs (NaN) become each feature's ``fill`` value; ``metrics_available`` tells
    the policy that it happened. Every feature is clipped to its declared range.
    """
    missing = [name for name in RAW_COLUMNS if name not in columns]
    if missing:
        raise KeyError(f"observation columns missing: {', '.join(missing)}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([f.compute(columns) for f in FEATURES], axis=-1)
    out = np.where(np.isfinite(out), out, _FILL)
    return np.clip(out, _LO, _HI).astype(np.float32)
