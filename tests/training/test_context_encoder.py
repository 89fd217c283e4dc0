"""The gated context encoder (memory): its recurrence, PPO's sequence update, export, fine-tune read-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import N_FEATURES
from rlscale.training.export import export_actor, random_observations
from rlscale.training.finetune import actor_critic_from_onnx
from rlscale.training.ppo import ActorCritic, Rollout, UpdateBatches, as_sequences, masked_log_probs, run_ppo
from rlscale.training.ppo_config import PpoConfig


class _RecallCue:
    """A task only memory solves: the first observation of an episode shows a cue (±1), later ones do not.

    Every step pays 1 for action 1 if the cue was positive, action 2 if negative. A
    feed-forward policy sees the cue on one step of 8 and can earn at most
    (1 + 7 · 0.5) / 8 ≈ 0.56 per step; a policy that remembers earns 1.
    """

    n_features = 3
    n_actions = 3

    def __init__(self, n_envs: int, seed: int) -> None:
        self.n_envs = n_envs
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n_envs, int)
        self.cue = self.rng.choice([-1.0, 1.0], size=n_envs)

    def _obs(self) -> np.ndarray:
        obs = self.rng.uniform(-0.1, 0.1, size=(self.n_envs, self.n_features)).astype(np.float32)
        obs[:, 0] = np.where(self.t == 0, self.cue, 0.0)
        obs[:, 1] = (self.t == 0).astype(np.float32)
        return obs

    def reset(self) -> np.ndarray:
        return self._obs()

    def action_masks(self) -> np.ndarray:
        return np.ones((self.n_envs, self.n_actions), bool)

    def step(self, actions: np.ndarray):  # type: ignore[no-untyped-def]
        right = np.where(self.cue > 0, 1, 2)
        reward = (actions == right).astype(np.float64)
        self.t += 1
        terminated = self.t >= 8
        self.t[terminated] = 0
        self.cue[terminated] = self.rng.choice([-1.0, 1.0], size=int(terminated.sum()))
        return self._obs(), reward, terminated, np.zeros(self.n_envs, bool), {}


def _train(context_size: int) -> float:
    cfg = PpoConfig(
        total_steps=16_384,
        n_envs=16,
        n_steps=64,
        seq_len=16,
        hidden=(32,),
        context_size=context_size,
        learning_rate=3e-3,
        checkpoint_every=0,
    )
    result = run_ppo(_RecallCue(16, seed=0), cfg, n_features=3, n_actions=3, seed=0, progress=False, tensorboard=False)
    return float(np.mean([s.mean_step_reward for s in result.history[-4:]]))


def test_memory_solves_a_recall_task_a_feed_forward_policy_cannot() -> None:
    with_memory, without = _train(16), _train(0)
    assert without < 0.65  # the feed-forward ceiling is 0.5625 (+ sampling noise)
    assert with_memory > 0.85


def test_unroll_is_the_step_by_step_recurrence_with_resets() -> None:
    torch.manual_seed(0)
    model = ActorCritic(5, 4, (8,), context_size=6)
    obs = torch.randn(7, 3, 5)
    starts = torch.zeros(7, 3, dtype=torch.bool)
    starts[4, 1] = True
    c0 = torch.rand(3, 6)
    trunk, last = model.unroll(obs, c0, starts)
    c = c0.clone()
    for t in range(7):
        c = torch.where(starts[t, :, None], torch.zeros_like(c), c)
        h = torch.tanh(model.encoder.input(obs[t]))  # type: ignore[union-attr]
        g = torch.sigmoid(model.encoder.gate(torch.cat([obs[t], c], -1)))  # type: ignore[union-attr]
        c = g * h + (1 - g) * c
        torch.testing.assert_close(trunk[t], c)
    torch.testing.assert_close(last, c)
    assert float(trunk.detach().abs().max()) <= 1.0  # a convex mix of tanh values


def test_the_sequence_update_replays_exactly_what_the_rollout_computed() -> None:
    """Before any weight changes, the minibatches' recomputed log-probabilities equal the rollout's.

    This is what makes the PPO ratio start at 1: an off-by-one in the stored contexts or the
    episode starts would show here as a ratio ≠ 1.
    """
    env = _RecallCue(4, seed=1)
    cfg = PpoConfig(total_steps=256, n_envs=4, n_steps=32, seq_len=8, hidden=(8,), context_size=5, n_minibatches=2)
    torch.manual_seed(0)
    model = ActorCritic(3, 3, (8,), context_size=5)
    buf = Rollout.empty(cfg.n_steps, cfg.n_envs, 3, 3, cfg.context_size)
    obs, context, start = env.reset(), model.initial_context(4), np.ones(4, bool)
    for t in range(cfg.n_steps):
        buf.obs[t], buf.masks[t], buf.starts[t], buf.contexts[t] = obs, env.action_masks(), start, context
        with torch.no_grad():
            trunk = model.encode(torch.from_numpy(obs), context.masked_fill(torch.from_numpy(start)[:, None], 0.0))
            log_probs = masked_log_probs(model(trunk), torch.from_numpy(buf.masks[t]))
        action = torch.distributions.Categorical(logits=log_probs).sample()
        buf.actions[t] = action.numpy()
        buf.log_probs[t] = log_probs.gather(-1, action[:, None]).squeeze(-1).numpy()
        context = trunk
        obs, _, terminated, _, _ = env.step(buf.actions[t])
        start = np.asarray(terminated)
    assert buf.starts[1:].any()  # episodes end inside sequences: the resets are exercised
    zeros = np.zeros((cfg.n_steps, cfg.n_envs))
    batches = UpdateBatches(buf, zeros, zeros, cfg)
    seen = 0
    for mb in batches.shuffled(np.random.default_rng(0)):
        with torch.no_grad():
            again = masked_log_probs(model(mb.trunk(model)), mb.masks).gather(-1, mb.actions[:, None]).squeeze(-1)
        torch.testing.assert_close(again, mb.log_probs, rtol=0, atol=1e-6)
        seen += len(again)
    assert seen == cfg.batch_size


def test_as_sequences_keeps_each_column_consecutive_steps_of_one_env() -> None:
    a = np.arange(8 * 3).reshape(8, 3)  # a[t, env] = 3t + env
    s = as_sequences(a, 4)
    assert s.shape == (4, 6)
    for col in range(6):
        steps = (s[:, col] - s[0, col]) // 3
        assert list(steps) == [0, 1, 2, 3] and len(set(s[:, col] % 3)) == 1


def test_config_needs_whole_sequences() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        PpoConfig(n_steps=100, seq_len=16, context_size=8)
    with pytest.raises(ValueError, match="sequences"):
        PpoConfig(n_envs=3, n_steps=16, seq_len=16, n_minibatches=2, context_size=8)
    PpoConfig(n_steps=100, seq_len=16)  # no encoder: seq_len is not used


def test_a_recurrent_model_exports_steps_and_reads_back_for_fine_tuning() -> None:
    torch.manual_seed(3)
    model = ActorCritic(N_FEATURES, N_ACTIONS, (16, 16), context_size=12)
    with torch.no_grad():  # non-zero biases, so the read-back must find them
        for p in model.parameters():
            p.add_(0.05)
    data, parity = export_actor(model.policy_module(), {"config": {"ppo": {"hidden": [16, 16], "context_size": 12}}})
    assert parity <= 1e-4
    policy = PolicyModel.from_bytes(data)
    assert policy.context_size == 12
    obs = random_observations(20, seed=4)
    # Stepping through time carries the context: the second step's logits depend on the first observation.
    logits0, c1 = policy.step(obs[:1])
    logits_a, _ = policy.step(obs[1:2], c1)
    logits_b, _ = policy.step(obs[1:2], None)
    assert not np.allclose(logits_a, logits_b)
    np.testing.assert_array_equal(policy.logits(obs[:1]), logits0)
    back = actor_critic_from_onnx(data, seed=0, hidden=(16, 16))
    assert back.context_size == 12
    again, _ = export_actor(back.policy_module(), {})
    ctx = np.random.default_rng(0).uniform(-1, 1, (20, 12)).astype(np.float32)
    for a, b in zip(PolicyModel.from_bytes(again).step(obs, ctx), policy.step(obs, ctx), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
