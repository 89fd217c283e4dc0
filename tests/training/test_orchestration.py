"""The orchestration study's parts: the surge really triples the load, recovery time, the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.policy.baselines import BaselineConfig
from rlscale.training.episodes import run_episodes
from rlscale.training.evaluate import decide_fn, decision_config
from rlscale.training.sim_config import SimConfig
from rlscale.training.surge import recovery_minutes, surge
from rlscale.training.threshold import ThresholdConfig, threshold_fn, threshold_target, tune_threshold
from rlscale.training.workloads import generate


@pytest.mark.parametrize("windowed", [True, False])
def test_the_surge_triples_the_load_the_simulator_serves_and_nothing_else(windowed: bool) -> None:
    day = generate("diurnal", 600, seed=3)
    window = day.split().test if windowed else day  # with and without a fitted scale reference
    surged = surge(window, start=20, minutes=30, factor=3.0)
    np.testing.assert_array_equal(surged.values[20:50], 3.0 * window.values[20:50])
    np.testing.assert_array_equal(surged.values[:20], window.values[:20])
    np.testing.assert_array_equal(surged.values[50:], window.values[50:])
    # In the simulator, with the same seed (same arrival noise), a fixed policy is offered
    # exactly three times the requests during the surge and the same requests outside it.
    sim = SimConfig()
    static = decision_config(sim, BaselineConfig(kind="static", static_replicas=10))
    plain, tripled = (run_episodes(sim, w, [decide_fn(static)], 7)[0].steps["offered"] for w in (window, surged))
    np.testing.assert_allclose(tripled[20:50], 3.0 * plain[20:50], rtol=1e-12)
    np.testing.assert_allclose(tripled[:20], plain[:20], rtol=1e-12)
    np.testing.assert_allclose(tripled[50:], plain[50:], rtol=1e-12)
    assert plain[20:50].min() > 0


def test_surge_refuses_a_period_outside_the_window() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        surge(generate("diurnal", 100, seed=0), start=90, minutes=20)


def test_recovery_is_the_time_to_the_first_run_of_compliant_intervals() -> None:
    violated = np.array([False] * 10 + [True, True, False, True] + [False] * 8)
    assert recovery_minutes(violated, start=10, step_s=60.0) == 4.0  # the run starts 4 intervals after onset
    assert recovery_minutes(np.zeros(20, bool), start=10, step_s=60.0) == 0.0
    assert recovery_minutes(np.ones(20, bool), start=10, step_s=30.0) == 5.0  # never: to the end


def test_the_threshold_rule_steps_past_a_threshold_only_after_its_cooldown() -> None:
    th = ThresholdConfig(upper=0.8, lower=0.3, cooldown_s=120.0, step=2)
    assert threshold_target(th, 5, 0.9, since_change_s=300.0) == 7
    assert threshold_target(th, 5, 0.2, since_change_s=300.0) == 3
    assert threshold_target(th, 5, 0.5, since_change_s=300.0) == 5
    assert threshold_target(th, 5, 0.95, since_change_s=60.0) == 5  # cooling down
    assert threshold_target(th, 5, None, since_change_s=300.0) == 5  # no data, no move
    with pytest.raises(ValueError, match="below upper"):
        ThresholdConfig(upper=0.3, lower=0.5)


def test_the_threshold_rule_scales_out_under_load_through_decide() -> None:
    sim = SimConfig()
    load = generate("diurnal", 240, seed=1)
    base = decision_config(sim, BaselineConfig(kind="static"))
    fns = [threshold_fn(base, ThresholdConfig(upper=u, lower=0.2, cooldown_s=60.0)) for u in (0.5, 0.9)]
    eager, lazy = run_episodes(sim, load, fns, 0)
    assert eager.steps["replicas"].mean() > lazy.steps["replicas"].mean()
    assert eager.steps["replicas"].max() <= sim.limits.max_replicas


def test_the_threshold_rule_is_tuned_on_a_training_window_only() -> None:
    split = generate("diurnal", 300, seed=2).split()
    with pytest.raises(ValueError, match="training window only"):
        tune_threshold(SimConfig(), split.test)
