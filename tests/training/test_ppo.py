"""PPO core: masked distribution, GAE, and a learning check on a small masked task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlscale.training.ppo import (
    ActorCritic,
    RewardScaler,
    compute_gae,
    constrained_reward,
    dual_step,
    masked_entropy,
    masked_log_probs,
    ppo_loss,
    run_ppo,
    sample_actions,
)
from rlscale.training.ppo_config import PpoConfig, SloConstraint
from rlscale.training.train import REPLICA_ONLY, clone_actor, hpa_actions


def test_masked_action_is_never_sampled_even_when_its_logit_dominates() -> None:
    logits = torch.tensor([[0.0, 50.0, 0.0, 0.0]]).repeat(5000, 1)
    mask = torch.tensor([[True, False, True, True]]).repeat(5000, 1)
    actions = sample_actions(masked_log_probs(logits, mask), torch.Generator().manual_seed(0))
    assert not (actions == 1).any()
    # The allowed actions are still all drawn (roughly uniformly: equal logits).
    counts = torch.bincount(actions, minlength=4)
    assert counts[1] == 0 and (counts[[0, 2, 3]] > 1400).all()


def test_log_probs_and_entropy_exclude_masked_actions() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True, False]])
    log_probs = masked_log_probs(logits, mask)
    assert torch.isneginf(log_probs[0, 1]) and torch.isneginf(log_probs[0, 3])
    allowed = torch.log_softmax(torch.tensor([1.0, 3.0]), dim=0)
    torch.testing.assert_close(log_probs[0, [0, 2]], allowed)
    entropy = masked_entropy(log_probs, mask)
    expected = -(allowed.exp() * allowed).sum()
    torch.testing.assert_close(entropy[0], expected)
    # Masked logits receive no gradient from the log-prob of an allowed action or the entropy.
    (log_probs[0, 2] + entropy[0]).backward()
    assert logits.grad is not None
    assert logits.grad[0, 1] == 0 and logits.grad[0, 3] == 0
    assert torch.isfinite(logits.grad).all()


def test_uniform_logits_give_log_k_entropy_over_allowed_actions() -> None:
    mask = torch.tensor([[True] * 3 + [False] * 60])
    log_probs = masked_log_probs(torch.zeros(1, 63), mask)
    assert math.isclose(float(masked_entropy(log_probs, mask)[0]), math.log(3), rel_tol=1e-6)


def test_gae_matches_a_hand_computed_example() -> None:
    # gamma 0.9, lambda 0.8; the episode ends after step 1, so step 1 does not bootstrap.
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [1.5]])
    dones = np.array([[False], [True], [False]])
    adv, ret = compute_gae(rewards, values, dones, np.array([2.0]), 0.9, 0.8)
    # t=2: 3 + 0.9*2.0 - 1.5 = 3.3
    # t=1: 2 - 1.0 = 1.0 (terminal)
    # t=0: delta 1 + 0.9*1.0 - 0.5 = 1.4; + 0.9*0.8*1.0 = 2.12
    np.testing.assert_allclose(adv[:, 0], [2.12, 1.0, 3.3])
    np.testing.assert_allclose(ret[:, 0], [2.62, 2.0, 4.8])


def test_gae_with_lambda_one_is_the_discounted_return_minus_value() -> None:
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(6, 2))
    values = rng.normal(size=(6, 2))
    dones = np.zeros((6, 2), bool)
    last = rng.normal(size=2)
    adv, _ = compute_gae(rewards, values, dones, last, 0.95, 1.0)
    for t in range(6):
        ret = sum(0.95 ** (k - t) * rewards[k] for k in range(t, 6)) + 0.95 ** (6 - t) * last
        np.testing.assert_allclose(adv[t], ret - values[t])


def test_clipped_loss_ignores_masked_actions_and_is_finite() -> None:
    torch.manual_seed(0)
    model = ActorCritic(5, 4, (8,))
    obs = torch.randn(16, 5)
    mask = torch.ones(16, 4, dtype=torch.bool)
    mask[:, 3] = False
    with torch.no_grad():
        log_probs = masked_log_probs(model(obs), mask)
        actions = sample_actions(log_probs, torch.Generator().manual_seed(0))
        old = log_probs.gather(-1, actions[:, None]).squeeze(-1)
        values = model.value(obs)
    parts = ppo_loss(model, PpoConfig(), obs, mask, actions, old, values, torch.randn(16), torch.randn(16))
    assert torch.isfinite(parts.loss)
    # Same policy as the one that acted: the ratio is 1 and nothing is clipped.
    assert parts.approx_kl == pytest.approx(0.0, abs=1e-7) and parts.clip_fraction == 0.0
    parts.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class _MaskedBandit:
    """A contextual bandit: the right action is 1 when obs[0] > 0 else 2.

    Action 3 pays the most but is always masked, so a correct masked PPO must never take it
    and must still learn the context rule. Episodes last 8 steps (terminated).
    """

    n_actions = 4
    n_features = 3

    def __init__(self, n_envs: int, seed: int) -> None:
        self.n_envs = n_envs
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n_envs, int)
        self.masked_taken = 0

    def _draw(self) -> np.ndarray:
        self.obs = self.rng.uniform(-1, 1, size=(self.n_envs, self.n_features)).astype(np.float32)
        return self.obs

    def reset(self) -> np.ndarray:
        return self._draw()

    def action_masks(self) -> np.ndarray:
        mask = np.ones((self.n_envs, self.n_actions), bool)
        mask[:, 3] = False
        return mask

    def step(self, actions: np.ndarray):  # type: ignore[no-untyped-def]
        self.masked_taken += int((actions == 3).sum())
        best = np.where(self.obs[:, 0] > 0, 1, 2)
        reward = np.where(actions == best, 1.0, 0.0) + np.where(actions == 3, 5.0, 0.0)
        self.t += 1
        terminated = self.t >= 8
        self.t[terminated] = 0
        truncated = np.zeros(self.n_envs, bool)
        return self._draw(), reward, terminated, truncated, {}


def test_ppo_learns_a_masked_contextual_task_and_never_takes_a_masked_action() -> None:
    env = _MaskedBandit(8, seed=0)
    cfg = PpoConfig(total_steps=12_288, n_envs=8, n_steps=64, hidden=(16,), checkpoint_every=0, learning_rate=3e-3)
    result = run_ppo(env, cfg, n_features=3, n_actions=4, seed=0, progress=False, tensorboard=False)
    assert env.masked_taken == 0
    obs = torch.from_numpy(np.random.default_rng(5).uniform(-1, 1, size=(2000, 3)).astype(np.float32))
    with torch.no_grad():
        greedy = masked_log_probs(result.model(obs), torch.tensor([[True, True, True, False]])).argmax(-1).numpy()
    accuracy = float(np.mean(greedy == np.where(obs[:, 0].numpy() > 0, 1, 2)))
    assert accuracy > 0.9
    assert result.history[-1].mean_step_reward > result.history[0].mean_step_reward


def test_training_is_reproducible_from_the_seed() -> None:
    cfg = PpoConfig(total_steps=1024, n_envs=4, n_steps=64, hidden=(8,), checkpoint_every=0)
    runs = [
        run_ppo(_MaskedBandit(4, seed=3), cfg, n_features=3, n_actions=4, seed=7, progress=False, tensorboard=False)
        for _ in range(2)
    ]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_rejects_a_minibatch_count_that_does_not_divide_the_batch() -> None:
    with pytest.raises(ValueError, match="n_minibatches"):
        PpoConfig(n_envs=3, n_steps=5, n_minibatches=4)


def test_reward_scaling_keeps_signs_and_is_invariant_to_the_reward_unit() -> None:
    rng = np.random.default_rng(2)
    rewards = rng.normal(0.5, 2.0, size=(300, 4))
    dones = rng.random((300, 4)) < 0.02
    small, large = RewardScaler(4, 0.98), RewardScaler(4, 0.98)
    a = np.array([small(rewards[t], dones[t]) for t in range(300)])
    b = np.array([large(1000.0 * rewards[t], dones[t]) for t in range(300)])
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert np.array_equal(np.sign(a), np.sign(rewards))
    # The discounted return it tracks ends up with roughly unit scale.
    assert 0.1 < float(np.std(a)) < 10.0


def test_hpa_targets_map_to_the_nearest_replica_only_action() -> None:
    from rlscale.policy.actions import ACTIONS
    from rlscale.policy.limits import ScalingLimits
    from rlscale.policy.mask import ScalingState, action_mask

    state = ScalingState.single(
        replicas=4,
        cpu_limit_m=1000,
        memory_limit_mib=1024,
        metrics_ok=True,
        memory_utilization=0.3,
        now=10_000.0,
        last_scale_up_at=None,
        last_scale_down_at=None,
        last_limit_change_at=None,
    )
    mask = action_mask(ScalingLimits(), state)
    outcomes = np.repeat(mask.replicas[:, REPLICA_ONLY], 5, axis=0)
    allowed = np.repeat(mask.allowed[:, REPLICA_ONLY], 5, axis=0)
    chosen = hpa_actions(outcomes, allowed, np.array([4, 5, 8, 2, 3]))
    assert [ACTIONS[i].name for i in chosen] == ["noop", "replicas+1", "replicas+100%", "replicas-50%", "replicas-1"]
    assert all(not ACTIONS[i].changes_limits for i in REPLICA_ONLY)


def test_cloning_learns_a_teacher_that_depends_on_the_observation() -> None:
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(4000, 3)).astype(np.float32)
    masks = np.ones((4000, 4), bool)
    actions = np.where(obs[:, 1] > 0, 2, 0).astype(np.int64)
    model = ActorCritic(3, 4, (16,))
    accuracy = clone_actor(model, obs, masks, actions, epochs=5, batch_size=256, learning_rate=1e-2, rng=rng)
    assert accuracy > 0.95


def test_a_cooler_policy_is_sharper_but_keeps_the_argmax() -> None:
    logits = torch.tensor([[1.0, 1.5, 0.2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    warm, cool = masked_log_probs(logits, mask), masked_log_probs(logits / 0.25, mask)
    assert warm.argmax() == cool.argmax() == 1
    assert masked_entropy(cool, mask) < masked_entropy(warm, mask)


def test_the_slo_multiplier_rises_over_budget_falls_under_it_and_stays_bounded() -> None:
    c = SloConstraint(violation_rate=0.01, lambda_init=5.0, lambda_lr=0.1, lambda_max=50.0)
    assert dual_step(5.0, 0.03, c) > 5.0 > dual_step(5.0, 0.0, c)
    assert dual_step(5.0, 0.01, c) == pytest.approx(5.0)
    lam = 5.0
    for _ in range(200):
        lam = dual_step(lam, 1.0, c)  # far over budget: bounded, one e-fold per step at most
    assert lam == 50.0
    assert dual_step(1e-6, 0.0, c) >= 1e-6


def test_the_constrained_reward_charges_cores_violations_and_changes() -> None:
    c = SloConstraint(cost_per_core=0.1, replica_change=0.02, limit_change=0.2)
    info = {
        "slo_violated": np.array([False, True, False]),
        "cpu_allocated_m": np.array([2000.0, 2000.0, 500.0]),
        "replicas_changed": np.array([False, False, True]),
        "limits_changed": np.array([False, False, True]),
    }
    reward, violated = constrained_reward(info, 3.0, c)
    assert list(violated) == [0.0, 1.0, 0.0]
    assert reward == pytest.approx([-0.2, -0.2 - 3.0, -0.05 - 0.02 - 0.2])


def test_ppo_with_an_slo_constraint_logs_its_multiplier_and_uses_the_constrained_reward() -> None:
    class _Env(_MaskedBandit):
        def step(self, actions: np.ndarray):  # type: ignore[no-untyped-def]
            obs, reward, terminated, truncated, _ = super().step(actions)
            info = {
                "slo_violated": actions == 2,  # choosing 2 "breaks the SLO"
                "cpu_allocated_m": np.where(actions == 1, 4000.0, 1000.0),  # choosing 1 costs more
                "replicas_changed": np.zeros(self.n_envs, bool),
                "limits_changed": np.zeros(self.n_envs, bool),
            }
            return obs, reward * 0.0 + 7.0, terminated, truncated, info  # the env's own reward is ignored

    cfg = PpoConfig(
        total_steps=2048, n_envs=4, n_steps=64, hidden=(8,), checkpoint_every=0,
        slo_constraint=SloConstraint(violation_rate=0.05, lambda_init=1.0, lambda_lr=0.2),
    )  # fmt: skip
    result = run_ppo(_Env(4, seed=1), cfg, n_features=3, n_actions=4, seed=0, progress=False, tensorboard=False)
    rows = result.history
    assert all(r.slo_lambda is not None and r.slo_violation_rate is not None for r in rows)
    assert rows[0].mean_step_reward < 0  # −cost − λ·violations, not the env's +7
    assert rows[0].slo_violation_rate > 0.05 and rows[0].slo_lambda > 1.0  # over budget at first: λ rises
