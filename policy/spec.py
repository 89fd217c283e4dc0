"""The observation spec: the ordered, named features a policy sees, and their normalisation.

The operator builds the raw columns from Prometheus and the Deployment; the simulator
builds them from its state. Both call :func:`encode`, so the learned policy sees the same
numbers in training and in the cluster. Features are scale-free where they can be
(utilisation against limits, latency against the SLO, replicas against the maximum), so
a model trained on one service size transfers to another.

Each feature is *declared* (a kind and its inputs) rather than written as a function:
the declaration is what gets hashed, and :func:`encode` evaluates all features of one
kind in a single vectorised operation — fast for the simulator's batches of thousands
and for the operator's batch of one alike.

The spec's identity is :data:`SPEC_HASH`: a hash of every feature's declaration, the
action table and the trend window. A model records the hash it was trained with, and
:class:`~rlscale.policy.model.PolicyModel` refuses any other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from rlscale.policy.actions import action_table
from rlscale.policy.observation import CONFIG_COLUMNS, OBSERVED_FIELDS, TREND_WINDOW_S

SPEC_VERSION = 1

Array = npt.NDArray[np.float64]
Columns = Mapping[str, Array]

#: Raw input columns, in matrix-row order; NaN marks an unknown value. The observed fields
#: are declared (with units and sources) in :mod:`rlscale.policy.observation`; the rest
#: come from the policy's configuration.
RAW_COLUMNS: tuple[str, ...] = (*OBSERVED_FIELDS, *CONFIG_COLUMNS)
_ROW = {name: i for i, name in enumerate(RAW_COLUMNS)}

#: Columns that must be known for a policy to scale down or shrink limits.
CORE_METRICS: tuple[str, ...] = ("cpu_utilization", "request_rate", "latency_p99_ms")

FeatureKind = Literal["ratio", "log_ratio", "sin", "cos", "trend", "available"]


@dataclass(frozen=True, slots=True)
class Feature:
    """One named feature, declared by its kind and inputs, clipped to ``[lo, hi]``.

    Kinds (``a`` is ``num``, ``b`` is ``den`` or 1):

    * ``ratio`` — ``a / max(b, floor)``
    * ``log_ratio`` — ``log1p(max(a, 0) / max(b, floor)) / log1p(scale)``
    * ``sin``/``cos`` — of ``2π·((a + offset) mod scale) / scale`` (``scale`` = period in s)
    * ``trend`` — ``log((max(a, 0) + 1) / (max(b, 0) + 1))``
    * ``available`` — 1 when every core metric is known, else 0

    An unknown (NaN) result becomes ``fill``.
    """

    name: str
    kind: FeatureKind
    num: str = "timestamp"
    den: str | None = None
    floor: float = 1e-9
    scale: float = 1.0
    offset: float = 0.0
    lo: float = 0.0
    hi: float = 1.0
    fill: float = 0.0

    def describe(self) -> dict[str, object]:
        return asdict(self)


_DAY = 86_400.0
_WEEK = 7 * _DAY
# 1970-01-01 was a Thursday; shifting by 3 days puts Monday 00:00 at phase 0.
_MONDAY = 3 * _DAY

FEATURES: tuple[Feature, ...] = (
    Feature("cpu_utilization", "ratio", "cpu_utilization", hi=3.0),
    Feature("memory_utilization", "ratio", "memory_utilization", hi=2.0),
    Feature("request_rate", "log_ratio", "request_rate", scale=1e4, hi=2.0),
    Feature("request_rate_per_replica", "log_ratio", "request_rate", "ready_replicas", floor=1.0, scale=1e3, hi=2.0),
    Feature("latency_p50", "ratio", "latency_p50_ms", "slo_ms", hi=5.0),
    Feature("latency_p99", "ratio", "latency_p99_ms", "slo_ms", hi=5.0),
    Feature("error_rate", "ratio", "error_rate"),
    Feature("replicas_fraction", "ratio", "replicas", "max_replicas", hi=1.5),
    Feature("replicas_log", "log_ratio", "replicas", scale=1e3, hi=1.5),
    Feature("ready_fraction", "ratio", "ready_replicas", "replicas", floor=1.0, fill=1.0),
    Feature("queue_per_replica", "log_ratio", "queue_per_replica", scale=1e3, hi=2.0),
    Feature("cpu_limit_fraction", "ratio", "cpu_limit_m", "cpu_limit_max_m", hi=1.5, fill=0.5),
    Feature("memory_limit_fraction", "ratio", "memory_limit_mib", "memory_limit_max_mib", hi=1.5, fill=0.5),
    Feature("time_of_day_sin", "sin", scale=_DAY, lo=-1.0),
    Feature("time_of_day_cos", "cos", scale=_DAY, lo=-1.0),
    Feature("day_of_week_sin", "sin", scale=_WEEK, offset=_MONDAY, lo=-1.0),
    Feature("day_of_week_cos", "cos", scale=_WEEK, offset=_MONDAY, lo=-1.0),
    Feature("load_trend", "trend", "request_rate", "request_rate_prev", lo=-2.0, hi=2.0),
    Feature("latency_trend", "trend", "latency_p99_ms", "latency_p99_prev_ms", lo=-2.0, hi=2.0),
    Feature("metrics_available", "available"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES: int = len(FEATURES)


def _col(values: list[float]) -> Array:
    return np.array(values, dtype=np.float64)[:, None]


def _rows(kind: str) -> npt.NDArray[np.intp]:
    return np.array([i for i, f in enumerate(FEATURES) if f.kind == kind], dtype=np.intp)


_NUM = np.array([_ROW[f.num] for f in FEATURES], dtype=np.intp)
_DEN = np.array([_ROW[f.den] if f.den else 0 for f in FEATURES], dtype=np.intp)
_HAS_DEN = _col([f.den is not None for f in FEATURES]).astype(bool)
_FLOOR = _col([f.floor for f in FEATURES])
_LO = _col([f.lo for f in FEATURES])
_HI = _col([f.hi for f in FEATURES])
_FILL = _col([f.fill for f in FEATURES])
_KINDS = ("ratio", "log_ratio", "sin", "cos", "trend", "available")
_RATIO, _LOG, _SIN, _COS, _TREND, _AVAIL = (_rows(k) for k in _KINDS)
_LOG_SCALE = np.log1p(_col([FEATURES[i].scale for i in _LOG]))
# sin and cos in one call: cos(x) = sin(x + π/2).
_CYC = np.concatenate([_SIN, _COS])
_PERIOD = _col([FEATURES[i].scale for i in _CYC])
_OFFSET = _col([FEATURES[i].offset for i in _CYC])
_PHASE_SHIFT = _col([0.0] * len(_SIN) + [np.pi / 2] * len(_COS))
_CORE = np.array([_ROW[name] for name in CORE_METRICS], dtype=np.intp)


def spec_document() -> dict[str, object]:
    """The whole contract as plain data: features, action table, trend window."""
    return {
        "version": SPEC_VERSION,
        "raw_columns": list(RAW_COLUMNS),
        "trend_window_s": TREND_WINDOW_S,
        "core_metrics": list(CORE_METRICS),
        "features": [f.describe() for f in FEATURES],
        "actions": action_table(),
    }


SPEC_HASH: str = hashlib.sha256(
    json.dumps(spec_document(), sort_keys=True, separators=(",", ":")).encode()
).hexdigest()[:16]


def encode_matrix(raw: Array) -> npt.NDArray[np.float32]:
    """Encode a raw matrix of shape ``(len(RAW_COLUMNS), n)`` into observations ``(n, N_FEATURES)``.

    Written for few numpy calls, since the operator calls it with ``n = 1``: the ratio is
    computed for every feature at once (ratio features have ``lo >= 0``, so clamping the
    numerator at 0 first changes nothing after the final clip), then each other kind
    overwrites its rows. NaN propagates without warnings and becomes ``fill`` at the end.
    """
    num = np.maximum(raw[_NUM], 0.0)
    den = np.where(_HAS_DEN, raw[_DEN], 1.0)
    out = num / np.maximum(den, _FLOOR)
    out[_LOG] = np.log1p(out[_LOG]) / _LOG_SCALE
    out[_TREND] = np.log((num[_TREND] + 1.0) / (np.maximum(den[_TREND], 0.0) + 1.0))
    ts = raw[_NUM[_CYC]]
    out[_CYC] = np.sin((2.0 * np.pi) * ((ts + _OFFSET) % _PERIOD) / _PERIOD + _PHASE_SHIFT)
    out[_AVAIL] = ~np.isnan(raw[_CORE]).any(axis=0)
    out = np.where(np.isfinite(out), out, _FILL)
    return np.minimum(np.maximum(out, _LO), _HI).T.astype(np.float32)


def encode(columns: Columns) -> npt.NDArray[np.float32]:
    """Encode raw columns (each shape ``(n,)``) into observations of shape ``(n, N_FEATURES)``.

    Unknown inputs (NaN) become each feature's ``fill`` value; ``metrics_available`` tells
    the policy that it happened. Every feature is clipped to its declared range.
    """
    missing = [name for name in RAW_COLUMNS if name not in columns]
    if missing:
        raise KeyError(f"observation columns missing: {', '.join(missing)}")
    return encode_matrix(np.stack([np.asarray(columns[name], dtype=np.float64) for name in RAW_COLUMNS]))
