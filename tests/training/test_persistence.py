"""The persistence oracle: causal rules over the clairvoyant oracle's needs, played and matched like a policy."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.policy.limits import ScalingLimits
from rlscale.training.episodes import episode_metrics, run_schedules
from rlscale.training.oracle import run_oracle
from rlscale.training.persistence import (
    LOOKBACKS,
    MARGIN_PODS,
    MULTIPLIERS,
    SLO_SLACK_MIN,
    PersistenceRule,
    persistence_report,
    rule_grid,
)
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, generate

LIMITS = ScalingLimits(min_replicas=1, max_replicas=12)
NEED = np.array([3, 5, 2, 2, 8, 4], dtype=np.int64)


def test_a_rule_sizes_from_the_max_of_the_last_k_needs_times_m_plus_pods() -> None:
    assert PersistenceRule(1.0, 2, 1, False).schedule(NEED, 4, LIMITS).tolist() == [4, 4, 6, 6, 3, 9]
    assert PersistenceRule(1.25, 1, 0, False).schedule(NEED, 4, LIMITS).tolist() == [4, 4, 7, 3, 3, 10]


def test_the_trend_extrapolates_the_last_step_as_a_floor() -> None:
    # t=2: max(5, 2·5−3 = 7); t=5: max(8, 2·8−2 = 14) → clipped to max_replicas 12.
    assert PersistenceRule(1.0, 1, 0, True).schedule(NEED, 4, LIMITS).tolist() == [4, 3, 7, 2, 2, 12]


def test_a_rule_never_reads_the_interval_it_sizes() -> None:
    """Causal: the count for interval t is the same whatever the needs from t on are."""
    rng = np.random.default_rng(0)
    need = rng.integers(1, 10, 40)
    for rule in rule_grid()[::7]:
        base = rule.schedule(need, 2, LIMITS)
        for t in (1, 9, 25):
            changed = need.copy()
            changed[t:] = rng.integers(1, 10, need.size - t)
            assert rule.schedule(changed, 2, LIMITS)[: t + 1].tolist() == base[: t + 1].tolist(), (rule, t)


def test_the_grid_is_every_combination_once() -> None:
    grid = rule_grid()
    assert len(grid) == len(set(grid)) == len(MULTIPLIERS) * len(LOOKBACKS) * len(MARGIN_PODS) * 2


def test_every_rule_starts_from_the_deployment_every_policy_finds() -> None:
    """Interval 0 is decided before anything is known: from the count a controller sees first, not the oracle's."""
    from rlscale.policy.decide import DecisionConfig
    from rlscale.training.episodes import Controller, run_controllers

    sim = SimConfig()
    window = generate("bursty", 120, 2)
    for seed in (0, 3):
        logs = run_controllers(sim, window, [Controller(DecisionConfig())], [seed], keep_decisions=True)
        assert run_oracle(sim, window, seed=seed).found == logs[0].decisions[0].previous_replicas


def test_a_schedule_is_played_as_set() -> None:
    sim = SimConfig()
    window = Trace(name="flat", values=np.full(120, 50.0), start_s=0.0)
    logs = run_schedules(sim, window, [np.full(120, 3), np.array([2, 5])], [0, 1])
    assert logs[0].steps["replicas"].tolist() == [3] * 120
    assert logs[1].steps["replicas"].tolist() == [2] + [5] * 119  # the last count holds
    assert episode_metrics(logs[0])["replica_hours"] == pytest.approx(3 * 120 / 60)
    with pytest.raises(ValueError, match="one per schedule"):
        run_schedules(sim, window, [np.full(120, 3)], [0, 1])


def test_the_report_matches_the_best_rule_against_the_frontier() -> None:
    sim = SimConfig()
    window = generate("bursty", 240, 5)
    oracle = run_oracle(sim, window, seed=0)
    # A frontier of one HPA point: 2 SLO-violation minutes at 1.5× the oracle's replica-hours.
    hpa = [{"slo_violation_minutes": 2.0, "replica_hours": 1.5 * oracle.replica_hours}]
    report = persistence_report(sim, window, [0], {0: oracle}, hpa, oracle.replica_hours, hpa_slo_minutes=2.0)
    assert report["rules"] == len(rule_grid())
    best, capped = report["best"], report["best_at_hpa_slo"]
    assert report["slo_cap_minutes"] == 2.0 + SLO_SLACK_MIN
    assert capped["slo_violation_minutes"] <= report["slo_cap_minutes"]
    assert best["cost_ratio"] <= capped["cost_ratio"]
    assert best["cost_ratio"] == pytest.approx(best["replica_hours"] / hpa[0]["replica_hours"])
    # The reported numbers are the rule's, played again.
    rule = PersistenceRule(best["multiplier"], best["lookback"], best["margin_pods"], best["trend"])
    replay = episode_metrics(
        run_schedules(sim, window, [rule.schedule(oracle.needed, oracle.found, sim.limits)], [0])[0]
    )
    assert replay["replica_hours"] == pytest.approx(best["replica_hours"])
    assert replay["slo_violation_minutes"] == pytest.approx(best["slo_violation_minutes"])
