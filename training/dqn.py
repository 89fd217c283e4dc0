"""DQN with invalid-action masking: the value-based baseline of the orchestration study.

A Q-network over the same features and the same 63 actions as PPO, trained from a replay
buffer with a target network and ε-greedy exploration (Mnih et al. 2015), with the
double-DQN target (van Hasselt et al. 2016). The safety mask enters everywhere a choice is
made: exploration draws uniformly among *allowed* actions, the greedy action and the
bootstrap's next action are arg-maxes over allowed actions only, so a forbidden action's
Q-value is never learned from and never used. The exported model is the Q-network itself:
``policy/`` masks its outputs and takes the arg-max, which is exactly the greedy policy.

Masking, sampling, seeding, reward scaling, logging and export are PPO's
(:mod:`rlscale.training.ppo`, :mod:`rlscale.training.trainers`); only what is DQN's own is here.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rlscale.training.ppo import RewardScaler, UpdateStats, VecEnv, _final_obs, _mlp, _obs, seed_everything
from rlscale.training.trainers import (
    EpisodeReturns,
    RunSpec,
    Session,
    Trained,
    greedy_masked,
    optimiser_step,
    uniform_allowed,
)


class DqnConfig(BaseModel):
    """DQN's hyperparameters (defaults: CleanRL's ``dqn.py`` scaled to this problem's step budget)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_steps: int = Field(500_000, ge=1, description="Environment steps over all parallel environments.")
    n_envs: int = Field(16, ge=1, le=4096)
    buffer_size: int = Field(200_000, ge=1, description="Transitions the replay buffer holds (oldest overwritten).")
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(2.5e-4, gt=0, lt=1)
    gamma: float = Field(0.98, gt=0, le=1, description="Discount per decision interval (PPO's).")
    learning_starts: int = Field(10_000, ge=0, description="Environment steps of pure exploration before learning.")
    train_every: int = Field(1, ge=1, description="Vector steps between gradient steps.")
    target_update_every: int = Field(500, ge=1, description="Gradient steps between copies into the target network.")
    epsilon_start: float = Field(1.0, ge=0, le=1)
    epsilon_final: float = Field(0.05, ge=0, le=1)
    exploration_fraction: float = Field(0.3, gt=0, le=1, description="Share of training over which ε decays.")
    double_q: bool = Field(
        True, description="Double-DQN target: online net picks the next action, target net values it."
    )
    norm_reward: bool = Field(True, description="Scale rewards as PPO does (running std of the discounted return).")
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    max_grad_norm: float = Field(10.0, gt=0)
    torch_threads: int = Field(1, ge=1, le=64)
    log_every: int = Field(64, ge=1, description="Vector steps per logged row.")

    def epsilon(self, step: int) -> float:
        """Linear decay from ``epsilon_start`` to ``epsilon_final`` over ``exploration_fraction`` of training."""
        frac = min(step / max(self.exploration_fraction * self.total_steps, 1.0), 1.0)
        return self.epsilon_start + (self.epsilon_final - self.epsilon_start) * frac


class ReplayBuffer:
    """A ring of transitions (obs, action, reward, next obs, next mask, terminal) in numpy."""

    def __init__(self, capacity: int, n_features: int, n_actions: int) -> None:
        self.capacity, self.size, self._at = capacity, 0, 0
        self.obs = np.zeros((capacity, n_features), np.float32)
        self.next_obs = np.zeros((capacity, n_features), np.float32)
        self.next_mask = np.zeros((capacity, n_actions), bool)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminal = np.zeros(capacity, np.float32)

    def add(self, **batch: npt.NDArray[Any]) -> None:
        """Append a batch of transitions (one per env); keys are the buffer's array names."""
        n = len(batch["actions"])
        rows = (self._at + np.arange(n)) % self.capacity
        for name, values in batch.items():
            getattr(self, name)[rows] = values
        self._at = int((self._at + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=n)
        names = ("obs", "next_obs", "next_mask", "actions", "rewards", "terminal")
        return {name: torch.from_numpy(getattr(self, name)[idx]) for name in names}


@dataclass
class DqnStats(UpdateStats):
    """PPO's log row (``value_loss`` is the TD loss; no policy loss, KL or clipping) plus ε."""

    epsilon: float = 0.0


def td_loss(q_net: nn.Module, target_net: nn.Module, batch: dict[str, torch.Tensor], cfg: DqnConfig) -> torch.Tensor:
    """Huber loss between Q(s, a) and r + γ·Q_target(s', a*), a* the best *allowed* next action."""
    q = q_net(batch["obs"]).gather(-1, batch["actions"][:, None]).squeeze(-1)
    with torch.no_grad():
        chooser = q_net if cfg.double_q else target_net
        next_action = greedy_masked(chooser(batch["next_obs"]), batch["next_mask"])
        next_q = target_net(batch["next_obs"]).gather(-1, next_action[:, None]).squeeze(-1)
        target = batch["rewards"] + cfg.gamma * (1.0 - batch["terminal"]) * next_q
    return nn.functional.smooth_l1_loss(q, target)


def run_dqn(env: VecEnv, cfg: DqnConfig, spec: RunSpec) -> Trained:
    """Train a masked Q-network on ``env``; the returned ``actor`` is the Q-network (greedy = masked arg-max).

    An episode cut by the time limit is bootstrapped from its last observation (``info["final_obs"]``)
    with only the no-op allowed there — the one action known to be allowed in any state.
    """
    if env.n_envs != cfg.n_envs:
        raise ValueError(f"env has {env.n_envs} envs, the config {cfg.n_envs}")
    torch.set_num_threads(cfg.torch_threads)
    rng = seed_everything(spec.seed)
    sampler = torch.Generator().manual_seed(spec.seed)
    q_net = _mlp(spec.n_features, cfg.hidden, spec.n_actions, 1.0)
    target_net = copy.deepcopy(q_net)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg.learning_rate)
    buffer = ReplayBuffer(cfg.buffer_size, spec.n_features, spec.n_actions)
    scaler = RewardScaler(cfg.n_envs, cfg.gamma) if cfg.norm_reward else None
    returns = EpisodeReturns(cfg.n_envs)
    noop_only = np.zeros(spec.n_actions, bool)
    noop_only[0] = True
    obs = _obs(env.reset())
    mask = np.asarray(env.action_masks(), dtype=bool)
    n_vec_steps = max(1, cfg.total_steps // cfg.n_envs)
    t_log = time.perf_counter()
    grad_steps, losses, rewards, global_step = 0, [], [], 0
    with Session("dqn", q_net, spec, n_vec_steps * cfg.n_envs) as session:
        for step in range(1, n_vec_steps + 1):
            eps = cfg.epsilon(global_step)
            with torch.no_grad():
                greedy = greedy_masked(q_net(torch.from_numpy(obs)), torch.from_numpy(mask)).numpy()
            explore = rng.random(cfg.n_envs) < eps
            action = np.where(explore, uniform_allowed(mask, sampler), greedy).astype(np.int64)
            next_obs, reward, terminated, truncated, info = env.step(action)
            next_obs, reward = _obs(next_obs), np.asarray(reward, dtype=np.float64)
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            next_mask = np.asarray(env.action_masks(), dtype=bool)
            store_obs, store_mask = next_obs.copy(), next_mask.copy()
            cut = _final_obs(info, truncated & ~terminated)
            if cut is not None:
                store_obs[cut[0]], store_mask[cut[0]] = cut[1], noop_only
            returns.add(reward, terminated | truncated)
            rewards.append(float(reward.mean()))
            learned = scaler(reward, terminated | truncated) if scaler is not None else reward
            buffer.add(
                obs=obs, actions=action, rewards=learned, next_obs=store_obs, next_mask=store_mask, terminal=terminated
            )
            obs, mask = next_obs, next_mask
            global_step += cfg.n_envs
            if global_step >= cfg.learning_starts and buffer.size >= cfg.batch_size and step % cfg.train_every == 0:
                loss = td_loss(q_net, target_net, buffer.sample(cfg.batch_size, rng), cfg)
                optimiser_step(optimizer, loss, q_net.parameters(), cfg.max_grad_norm)
                losses.append(float(loss.detach()))
                grad_steps += 1
                if grad_steps % cfg.target_update_every == 0:
                    target_net.load_state_dict(q_net.state_dict())
            if step % cfg.log_every and step != n_vec_steps:
                continue
            finished, now = returns.pop(), time.perf_counter()
            stats = DqnStats(
                update=step // cfg.log_every,
                global_step=global_step,
                learning_rate=cfg.learning_rate,
                policy_loss=0.0,
                value_loss=float(np.mean(losses)) if losses else float("nan"),
                entropy=0.0,
                approx_kl=0.0,
                clip_fraction=0.0,
                explained_variance=float("nan"),
                mean_step_reward=float(np.mean(rewards)),
                episode_return=float(np.mean(finished)) if finished else None,
                episodes=len(finished),
                steps_per_second=len(rewards) * cfg.n_envs / max(now - t_log, 1e-9),
                epsilon=eps,
            )
            if session.record(stats, len(rewards) * cfg.n_envs):
                break
            losses, rewards, t_log = [], [], now
    return session.finish(global_step)


__all__ = ["DqnConfig", "ReplayBuffer", "run_dqn", "td_loss"]
