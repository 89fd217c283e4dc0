"""The simulated service behaves like a service: each test here fails if a mechanism is missing.

Loads are given in absolute requests/s (``absolute_rps_per_unit=1``) and noise is off unless
the test is about noise, so the expected numbers follow from the config's own capacity curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlscale.policy.actions import ACTIONS
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import MaskRule
from rlscale.policy.spec import FEATURE_NAMES
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig

LIMITS = ScalingLimits(memory_limit_min_mib=64, scale_down_cooldown_s=0, limit_change_cooldown_s=0)


def quiet(**overrides: Any) -> SimConfig:
    """A noiseless config at absolute load, 4 pods of 1 CPU / 1 GiB."""
    base: dict[str, Any] = {
        "limits": LIMITS,
        "arrival_noise": 0.0,
        "metric_noise": 0.0,
        "absolute_rps_per_unit": 1.0,
        "initial_replicas": 4,
        "scrape_delay_steps": 0,
        "episode_steps": 100,
    }
    base.update(overrides)
    return SimConfig(**base)


def constant(config: SimConfig, rps: float | list[float], n_envs: int = 1, rows: int = 120) -> VectorSim:
    rates = np.atleast_1d(np.asarray(rps, dtype=float))
    loads = [np.full(rows, r) for r in rates] if rates.size > 1 else np.full(rows, rates[0])
    sim = VectorSim(config, loads, n_envs=n_envs, seed=0, fixed_start=True)
    sim.reset()
    return sim


def hold(sim: VectorSim, steps: int, **targets: int) -> list[dict[str, Any]]:
    """Step with the current spec (or the given targets), returning each step's info."""
    infos = []
    for _ in range(steps):
        r = targets.get("replicas", sim.replicas)
        c = targets.get("cpu_limit_m", sim.cpu_limit_m)
        m = targets.get("memory_limit_mib", sim.memory_limit_mib)
        infos.append(sim.step_targets(r, c, m)[4])
    return infos


# --------------------------------------------------------------------------- capacity


def test_capacity_grows_with_the_cpu_limit_and_saturates() -> None:
    cfg = quiet()
    caps = [cfg.pod_capacity_rps(m) for m in (250, 500, 1000, 2000, 3000, 4000)]
    assert np.all(np.diff(caps) > 0)
    assert caps[2] / caps[1] > 1.9  # far below saturation: nearly proportional
    assert caps[5] / caps[4] < 1.1  # past cpu_saturation_cores: little gain
    assert caps[5] < 1000.0 / cfg.cpu_per_request_ms * cfg.cpu_saturation_cores


@pytest.mark.parametrize("cpu_m", [500, 1000, 2000, 4000])
def test_overloaded_pods_serve_exactly_their_capacity(cpu_m: int) -> None:
    cfg = quiet(
        initial_cpu_limit_m=cpu_m,
        initial_replicas=2,
        queue_capacity_per_replica=1e6,
        request_timeout_s=3600,
        memory_per_inflight_mib=0,
    )
    sim = constant(cfg, 5000.0)
    info = hold(sim, 3)[-1]
    assert info["served"][0] == pytest.approx(2 * cfg.pod_capacity_rps(cpu_m) * cfg.step_s, rel=1e-9)
    assert info["cpu_utilization"][0] == pytest.approx(
        (cfg.pod_base_cpu_m + cfg.usable_cores(cpu_m) * 1000.0) / cpu_m, rel=1e-9
    )


def test_saturated_pods_show_less_than_full_cpu() -> None:
    """A pod beyond its usable cores is overloaded while its CPU utilisation stays below 100%."""
    cfg = quiet(initial_cpu_limit_m=4000, initial_replicas=2)
    info = hold(constant(cfg, 5000.0), 2)[-1]
    assert info["error_rate"][0] > 0.5
    assert info["cpu_utilization"][0] < 0.6


# --------------------------------------------------------------------------- pods


def test_new_replicas_serve_only_after_the_startup_delay() -> None:
    cfg = quiet(
        initial_replicas=2,
        startup_delay_s=120.0,
        queue_capacity_per_replica=1e6,
        request_timeout_s=3600,
        memory_per_inflight_mib=0,
    )
    cap = cfg.pod_capacity_rps(1000)
    sim = constant(cfg, 5.0 * cap)
    infos = hold(sim, 3, replicas=6)
    assert [float(i["ready_replicas"][0]) for i in infos] == [2.0, 2.0, 6.0]
    assert [int(i["replicas"][0]) for i in infos] == [6, 6, 6]
    assert infos[0]["served"][0] == pytest.approx(2 * cap * 60, rel=1e-9)
    assert infos[1]["served"][0] == pytest.approx(2 * cap * 60, rel=1e-9)
    assert infos[2]["served"][0] == pytest.approx(6 * cap * 60, rel=1e-9)


def test_without_startup_delay_new_replicas_serve_at_once() -> None:
    cfg = quiet(
        initial_replicas=2,
        startup_delay_s=0.0,
        queue_capacity_per_replica=1e6,
        request_timeout_s=3600,
        memory_per_inflight_mib=0,
    )
    cap = cfg.pod_capacity_rps(1000)
    infos = hold(constant(cfg, 10.0 * cap), 1, replicas=6)
    assert infos[0]["served"][0] == pytest.approx(6 * cap * 60, rel=1e-9)


def test_partial_startup_within_an_interval() -> None:
    """30 s start-up with 15 s sub-steps: new pods serve during the last two of four sub-steps."""
    cfg = quiet(
        initial_replicas=2,
        startup_delay_s=30.0,
        queue_capacity_per_replica=1e6,
        request_timeout_s=3600,
        memory_per_inflight_mib=0,
    )
    cap = cfg.pod_capacity_rps(1000)
    info = hold(constant(cfg, 10.0 * cap), 1, replicas=6)[0]
    assert info["served"][0] == pytest.approx((2 * 30 + 6 * 30) * cap, rel=1e-9)


def test_scale_down_removes_starting_pods_first() -> None:
    cfg = quiet(initial_replicas=2, startup_delay_s=120.0)
    sim = constant(cfg, 10.0)
    hold(sim, 1, replicas=6)  # 4 pods starting
    info = hold(sim, 1, replicas=4)[0]  # 2 of the starting pods are deleted, the 2 ready ones stay
    assert info["ready_replicas"][0] == 2
    assert info["replicas"][0] == 4
    info = hold(sim, 1)[0]
    assert info["ready_replicas"][0] == 4


def test_limit_change_rolls_pods_and_dips_capacity() -> None:
    cfg = quiet(startup_delay_s=30.0, restart_max_unavailable=0.25)
    cap = cfg.pod_capacity_rps(1000)
    load = 0.9 * 4 * cap  # fine on 4 pods, overload on 3
    control = hold(constant(cfg, load), 4)
    rolled = hold(constant(cfg, load), 4, memory_limit_mib=1280)  # same CPU: only the restart differs
    assert rolled[0]["limits_changed"][0] and not rolled[1]["limits_changed"][0]
    # 4 pods, 1 at a time, 30 s each: 120 s = two intervals with one pod down.
    assert [float(i["ready_replicas"][0]) for i in control] == [4.0] * 4
    assert [float(i["ready_replicas"][0]) for i in rolled] == [3.0, 3.0, 4.0, 4.0]
    assert rolled[1]["backlog"][0] > 0 and control[1]["backlog"][0] == 0
    assert rolled[1]["latency_p99_ms"][0] > 2 * control[1]["latency_p99_ms"][0]
    assert rolled[0]["served"][0] < control[0]["served"][0]


def test_rollout_waves_scale_with_replicas() -> None:
    cfg = quiet(initial_replicas=8, startup_delay_s=30.0, restart_max_unavailable=0.25)
    rolled = hold(constant(cfg, 10.0), 3, memory_limit_mib=1280)
    # 8 pods, 2 at a time: 4 waves of 30 s = 2 intervals with 2 pods down.
    assert [float(i["ready_replicas"][0]) for i in rolled] == [6.0, 6.0, 8.0]


# --------------------------------------------------------------------------- memory


def test_memory_limit_below_working_set_oom_kills_and_drops() -> None:
    cfg = quiet(initial_memory_limit_mib=200)  # idle working set is 256 MiB
    infos = hold(constant(cfg, 100.0), 3)
    assert sum(i["oom_kills"][0] for i in infos) >= 4
    assert all(i["dropped"][0] > 0 for i in infos)
    assert min(i["ready_replicas"][0] for i in infos) < 4
    assert hold(constant(quiet(initial_memory_limit_mib=1024), 100.0), 3)[-1]["oom_kills"][0] == 0


def test_oom_killed_pods_come_back_after_backoff_and_startup() -> None:
    """A kill takes a pod out for the back-off plus the start-up delay (here 75 s + 30 s = 7 sub-steps)."""
    cfg = quiet(initial_memory_limit_mib=200, memory_spread=0.001, startup_delay_s=30.0, oom_backoff_s=75.0)
    sim = constant(cfg, 10.0)
    first = hold(sim, 1)[0]
    assert first["oom_kills"][0] == 4  # every pod is over 200 MiB: all killed in sub-step 0
    assert first["ready_replicas"][0] == 0
    assert first["served"][0] < 10.0 * 15.0  # served only during the first sub-step, minus in-flight lost
    assert first["error_rate"][0] > 0.75
    second = hold(sim, 1, memory_limit_mib=1024)[0]  # enough memory from now on
    assert second["oom_kills"][0] == 0
    # Back at the start of sub-step 7, the last of the second interval's four: 15 s of serving.
    assert second["served"][0] == pytest.approx(10.0 * 15.0)
    assert second["dropped"][0] == pytest.approx(10.0 * 45.0)
    assert second["ready_replicas"][0] == 3  # one pod down for the rolling update of the new limit


def test_backlog_grows_working_set_until_oom() -> None:
    """A queue of waiting requests costs memory: overload OOMs a pod with a tight limit."""
    cap = quiet().pod_capacity_rps(1000)
    tight = hold(constant(quiet(initial_memory_limit_mib=512), 2.0 * 4 * cap), 3)
    roomy = hold(constant(quiet(initial_memory_limit_mib=2048), 2.0 * 4 * cap), 3)
    assert sum(i["oom_kills"][0] for i in tight) > 0
    assert sum(i["oom_kills"][0] for i in roomy) == 0
    assert roomy[-1]["memory_utilization"][0] > 0.3  # 256 MiB idle + 2 MiB per queued request, of 2 GiB


def test_memory_utilization_tracks_working_set() -> None:
    cfg = quiet(initial_memory_limit_mib=1024)
    info = hold(constant(cfg, 1.0), 1)[0]
    assert info["memory_utilization"][0] == pytest.approx(cfg.memory_base_mib / 1024, rel=0.01)


# --------------------------------------------------------------------------- queueing


def test_queue_overflow_drops_requests() -> None:
    cfg = quiet(initial_replicas=2, queue_capacity_per_replica=50.0)
    cap = cfg.pod_capacity_rps(1000)
    infos = hold(constant(cfg, 3.0 * 2 * cap), 3)
    assert infos[1]["dropped"][0] > 0
    assert infos[1]["error_rate"][0] == pytest.approx(2.0 / 3.0, abs=0.01)  # a third is served
    assert infos[1]["backlog"][0] == pytest.approx(100.0)
    assert infos[1]["slo_violated"][0]
    light = hold(constant(cfg, 0.5 * 2 * cap), 3)
    assert all(i["dropped"][0] == 0 for i in light)


def test_request_timeout_bounds_the_queue() -> None:
    cfg = quiet(initial_replicas=2, queue_capacity_per_replica=1e9, request_timeout_s=2.0, memory_per_inflight_mib=0)
    cap = cfg.pod_capacity_rps(1000)
    info = hold(constant(cfg, 2.0 * 2 * cap), 2)[-1]
    assert info["backlog"][0] == pytest.approx(2.0 * 2 * cap)
    assert info["error_rate"][0] == pytest.approx(0.5, abs=0.01)
    assert info["latency_p99_ms"][0] <= 2000.0


def _steady_p99(rho: float, **overrides: Any) -> float:
    cfg = quiet(**overrides)
    load = rho * cfg.initial_replicas * cfg.pod_capacity_rps(cfg.initial_cpu_limit_m)  # type: ignore[operator]
    return float(hold(constant(cfg, load), 2)[-1]["latency_p99_ms"][0])


def test_latency_rises_sharply_as_utilisation_approaches_one() -> None:
    rhos = [0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97]
    p99 = [_steady_p99(r) for r in rhos]
    assert np.all(np.diff(p99) > 0)
    slopes = np.diff(p99) / np.diff(rhos)
    assert np.all(np.diff(slopes) > 0)  # convex: it bends up
    assert p99[-1] > 5 * p99[0]
    # At light load it is the service time plus the fixed part.
    cfg = quiet()
    idle = cfg.base_latency_ms + cfg.cpu_per_request_ms / min(cfg.usable_cores(1000), 1.0) * np.log(100)
    assert _steady_p99(0.01) == pytest.approx(idle, rel=0.01)


def test_overload_latency_keeps_growing_with_the_backlog() -> None:
    cfg = quiet(queue_capacity_per_replica=1e6, request_timeout_s=600, memory_per_inflight_mib=0)
    cap = cfg.pod_capacity_rps(1000)
    p99 = [float(i["latency_p99_ms"][0]) for i in hold(constant(cfg, 1.2 * 4 * cap), 4)]
    assert np.all(np.diff(p99) > 0)
    assert p99[-1] > 30_000  # minutes of backlog


def test_bigger_pods_wait_less_at_the_same_utilisation() -> None:
    """M/M/c pooling: two-core pods queue less than one-core pods at equal utilisation."""
    assert _steady_p99(0.85, initial_cpu_limit_m=2500) < _steady_p99(0.85, initial_cpu_limit_m=1000)


def test_no_ready_pods_fail_every_request() -> None:
    cfg = quiet(initial_replicas=0, limits=ScalingLimits(min_replicas=0))
    info = hold(constant(cfg, 50.0), 1)[0]
    assert info["error_rate"][0] == pytest.approx(1.0)
    assert info["served"][0] == 0
    assert np.isnan(info["cpu_utilization"][0])  # no pods, no CPU metric


def test_requests_are_conserved() -> None:
    cfg = quiet(arrival_noise=0.3, initial_replicas=3, initial_memory_limit_mib=600)
    rng = np.random.default_rng(0)
    sim = VectorSim(cfg, [rng.uniform(0, 1500, 200) for _ in range(8)], n_envs=8, seed=1, autoreset=False)
    sim.reset()
    offered = served = dropped = 0.0
    for _ in range(60):
        info = sim.step_targets(rng.integers(1, 10, 8), sim.cpu_limit_m, sim.memory_limit_mib)[4]
        offered += info["offered"]
        served += info["served"]
        dropped += info["dropped"]
    np.testing.assert_allclose(offered, served + dropped + info["backlog"], rtol=1e-9)


# --------------------------------------------------------------------------- observation pipeline


def _observed_rates(delay: int, steps: int) -> list[float]:
    cfg = quiet(scrape_delay_steps=delay)
    load = np.r_[np.full(10, 100.0), np.full(100, 200.0)]
    sim = VectorSim(cfg, load, seed=0, fixed_start=True)
    sim.reset()
    seen = []
    for _ in range(steps):
        sim.step_targets(sim.replicas, sim.cpu_limit_m, sim.memory_limit_mib)
        seen.append(float(sim.columns()["request_rate"][0]))
    return seen


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_scrape_delay_makes_observations_lag_the_truth(delay: int) -> None:
    seen = _observed_rates(delay, 16)
    first_high = next(i for i, v in enumerate(seen) if v > 150)
    # Interval 10 is the first at 200 req/s; it is seen after step 11 (index 10) plus the delay.
    assert first_high == 10 + delay
    assert seen[first_high - 1] == pytest.approx(100.0)


def test_trend_reference_is_the_trend_window_earlier() -> None:
    cfg = quiet(scrape_delay_steps=0)
    sim = VectorSim(cfg, np.arange(1.0, 200.0) * 10, seed=0, fixed_start=True)
    sim.reset()
    for _ in range(20):
        sim.step_targets(sim.replicas, sim.cpu_limit_m, sim.memory_limit_mib)
    cols = sim.columns()
    assert cols["request_rate"][0] - cols["request_rate_prev"][0] == pytest.approx(5 * 10.0)  # 300 s back


def test_first_observation_is_warm() -> None:
    """Episodes start mid-stream: the metrics pipeline already has the minutes before."""
    sim = constant(quiet(scrape_delay_steps=2), 321.0)
    cols = sim.columns()
    assert cols["request_rate"][0] == pytest.approx(321.0)
    assert cols["request_rate_prev"][0] == pytest.approx(321.0)
    assert cols["latency_p99_ms"][0] > 0


def test_metric_noise_is_multiplicative_and_unbiased() -> None:
    cfg = quiet(metric_noise=0.2, scrape_delay_steps=0)
    sim = VectorSim(cfg, np.full(100, 400.0), n_envs=4000, seed=3, fixed_start=True)
    sim.reset()
    sim.step_targets(sim.replicas, sim.cpu_limit_m, sim.memory_limit_mib)
    ratio = sim.columns()["request_rate"] / 400.0
    assert ratio.mean() == pytest.approx(1.0, abs=0.015)
    assert np.log(ratio).std() == pytest.approx(0.2, rel=0.05)
    exact = constant(quiet(scrape_delay_steps=0), 400.0)
    exact.step_targets(exact.replicas, exact.cpu_limit_m, exact.memory_limit_mib)
    assert exact.columns()["request_rate"][0] == 400.0


def test_missing_metrics_are_unknown_and_forbid_scaling_down() -> None:
    sim = constant(quiet(metrics_missing_prob=1.0), 100.0)
    cols = sim.columns()
    for name in ("cpu_utilization", "request_rate", "latency_p99_ms", "memory_utilization", "error_rate"):
        assert np.isnan(cols[name][0]), name
    assert not np.isnan(cols["replicas"][0])  # the Deployment's own spec is always known
    obs = sim.reset()
    assert obs[0, FEATURE_NAMES.index("metrics_available")] == 0.0
    mask = sim.mask_result()
    down = np.array([a.replica_value < 0 for a in ACTIONS])
    shrink = np.array([a.changes_limits for a in ACTIONS])
    assert np.all(mask.reason[0][down | shrink] == MaskRule.METRICS_MISSING)
    assert np.all(mask.replicas[0] >= sim.replicas[0])


# --------------------------------------------------------------------------- invariants


def test_pod_accounting_holds_under_random_actions() -> None:
    cfg = quiet(
        arrival_noise=0.2,
        metric_noise=0.1,
        initial_memory_limit_mib=384,
        limits=ScalingLimits(memory_limit_min_mib=128, limit_change_cooldown_s=0, scale_down_cooldown_s=0),
    )
    rng = np.random.default_rng(7)
    sim = VectorSim(cfg, [rng.uniform(0, 3000, 300) for _ in range(4)], n_envs=64, seed=7)
    sim.reset()
    kills = 0.0
    for _ in range(150):
        allowed = sim.action_masks()
        actions = np.where(allowed, rng.random(allowed.shape), -1).argmax(axis=1)
        info = sim.step(actions)[4]
        kills += info["oom_kills"].sum()
        np.testing.assert_allclose(sim._ready + sim._pending.sum(axis=0), sim.replicas)
        assert np.all(sim._ready >= 0) and np.all(sim._pending >= 0)
        assert np.all(info["ready_replicas"] <= info["replicas"])
        assert np.all((info["error_rate"] >= 0) & (info["error_rate"] <= 1 + 1e-12))
        assert np.all(info["latency_p99_ms"] >= info["latency_p50_ms"])
    assert kills > 0  # the scenario does exercise restarts


@pytest.mark.parametrize(
    ("step_s", "substeps", "expected"),
    [
        (60.0, 4, [100.0, 200.0, 300.0, 400.0]),
        (30.0, 1, [100.0, 100.0, 200.0, 200.0]),  # a trace minute spans two decisions
        (120.0, 4, [150.0, 350.0, 550.0, 750.0]),  # a decision spans two trace minutes
        (90.0, 3, [400 / 3, 800 / 3, 1300 / 3, 1700 / 3]),  # 1.5 minutes per decision
    ],
)
def test_decision_interval_maps_onto_trace_minutes(step_s: float, substeps: int, expected: list[float]) -> None:
    cfg = quiet(step_s=step_s, substeps=substeps, startup_delay_s=0.0)
    sim = VectorSim(cfg, np.arange(1.0, 41.0) * 100.0, seed=0, fixed_start=True)
    sim.reset()
    rates = [float(i["request_rate"][0]) for i in hold(sim, 4)]
    assert rates == pytest.approx(expected)
    assert sim.episode_lengths[0] == min(cfg.episode_steps, int(40 * 60 // step_s))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    step_s=st.sampled_from([15.0, 30.0, 60.0, 90.0, 120.0]),
    substeps=st.integers(1, 6),
    startup=st.floats(0.0, 300.0),
    backoff=st.floats(0.0, 60.0),
    unavailable=st.floats(0.05, 1.0),
    memory=st.integers(128, 2048),
    queue=st.floats(0.0, 500.0),
    missing=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_invariants_hold_for_any_config(
    step_s: float,
    substeps: int,
    startup: float,
    backoff: float,
    unavailable: float,
    memory: int,
    queue: float,
    missing: float,
    seed: int,
) -> None:
    cfg = SimConfig(
        step_s=step_s,
        substeps=substeps,
        startup_delay_s=startup,
        oom_backoff_s=backoff,
        restart_max_unavailable=unavailable,
        initial_memory_limit_mib=memory,
        queue_capacity_per_replica=queue,
        metrics_missing_prob=missing,
        episode_steps=25,
        arrival_noise=0.3,
        limits=ScalingLimits(memory_limit_min_mib=128, limit_change_cooldown_s=0, scale_down_cooldown_s=0),
    )
    rng = np.random.default_rng(seed)
    sim = VectorSim(cfg, [rng.uniform(0, 100, 200) for _ in range(3)], n_envs=16, seed=seed)
    obs = sim.reset()
    offered = served = dropped = np.zeros(16)
    for _ in range(24):  # within one episode, so conservation can be summed
        allowed = sim.action_masks()
        obs, _, _, _, info = sim.step(np.where(allowed, rng.random(allowed.shape), -1).argmax(axis=1))
        offered, served, dropped = offered + info["offered"], served + info["served"], dropped + info["dropped"]
        np.testing.assert_allclose(sim._ready + sim._pending.sum(axis=0), sim.replicas)
        assert np.all(sim._pending >= 0) and np.all(info["ready_replicas"] <= info["replicas"])
        assert np.all((info["error_rate"] >= 0) & (info["error_rate"] <= 1))
        assert np.all(info["latency_p99_ms"] >= info["latency_p50_ms"])
        assert np.all(info["latency_p99_ms"] <= cfg.request_timeout_s * 1000)
        assert np.all(np.isfinite(obs))
    np.testing.assert_allclose(offered, served + dropped + info["backlog"], rtol=1e-9, atol=1e-6)
