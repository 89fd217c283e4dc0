"""DQN and GRPO learn a trivial masked world; GRPO's advantages; the trainers share code instead of copying it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rlscale.training.dqn import DqnConfig, run_dqn
from rlscale.training.grpo import GrpoConfig, group_advantages, run_grpo
from rlscale.training.trainers import RunSpec, greedy_masked, uniform_allowed

ROOT = Path(__file__).resolve().parents[2]


class _CloneableBandit:
    """test_ppo's masked contextual bandit (right action 1 if obs[0] > 0 else 2; action 3 pays most but is masked),
    with ``copy_env`` so that GRPO can start a group of rollouts from one state (the observation is the state)."""

    def __init__(self, n_envs: int, seed: int) -> None:
        self.n_envs, self.masked_taken = n_envs, 0
        self.rng = np.random.default_rng(seed)
        self.clock = np.zeros(n_envs, int)  # steps into the 8-step episode
        self.state = self._fresh()

    def _fresh(self) -> np.ndarray:
        return self.rng.uniform(-1, 1, size=(self.n_envs, 3)).astype(np.float32)

    def reset(self) -> np.ndarray:
        self.state = self._fresh()
        return self.state.copy()

    def action_masks(self) -> np.ndarray:
        return np.tile([True, True, True, False], (self.n_envs, 1))

    def copy_env(self, src: np.ndarray) -> None:
        self.state, self.clock = self.state[src].copy(), self.clock[src].copy()

    def step(self, actions: np.ndarray):  # type: ignore[no-untyped-def]
        self.masked_taken += int(np.count_nonzero(actions == 3))
        right = 1 + (self.state[:, 0] <= 0)
        reward = (actions == right).astype(float) + 5.0 * (actions == 3)
        self.clock = (self.clock + 1) % 8
        ended = self.clock == 0
        return self.reset(), reward, ended, np.zeros_like(ended), {}


def _greedy_accuracy(net: torch.nn.Module) -> float:
    obs = np.random.default_rng(5).uniform(-1, 1, size=(2000, 3)).astype(np.float32)
    with torch.no_grad():
        greedy = greedy_masked(net(torch.from_numpy(obs)), torch.tensor([[True, True, True, False]])).numpy()
    return float(np.mean(greedy == np.where(obs[:, 0] > 0, 1, 2)))


def test_dqn_learns_the_masked_bandit_and_never_takes_a_masked_action() -> None:
    env = _CloneableBandit(8, seed=0)
    cfg = DqnConfig(
        total_steps=8_000,
        n_envs=8,
        buffer_size=8_000,
        batch_size=64,
        learning_rate=3e-3,
        learning_starts=500,
        target_update_every=50,
        exploration_fraction=0.5,
        hidden=(16,),
        log_every=50,
    )
    result = run_dqn(env, cfg, RunSpec(n_features=3, n_actions=4, seed=0))
    assert env.masked_taken == 0  # neither exploration nor the greedy choice ever picks it
    assert _greedy_accuracy(result.actor) > 0.9
    assert result.history[-1].mean_step_reward > result.history[0].mean_step_reward + 0.3
    assert result.global_step == 8_000


def test_grpo_learns_the_masked_bandit_without_a_critic() -> None:
    cfg = GrpoConfig(
        total_steps=16_384, n_groups=4, group_size=4, horizon=32, hidden=(16,), learning_rate=3e-3, n_minibatches=2
    )
    env = _CloneableBandit(cfg.n_envs, seed=1)
    result = run_grpo(env, cfg, RunSpec(n_features=3, n_actions=4, seed=0))
    assert env.masked_taken == 0
    assert _greedy_accuracy(result.actor) > 0.9
    assert result.history[-1].mean_step_reward > result.history[0].mean_step_reward + 0.3
    assert all(s.value_loss == 0.0 for s in result.history)  # no critic is trained


def test_group_advantages_compare_members_of_a_group_only() -> None:
    # Two groups of two, one step: in each group the better member gets +1, the worse -1,
    # whatever the groups' levels (group 2's rewards are 100 higher).
    rewards = np.array([[1.0, 0.0, 101.0, 100.0]])
    dones = np.zeros((1, 4), bool)
    for mode in ("process", "outcome"):
        adv = group_advantages(rewards, dones, 2, mode, 0.9)
        np.testing.assert_allclose(adv, [[1.0, -1.0, 1.0, -1.0]], atol=1e-6)
    # process: a step's advantage sums the normalised rewards after it, discounted, within its episode.
    rewards = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    dones = np.array([[False, False], [True, True], [False, False]])
    adv = group_advantages(rewards, dones, 2, "process", 0.5)
    np.testing.assert_allclose(adv[:, 0], [1.0 - 0.5, -1.0, 1.0], atol=1e-6)


def test_exploration_draws_only_allowed_actions() -> None:
    mask = np.zeros((4000, 6), bool)
    mask[:, [0, 4]] = True
    drawn = uniform_allowed(mask, torch.Generator().manual_seed(0))
    assert set(np.unique(drawn)) == {0, 4}


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the duplicates tool is not installed")
def test_the_trainers_share_code_rather_than_copy_it() -> None:
    trainers = ("ppo.py", "grpo.py", "dqn.py", "trainers.py")
    out = subprocess.run(
        ["duplicates", "--repo", str(ROOT / "training"), "--most", "200", "--seconds", "60"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    copies = []
    for row in (line for line in out.splitlines() if line.startswith("D")):
        sides = [part.split(":")[0] for part in row.split()[1:4:2]]  # "D1 a.py:1-9 ~ b.py:5-13 ..."
        if len(set(sides)) == 2 and all(side in trainers for side in sides):
            copies.append(row)
    assert "incomplete" not in out, out
    assert not copies, "six-line copies among the trainers:\n" + "\n".join(copies)
