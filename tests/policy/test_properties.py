"""Property tests: over ≥ 10,000 random states and limit sets, no decision breaks a hard limit.

Hypothesis draws a limit set, a state inside those limits (replicas, container limits,
cooldown clocks, budgets, metrics present or not), the learned policy's logits (so every
action gets proposed) and a gate mode; ``decide`` must return a target that

* stays within [min, max] replicas and the CPU/memory bounds,
* moves at most the step limit,
* respects the scale-up, scale-down and limit-change cooldowns,
* stays within the CPU and memory budgets,
* never scales down or shrinks limits on missing metrics,

and the mask must never be empty (the no-op is always allowed).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import ScalingState, action_mask

from .conftest import LogitsModel

EXAMPLES = 10_000
NOW = 1_700_000_000.0


@st.composite
def limit_sets(draw: st.DrawFn) -> ScalingLimits:
    lo = draw(st.integers(0, 20))
    hi = draw(st.integers(max(lo, 1), 200))
    cpu_lo = draw(st.integers(50, 2000))
    cpu_hi = draw(st.integers(cpu_lo, 8000))
    mem_lo = draw(st.integers(64, 2048))
    mem_hi = draw(st.integers(mem_lo, 16384))
    return ScalingLimits(
        min_replicas=lo,
        max_replicas=hi,
        max_scale_up_pods=draw(st.integers(1, 10)),
        max_scale_up_percent=draw(st.sampled_from([0.0, 10.0, 50.0, 100.0, 300.0])),
        max_scale_down_pods=draw(st.integers(1, 10)),
        max_scale_down_percent=draw(st.sampled_from([0.0, 10.0, 50.0, 100.0])),
        scale_up_cooldown_s=draw(st.sampled_from([0.0, 30.0, 120.0])),
        scale_down_cooldown_s=draw(st.sampled_from([0.0, 60.0, 300.0])),
        limit_change_cooldown_s=draw(st.sampled_from([0.0, 300.0, 600.0])),
        cpu_limit_min_m=cpu_lo,
        cpu_limit_max_m=cpu_hi,
        cpu_limit_step_m=draw(st.integers(1, 1000)),
        memory_limit_min_mib=mem_lo,
        memory_limit_max_mib=mem_hi,
        memory_limit_step_mib=draw(st.integers(1, 1024)),
        memory_headroom=draw(st.sampled_from([1.0, 1.2, 2.0])),
        max_total_cpu_m=draw(st.none() | st.integers(1, 400_000)),
        max_total_memory_mib=draw(st.none() | st.integers(1, 1_000_000)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ScalingLimits, Observation, ControllerState, DecisionConfig, np.ndarray]:
    limits = draw(limit_sets())
    replicas = draw(st.integers(limits.min_replicas, limits.max_replicas))
    cpu = draw(st.integers(limits.cpu_limit_min_m, limits.cpu_limit_max_m))
    mem = draw(st.integers(limits.memory_limit_min_mib, limits.memory_limit_max_mib))
    # The state starts inside the budgets (a budget below the current use is the user's
    # own contradiction; the mask then only forbids growth).
    if limits.max_total_cpu_m is not None and replicas * cpu > limits.max_total_cpu_m:
        limits = limits.model_copy(update={"max_total_cpu_m": replicas * cpu})
    if limits.max_total_memory_mib is not None and replicas * mem > limits.max_total_memory_mib:
        limits = limits.model_copy(update={"max_total_memory_mib": replicas * mem})
    unknown = st.none() | st.just(float("nan"))
    obs = Observation(
        timestamp=NOW,
        replicas=replicas,
        ready_replicas=draw(st.integers(0, replicas)),
        cpu_limit_m=cpu,
        memory_limit_mib=mem,
        cpu_utilization=draw(unknown | st.floats(0, 5)),
        memory_utilization=draw(unknown | st.floats(0, 3)),
        request_rate=draw(unknown | st.floats(0, 1e6)),
        request_rate_prev=draw(unknown | st.floats(0, 1e6)),
        latency_p50_ms=draw(unknown | st.floats(0, 1e5)),
        latency_p99_ms=draw(unknown | st.floats(0, 1e5)),
        latency_p99_prev_ms=draw(unknown | st.floats(0, 1e5)),
        error_rate=draw(unknown | st.floats(0, 1)),
        queue_per_replica=draw(unknown | st.floats(0, 1e4)),
    )
    since = st.none() | st.floats(0, 1200).map(lambda ago: NOW - ago)
    config = DecisionConfig(
        limits=limits,
        baseline=BaselineConfig(
            kind=draw(st.sampled_from(["hpa", "static", "proportional"])),
            hpa=HpaConfig(target_utilization=draw(st.floats(0.1, 1.0))),
            static_replicas=draw(st.integers(0, 300)),
            rate_per_replica=draw(st.floats(0.1, 1000)),
        ),
        gate=GateConfig(mode=draw(st.sampled_from(["shadow", "gradual", "full"])), initial_ratio=draw(st.floats(0, 1))),
    )
    state = ControllerState.initial(config)
    state.last_scale_up_at = draw(since)
    state.last_scale_down_at = draw(since)
    state.last_limit_change_at = draw(since)
    state.hpa.initialized = draw(st.booleans())
    logits = np.array(draw(st.lists(st.floats(-10, 10), min_size=N_ACTIONS, max_size=N_ACTIONS)))
    return limits, obs, state, config, logits


def _in_cooldown(last: float | None, cooldown: float) -> bool:
    return last is not None and last + cooldown > NOW


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_decisions_never_break_hard_limits(scenario) -> None:
    limits, obs, state, config, logits = scenario
    decision, _ = decide(obs, config, state, LogitsModel(logits))  # type: ignore[arg-type]
    r0, r = obs.replicas, decision.replicas

    assert limits.min_replicas <= r <= limits.max_replicas
    assert limits.cpu_limit_min_m <= decision.cpu_limit_m <= limits.cpu_limit_max_m
    assert limits.memory_limit_min_mib <= decision.memory_limit_mib <= limits.memory_limit_max_mib
    up_step = max(limits.max_scale_up_pods, math.ceil(r0 * limits.max_scale_up_percent / 100))
    down_step = max(limits.max_scale_down_pods, math.floor(r0 * limits.max_scale_down_percent / 100))
    assert r - r0 <= up_step
    assert r0 - r <= down_step
    if r > r0:
        assert not _in_cooldown(state.last_scale_up_at, limits.scale_up_cooldown_s)
    if r < r0:
        last = max((t for t in (state.last_scale_up_at, state.last_scale_down_at) if t is not None), default=None)
        assert not _in_cooldown(last, limits.scale_down_cooldown_s)
        assert obs.metrics_ok, "scaled down on missing metrics"
    if decision.limits_changed:
        assert not _in_cooldown(state.last_limit_change_at, limits.limit_change_cooldown_s)
        assert obs.metrics_ok, "changed limits on missing metrics"
    if decision.memory_limit_mib < obs.memory_limit_mib:
        assert obs.memory_utilization is not None and not math.isnan(obs.memory_utilization)
        assert decision.memory_limit_mib >= obs.memory_utilization * obs.memory_limit_mib * limits.memory_headroom
    if limits.max_total_cpu_m is not None:
        assert r * decision.cpu_limit_m <= limits.max_total_cpu_m
    if limits.max_total_memory_mib is not None:
        assert r * decision.memory_limit_mib <= limits.max_total_memory_mib


def test_mask_never_empty_and_allowed_outcomes_stay_inside_limits() -> None:
    """The vectorised mask over 20,000 random states at once: the same guarantees, per action."""
    rng = np.random.default_rng(7)
    n = 20_000
    limits = ScalingLimits(min_replicas=2, max_replicas=60, max_total_cpu_m=40_000, max_total_memory_mib=60_000)
    replicas = rng.integers(2, 61, n)
    cpu = rng.integers(100, 4001, n)
    cpu = np.minimum(cpu, 40_000 // replicas)
    mem = np.minimum(rng.integers(128, 8193, n), 60_000 // replicas)
    keep = (cpu >= limits.cpu_limit_min_m) & (mem >= limits.memory_limit_min_mib)
    replicas, cpu, mem = replicas[keep], cpu[keep], mem[keep]
    k = len(replicas)
    ago = rng.uniform(0, 1500, (3, k))
    never = rng.random((3, k)) < 0.3
    times = np.where(never, np.nan, NOW - ago)
    state = ScalingState(
        replicas=replicas,
        cpu_limit_m=cpu,
        memory_limit_mib=mem,
        metrics_ok=rng.random(k) < 0.8,
        memory_utilization=np.where(rng.random(k) < 0.1, np.nan, rng.uniform(0, 1.5, k)),
        now=np.full(k, NOW),
        last_scale_up_at=times[0],
        last_scale_down_at=times[1],
        last_limit_change_at=times[2],
    )
    result = action_mask(limits, state)
    assert result.allowed[:, 0].all(), "the no-op must always be allowed"
    assert (result.allowed.sum(axis=1) >= 1).all()
    ok = result.allowed
    tr, tc, tm = result.replicas, result.cpu_limit_m, result.memory_limit_mib
    assert ((tr >= limits.min_replicas) & (tr <= limits.max_replicas))[ok].all()
    assert ((tc >= limits.cpu_limit_min_m) & (tc <= limits.cpu_limit_max_m))[ok].all()
    assert ((tm >= limits.memory_limit_min_mib) & (tm <= limits.memory_limit_max_mib))[ok].all()
    assert (tr * tc <= limits.max_total_cpu_m)[ok].all()
    assert (tr * tm <= limits.max_total_memory_mib)[ok].all()
    r = replicas[:, None]
    scaled_down = ok & (tr < r)
    assert state.metrics_ok[:, None].repeat(tr.shape[1], 1)[scaled_down].all()
    last_scaled = np.fmax(times[0], times[1])[:, None]
    assert not (scaled_down & (last_scaled + limits.scale_down_cooldown_s > NOW)).any()
    # Forbidden actions report a rule and leave the state untouched.
    assert (result.reason[~ok] > 0).all()
    assert (tr == r)[~ok].all()
