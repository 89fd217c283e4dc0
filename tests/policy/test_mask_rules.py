"""Each safety-mask rule forbids what it should, names itself, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.policy.actions import ACTION_BY_NAME
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import MaskRule, ScalingState, action_mask

NOW = 1_700_000_000.0


def state(**kw: object) -> ScalingState:
    fields: dict[str, object] = {
        "replicas": 5, "cpu_limit_m": 500, "memory_limit_mib": 512, "metrics_ok": True, "memory_utilization": 0.5,
        "now": NOW, "last_scale_up_at": None, "last_scale_down_at": None, "last_limit_change_at": None,
    }  # fmt: skip
    fields.update(kw)
    return ScalingState.single(**fields)  # type: ignore[arg-type]


def outcome(limits: ScalingLimits, s: ScalingState, action: str) -> tuple[MaskRule, int, int, int]:
    r = action_mask(limits, s)
    i = ACTION_BY_NAME[action].index
    return MaskRule(int(r.reason[0, i])), int(r.replicas[0, i]), int(r.cpu_limit_m[0, i]), int(r.memory_limit_mib[0, i])


L = ScalingLimits()


def test_healthy_state_allows_moves():
    assert outcome(L, state(), "replicas+1") == (MaskRule.ALLOWED, 6, 500, 512)
    assert outcome(L, state(), "replicas-1") == (MaskRule.ALLOWED, 4, 500, 512)
    assert outcome(L, state(), "cpu+1") == (MaskRule.ALLOWED, 5, 750, 512)


def test_missing_metrics_forbid_scale_down_and_limit_changes_but_not_scale_up():
    blind = state(metrics_ok=False)
    assert outcome(L, blind, "replicas-1")[0] == MaskRule.METRICS_MISSING
    assert outcome(L, blind, "replicas-50%")[0] == MaskRule.METRICS_MISSING
    assert outcome(L, blind, "cpu+1")[0] == MaskRule.METRICS_MISSING
    assert outcome(L, blind, "replicas+1")[0] == MaskRule.ALLOWED
    assert outcome(L, state(memory_utilization=None), "memory-1")[0] == MaskRule.METRICS_MISSING


def test_cooldowns():
    assert outcome(L, state(last_scale_up_at=NOW - 100), "replicas-1")[0] == MaskRule.SCALE_DOWN_COOLDOWN
    assert outcome(L, state(last_scale_down_at=NOW - 100), "replicas-1")[0] == MaskRule.SCALE_DOWN_COOLDOWN
    assert outcome(L, state(last_scale_down_at=NOW - 301), "replicas-1")[0] == MaskRule.ALLOWED
    up_cd = ScalingLimits(scale_up_cooldown_s=60)
    assert outcome(up_cd, state(last_scale_up_at=NOW - 30), "replicas+1")[0] == MaskRule.SCALE_UP_COOLDOWN
    assert outcome(L, state(last_limit_change_at=NOW - 30), "memory+1")[0] == MaskRule.LIMIT_COOLDOWN


def test_bounds_forbid_at_the_edge_and_clamp_before_it():
    edge = ScalingLimits(min_replicas=5, max_replicas=8)
    assert outcome(edge, state(), "replicas-1")[0] == MaskRule.MIN_REPLICAS
    assert outcome(edge, state(), "replicas+100%") == (MaskRule.ALLOWED, 8, 500, 512)
    assert outcome(edge, state(replicas=8), "replicas+1")[0] == MaskRule.MAX_REPLICAS
    assert outcome(L, state(cpu_limit_m=4000), "cpu+1")[0] == MaskRule.CPU_BOUNDS
    assert outcome(L, state(cpu_limit_m=3900), "cpu+1") == (MaskRule.ALLOWED, 5, 4000, 512)
    assert outcome(L, state(memory_limit_mib=128, memory_utilization=0.1), "memory-1")[0] == MaskRule.MEMORY_BOUNDS


def test_step_limits_clamp():
    slow = ScalingLimits(max_scale_up_pods=2, max_scale_up_percent=0, max_scale_down_pods=1, max_scale_down_percent=0)
    assert outcome(slow, state(replicas=10), "replicas+100%")[1] == 12
    assert outcome(slow, state(replicas=10), "replicas-50%")[1] == 9


def test_budgets():
    budget = ScalingLimits(max_total_cpu_m=3000)  # 6 pods × 500m
    assert outcome(budget, state(), "replicas+100%") == (MaskRule.ALLOWED, 6, 500, 512)
    assert outcome(budget, state(replicas=6), "replicas+1")[0] == MaskRule.CPU_BUDGET
    assert outcome(budget, state(), "cpu+1")[0] == MaskRule.CPU_BUDGET
    mem_budget = ScalingLimits(max_total_memory_mib=2560)
    assert outcome(mem_budget, state(), "replicas+1")[0] == MaskRule.MEMORY_BUDGET


def test_memory_never_drops_below_working_set():
    # 512 MiB at 90% → 461 MiB working set × 1.2 headroom = 553 > 256 after one step down.
    assert outcome(L, state(memory_utilization=0.9), "memory-1")[0] == MaskRule.MEMORY_WORKING_SET
    assert outcome(L, state(memory_limit_mib=1024, memory_utilization=0.2), "memory-1")[0] == MaskRule.ALLOWED


def test_first_rule_wins_and_noop_is_always_allowed():
    s = state(metrics_ok=False, last_scale_down_at=NOW)
    assert outcome(L, s, "replicas-1")[0] == MaskRule.METRICS_MISSING
    worst = ScalingLimits(min_replicas=5, max_replicas=5, cpu_limit_min_m=500, cpu_limit_max_m=500,
                          memory_limit_min_mib=512, memory_limit_max_mib=512)  # fmt: skip
    r = action_mask(worst, state(metrics_ok=False))
    assert r.allowed[0, 0] and r.allowed.sum() == 1


def test_limits_validation_names_the_field():
    with pytest.raises(ValueError, match="min_replicas"):
        ScalingLimits(min_replicas=10, max_replicas=5)
    with pytest.raises(ValueError, match="cpu_limit_min_m"):
        ScalingLimits(cpu_limit_min_m=5000)
    with pytest.raises(ValueError, match="memory_limit_min_mib"):
        ScalingLimits(memory_limit_min_mib=9000)


def test_batch_and_single_agree():
    rng = np.random.default_rng(0)
    n = 64
    batch = ScalingState(
        replicas=rng.integers(1, 50, n), cpu_limit_m=rng.integers(100, 4000, n),
        memory_limit_mib=rng.integers(128, 8000, n), metrics_ok=rng.random(n) < 0.7,
        memory_utilization=rng.uniform(0, 1.2, n), now=np.full(n, NOW),
        last_scale_up_at=NOW - rng.uniform(0, 900, n), last_scale_down_at=np.full(n, np.nan),
        last_limit_change_at=NOW - rng.uniform(0, 900, n),
    )  # fmt: skip
    together = action_mask(L, batch)
    for i in range(n):
        one = ScalingState(**{f: getattr(batch, f)[i : i + 1] for f in ScalingState.__dataclass_fields__})
        alone = action_mask(L, one)
        np.testing.assert_array_equal(alone.reason[0], together.reason[i])
        np.testing.assert_array_equal(alone.replicas[0], together.replicas[i])
