"""The Gymnasium wrapper: passes gymnasium's own checker and exposes the safety mask."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlscale.policy.actions import ACTIONS, N_ACTIONS
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.spec import N_FEATURES
from rlscale.training.sim_config import SimConfig
from rlscale.training.sim_env import OBS_HIGH, OBS_LOW, AutoscaleEnv
from rlscale.training.workloads import generate


@pytest.fixture
def env() -> AutoscaleEnv:
    return AutoscaleEnv(SimConfig(episode_steps=20), [generate("weekly", 2000, seed=0)], seed=0)


@pytest.mark.filterwarnings("ignore:.*render.*")
def test_passes_gymnasium_check_env(env: AutoscaleEnv) -> None:
    check_env(env, skip_render_check=True)


def test_spaces_come_from_the_spec(env: AutoscaleEnv) -> None:
    assert env.action_space.n == N_ACTIONS
    assert env.observation_space.shape == (N_FEATURES,)
    np.testing.assert_array_equal(env.observation_space.low, OBS_LOW)
    np.testing.assert_array_equal(env.observation_space.high, OBS_HIGH)


def test_mask_is_exposed_both_ways_and_matches_the_simulator(env: AutoscaleEnv) -> None:
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(3)
    for _ in range(19):
        mask = env.action_masks()
        np.testing.assert_array_equal(mask, info["action_mask"])
        np.testing.assert_array_equal(mask, env.sim.action_masks()[0])
        assert mask[0]
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, rew, term, trunc, info = env.step(action)
        assert info["action_allowed"] and isinstance(rew, float) and not term and not trunc
        assert env.observation_space.contains(obs)


def test_episode_ends_by_truncation_and_needs_reset(env: AutoscaleEnv) -> None:
    env.reset(seed=1)
    truncated = [env.step(0)[3] for _ in range(20)]
    assert truncated == [False] * 19 + [True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    env.step(0)


def test_rejects_actions_outside_the_table(env: AutoscaleEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 63\)"):
        env.step(N_ACTIONS)


def test_forbidden_action_is_reported_and_does_nothing() -> None:
    cfg = SimConfig(episode_steps=5, limits=ScalingLimits(memory_limit_min_mib=1024), initial_memory_limit_mib=1024)
    env = AutoscaleEnv(cfg, [generate("weekly", 2000, seed=0)], seed=0)
    env.reset(seed=0)
    shrink = next(a.index for a in ACTIONS if a.replica_value == 0 and a.memory_steps == -1 and a.cpu_steps == 0)
    assert not env.action_masks()[shrink]  # already at the memory floor
    info = env.step(shrink)[4]
    assert not info["action_allowed"]
    assert info["memory_limit_mib"] == 1024


def test_default_loads_work() -> None:
    env = AutoscaleEnv(SimConfig(episode_steps=5))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (N_FEATURES,)
