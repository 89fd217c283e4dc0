"""The HPA baseline reproduces documented Kubernetes HPA behaviour.

Each test names the section of the HPA documentation
(kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/) it checks.
"""

from __future__ import annotations

import pytest

from rlscale.policy.baselines import HpaConfig, HpaScalingPolicy, HpaState, hpa_recommend

T0 = 1_000_000.0


def fresh() -> HpaState:
    """An HPA that has been running for a while (its initial stabilisation window has passed)."""
    return HpaState(initialized=True)


def rec(cfg: HpaConfig, state: HpaState, current: int, util: float | None, now: float = T0, lo: int = 1, hi: int = 100):
    return hpa_recommend(
        cfg, state, current_replicas=current, ready_replicas=current, utilization=util,
        min_replicas=lo, max_replicas=hi, now=now,
    )[0]  # fmt: skip


def test_ratio_rule_ceil():
    # Algorithm details: desired = ceil(current × current/target): 3 × 0.9/0.5 = 5.4 → 6.
    assert rec(HpaConfig(target_utilization=0.5), fresh(), 3, 0.9) == 6


@pytest.mark.parametrize("util", [0.64, 0.7, 0.76])
def test_tolerance_is_a_no_op(util: float):
    # Algorithm details: within 10% of the target, the HPA does not scale.
    assert rec(HpaConfig(target_utilization=0.7), fresh(), 10, util) == 10


def test_just_outside_tolerance_scales():
    assert rec(HpaConfig(target_utilization=0.7), fresh(), 10, 0.78) == 12


def test_missing_metric_holds():
    # Algorithm details / missing metrics: no metric, no scaling (never a scale-down).
    assert rec(HpaConfig(), fresh(), 7, None) == 7
    assert rec(HpaConfig(), fresh(), 7, float("nan")) == 7


def test_stabilisation_window_holds_a_scale_down():
    # Stabilization window: the highest recommendation of the last 300 s wins for scale-down.
    cfg, state = HpaConfig(target_utilization=0.5), fresh()
    assert rec(cfg, state, 10, 0.5, now=T0) == 10  # recommends 10
    assert rec(cfg, state, 10, 0.1, now=T0 + 60) == 10  # wants 2, held by the window
    assert rec(cfg, state, 10, 0.1, now=T0 + 299) == 10
    assert rec(cfg, state, 10, 0.1, now=T0 + 301) == 2  # the 10 left the window


def test_no_stabilisation_on_scale_up_by_default():
    cfg, state = HpaConfig(target_utilization=0.5), fresh()
    rec(cfg, state, 4, 0.5, now=T0)
    assert rec(cfg, state, 4, 1.0, now=T0 + 15) == 8


def test_scale_up_capped_at_four_pods_or_double():
    # Default behavior: scale-up by max(4 pods, 100%) per 15 s.
    cfg = HpaConfig(target_utilization=0.1)
    assert rec(cfg, fresh(), 2, 1.0) == 6  # 2 + 4 pods beats 2 × 2
    assert rec(cfg, fresh(), 10, 1.0) == 20  # 100% beats 4 pods


def test_scale_up_changes_in_the_period_count():
    # Scaling policies: changes already made within the period count against its limit.
    cfg, state = HpaConfig(target_utilization=0.1), fresh()
    state.record_change(cfg, T0, +10)  # 10 → 20 just now
    assert rec(cfg, state, 20, 1.0, now=T0 + 5) == 20  # period start was 10: limit max(14, 20) = 20
    assert rec(cfg, state, 20, 1.0, now=T0 + 16) == 40  # a new period


def test_scale_down_policy_limits_rate():
    cfg = HpaConfig(
        target_utilization=0.5,
        scale_down_stabilization_s=0,
        scale_down_policies=(HpaScalingPolicy(type="Pods", value=2, period_s=60),),
    )
    assert rec(cfg, fresh(), 10, 0.05) == 8


def test_default_scale_down_allows_all_at_once_after_window():
    cfg = HpaConfig(target_utilization=0.5, scale_down_stabilization_s=0)
    assert rec(cfg, fresh(), 10, 0.05) == 1


def test_new_autoscaler_holds_during_its_first_window():
    # Stabilization window, as the controller initialises it for a new HPA.
    cfg, state = HpaConfig(target_utilization=0.5), HpaState()
    assert rec(cfg, state, 10, 0.05, now=T0) == 10
    assert rec(cfg, state, 10, 0.05, now=T0 + 301) == 1


def test_min_max_clamp():
    assert rec(HpaConfig(target_utilization=0.5, scale_down_stabilization_s=0), fresh(), 10, 0.05, lo=4) == 4
    assert rec(HpaConfig(target_utilization=0.5), fresh(), 10, 2.0, hi=12) == 12


def test_state_round_trips():
    cfg, state = HpaConfig(), fresh()
    rec(cfg, state, 5, 0.9)
    state.record_change(cfg, T0, 2)
    assert HpaState.from_dict(state.to_dict()) == state
