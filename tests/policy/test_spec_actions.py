"""The observation spec and the action table: the contract every model is built against."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.policy import spec
from rlscale.policy.actions import ACTION_NAMES, ACTIONS, N_ACTIONS, NOOP, propose_replicas
from rlscale.policy.decide import DecisionConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import ScalingState, action_mask

from .conftest import make_obs


def test_features_cover_the_required_signals():
    names = set(spec.FEATURE_NAMES)
    for required in (
        "cpu_utilization", "memory_utilization", "request_rate", "latency_p50", "latency_p99", "error_rate",
        "replicas_fraction", "queue_per_replica", "time_of_day_sin", "time_of_day_cos", "day_of_week_sin",
        "day_of_week_cos", "load_trend", "latency_trend",
    ):  # fmt: skip
        assert required in names
    assert len(spec.FEATURE_NAMES) == len(names), "feature names must be unique"


def test_hash_covers_features_and_actions(monkeypatch: pytest.MonkeyPatch):
    import hashlib
    import json

    def digest(doc: dict[str, object]) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    doc = spec.spec_document()
    assert digest(doc) == spec.SPEC_HASH
    changed = dict(doc, features=[dict(f, hi=9.0) if f["name"] == "latency_p99" else f for f in doc["features"]])
    assert digest(changed) != spec.SPEC_HASH
    assert digest(dict(doc, actions=doc["actions"][:-1])) != spec.SPEC_HASH


def test_encode_shape_range_and_missing_values():
    cfg = DecisionConfig()
    healthy = spec.encode_matrix(make_obs().raw(cfg))
    assert healthy.shape == (1, spec.N_FEATURES) and healthy.dtype == np.float32
    lo = np.array([f.lo for f in spec.FEATURES])
    hi = np.array([f.hi for f in spec.FEATURES])
    assert ((healthy >= lo) & (healthy <= hi)).all()
    idx = spec.FEATURE_NAMES.index
    assert healthy[0, idx("metrics_available")] == 1.0
    assert healthy[0, idx("latency_p99")] == pytest.approx(120 / 250)

    blind = spec.encode_matrix(make_obs(cpu_utilization=None, latency_p99_ms=float("nan")).raw(cfg))
    assert np.isfinite(blind).all()
    assert blind[0, idx("metrics_available")] == 0.0
    assert blind[0, idx("cpu_utilization")] == spec.FEATURES[idx("cpu_utilization")].fill

    absurd = spec.encode_matrix(make_obs(cpu_utilization=1e9, latency_p99_ms=1e12, request_rate=-5.0).raw(cfg))
    assert absurd[0, idx("cpu_utilization")] == spec.FEATURES[idx("cpu_utilization")].hi
    assert absurd[0, idx("latency_p99")] == 5.0
    assert absurd[0, idx("request_rate")] == 0.0


def test_encode_dict_and_matrix_agree_and_missing_column_is_named():
    cfg = DecisionConfig()
    obs = make_obs()
    np.testing.assert_array_equal(spec.encode(obs.columns(cfg)), spec.encode_matrix(obs.raw(cfg)))
    cols = obs.columns(cfg)
    del cols["slo_ms"]
    with pytest.raises(KeyError, match="slo_ms"):
        spec.encode(cols)


def test_time_features_follow_the_clock():
    cfg = DecisionConfig()
    idx = spec.FEATURE_NAMES.index
    monday_midnight = 1_699_833_600.0  # 2023-11-13 00:00 UTC, a Monday
    x = spec.encode_matrix(make_obs(timestamp=monday_midnight).raw(cfg))[0]
    assert x[idx("time_of_day_sin")] == pytest.approx(0, abs=1e-6)
    assert x[idx("time_of_day_cos")] == pytest.approx(1)
    assert x[idx("day_of_week_sin")] == pytest.approx(0, abs=1e-6)
    noon = spec.encode_matrix(make_obs(timestamp=monday_midnight + 43_200).raw(cfg))[0]
    assert noon[idx("time_of_day_cos")] == pytest.approx(-1)


def test_trends_are_signed():
    cfg = DecisionConfig()
    idx = spec.FEATURE_NAMES.index
    rising = spec.encode_matrix(make_obs(request_rate=400.0, request_rate_prev=100.0).raw(cfg))[0]
    falling = spec.encode_matrix(make_obs(request_rate=100.0, request_rate_prev=400.0).raw(cfg))[0]
    assert rising[idx("load_trend")] > 0 > falling[idx("load_trend")]


def test_action_table():
    assert N_ACTIONS == len(ACTIONS) == 63
    assert NOOP.index == 0 and NOOP.name == "noop" and not NOOP.changes_limits
    assert len(set(ACTION_NAMES)) == N_ACTIONS
    assert [a.index for a in ACTIONS] == list(range(N_ACTIONS))


def test_relative_moves_change_at_least_one_pod():
    p = propose_replicas(np.array([1, 3, 10]))
    by_name = {name: p[:, i] for i, name in enumerate(ACTION_NAMES)}
    assert list(by_name["replicas+50%"]) == [2, 5, 15]
    assert list(by_name["replicas-20%"]) == [0, 2, 8]
    assert list(by_name["replicas+100%"]) == [2, 6, 20]


def test_follows_a_tenfold_surge_within_four_decisions():
    """5 → 50 replicas in ≤ 4 decisions with the default limits (issue 2)."""
    limits = ScalingLimits(min_replicas=1, max_replicas=50, scale_up_cooldown_s=0)
    replicas, t = 5, 1_700_000_000.0
    decisions = 0
    for _ in range(4):
        decisions += 1
        state = ScalingState.single(
            replicas=replicas, cpu_limit_m=500, memory_limit_mib=512, metrics_ok=True, memory_utilization=0.5,
            now=t, last_scale_up_at=t - 60, last_scale_down_at=None, last_limit_change_at=None,
        )  # fmt: skip
        result = action_mask(limits, state)
        replicas = int(result.replicas[0][result.allowed[0]].max())
        t += 60
        if replicas == 50:
            break
    assert replicas == 50 and decisions <= 4
