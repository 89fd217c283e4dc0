"""GRPO: group-relative policy optimisation, PPO without a critic.

Shao et al. (DeepSeekMath, 2024) drop PPO's value network: for each starting state they
sample a *group* of rollouts, and a rollout's advantage is its reward relative to the
group's — normalised by the group's mean and standard deviation — instead of relative to
a learned baseline. Here a group is ``group_size`` simulated services cloned from one
state (:meth:`rlscale.training.sim.VectorSim.copy_env`) that share their random draws
(``env_seeds``), so two members differ only by the actions their policy sampled:

1. every update, each group's members take the state of the group's first member (which
   carries on from where it was, so the groups walk through whole episodes);
2. each member plays ``horizon`` steps with the current policy (masked, sampled);
3. advantages: with ``process`` supervision each step's reward is normalised across the
   group at that step and a step's advantage is the discounted sum of the normalised
   rewards that follow it within the episode (DeepSeekMath §4.1.3); with ``outcome`` each
   member's whole-horizon return is normalised and every step of it gets that value;
4. the update is PPO's clipped surrogate with the same masking and entropy bonus —
   literally :func:`rlscale.training.ppo.ppo_loss` with the value term weighted 0 — and no KL
   penalty to a reference policy (β = 0, as in DAPO and Dr. GRPO: there is no pretrained
   reference to stay near).

Masking, sampling, the loss, GAE (here with zero values and λ = 1: a discounted sum),
the rollout buffers, seeding and logging are PPO's code; only the grouping is new.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.training.ppo import (
    ActorCritic,
    Rollout,
    UpdateStats,
    VecEnv,
    _obs,
    compute_gae,
    ppo_loss,
    seed_everything,
)
from rlscale.training.ppo_config import PpoConfig
from rlscale.training.trainers import EpisodeReturns, RunSpec, Session, Trained, act_sampled, optimiser_step


class GroupEnv(VecEnv, Protocol):
    """A vectorised env whose envs can take each other's state (``VectorSim`` fits)."""

    def copy_env(self, src: npt.ArrayLike) -> None: ...


class GrpoConfig(BaseModel):
    """GRPO's hyperparameters; the clipping, entropy and optimiser settings mirror PPO's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_steps: int = Field(1_000_000, ge=1, description="Environment steps over all envs (every member counts).")
    n_groups: int = Field(8, ge=1, description="Starting states per update.")
    group_size: int = Field(8, ge=2, description="Rollouts per starting state.")
    horizon: int = Field(64, ge=1, description="Steps each rollout plays.")
    advantage: Literal["process", "outcome"] = Field("process", description="Per-step or whole-rollout normalisation.")
    gamma: float = Field(0.98, gt=0, le=1, description="Discount of the normalised rewards that follow a step.")
    learning_rate: float = Field(3e-4, gt=0, lt=1)
    anneal_lr: bool = True
    update_epochs: int = Field(4, ge=1)
    n_minibatches: int = Field(4, ge=1)
    clip_coef: float = Field(0.2, gt=0, lt=1)
    ent_coef: float = Field(0.01, ge=0)
    ent_coef_final: float | None = Field(0.001, ge=0)
    temperature_final: float | None = Field(
        None, gt=0, le=1, description="Anneal the softmax temperature from 1 to this (PPO's option of the same name)."
    )
    max_grad_norm: float = Field(0.5, gt=0)
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    torch_threads: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _batch_divides(self) -> GrpoConfig:
        if self.batch_size % self.n_minibatches:
            raise ValueError(f"n_minibatches ({self.n_minibatches}) must divide the batch ({self.batch_size})")
        return self

    @property
    def n_envs(self) -> int:
        return self.n_groups * self.group_size

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.horizon

    @property
    def n_updates(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def loss_config(self) -> PpoConfig:
        """PPO's loss settings for :func:`~rlscale.training.ppo.ppo_loss`: no value term, advantages normalised."""
        return PpoConfig(
            n_envs=self.n_envs,
            n_steps=self.horizon,
            n_minibatches=self.n_minibatches,
            clip_coef=self.clip_coef,
            ent_coef=self.ent_coef,
            vf_coef=0.0,
            norm_adv=False,
            hidden=self.hidden,
        )


def group_advantages(
    rewards: npt.NDArray[np.float64], dones: npt.NDArray[np.bool_], group_size: int, mode: str, gamma: float
) -> npt.NDArray[np.float64]:
    """Advantages ``(T, n_envs)`` from rewards ``(T, n_envs)`` whose envs come in consecutive groups.

    ``process``: ``r̃ = (r − mean_group) / std_group`` per step, then the discounted sum of
    ``r̃`` from each step to the end of its episode (GAE with zero values and λ = 1).
    ``outcome``: the normalised whole-horizon return of each member, at every step.
    A group whose members all did the same gets zero advantage (nothing to learn from it).
    """
    t_len, n = rewards.shape
    g = rewards.reshape(t_len, n // group_size, group_size)
    if mode == "outcome":
        total = g.sum(axis=0)
        norm = (total - total.mean(-1, keepdims=True)) / (total.std(-1, keepdims=True) + 1e-8)
        return np.broadcast_to(norm.reshape(1, n), (t_len, n)).copy()
    norm = ((g - g.mean(-1, keepdims=True)) / (g.std(-1, keepdims=True) + 1e-8)).reshape(t_len, n)
    zeros = np.zeros_like(norm)
    adv, _ = compute_gae(norm, zeros, dones, zeros[0], gamma, 1.0)
    return adv


def run_grpo(env: GroupEnv, cfg: GrpoConfig, spec: RunSpec) -> Trained:
    """Train a policy with GRPO on ``env`` (``cfg.n_envs`` envs, consecutive groups of ``cfg.group_size``)."""
    if env.n_envs != cfg.n_envs:
        raise ValueError(f"env has {env.n_envs} envs, the config {cfg.n_envs} ({cfg.n_groups} × {cfg.group_size})")
    n_features, n_actions = spec.n_features, spec.n_actions
    torch.set_num_threads(cfg.torch_threads)
    rng = seed_everything(spec.seed)
    sampler = torch.Generator().manual_seed(spec.seed)
    # PPO's network; only the actor is optimised (and exported) — the critic is never used.
    model = ActorCritic(n_features, n_actions, cfg.hidden)
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=cfg.learning_rate, eps=1e-5)
    loss_cfg = cfg.loss_config()
    leaders = np.repeat(np.arange(cfg.n_groups) * cfg.group_size, cfg.group_size)
    buf = Rollout.empty(cfg.horizon, cfg.n_envs, n_features, n_actions)
    returns = EpisodeReturns(cfg.n_envs)
    obs = _obs(env.reset())
    none = torch.zeros(cfg.batch_size)
    update = 0
    with Session("grpo", model.actor, spec, cfg.n_updates * cfg.batch_size) as session:
        for update in range(1, cfg.n_updates + 1):
            frac = (update - 1) / cfg.n_updates
            lr = cfg.learning_rate * (1.0 - frac) if cfg.anneal_lr else cfg.learning_rate
            for group in optimizer.param_groups:
                group["lr"] = lr
            ent = cfg.ent_coef + ((cfg.ent_coef_final - cfg.ent_coef) * frac if cfg.ent_coef_final is not None else 0.0)
            temp = 1.0 + ((cfg.temperature_final - 1.0) * frac if cfg.temperature_final is not None else 0.0)
            t0 = time.perf_counter()
            env.copy_env(leaders)  # every member starts from its group leader's state
            obs = obs[leaders]
            model.eval()
            for t in range(cfg.horizon):
                mask = np.asarray(env.action_masks(), dtype=bool)
                buf.obs[t], buf.masks[t] = obs, mask
                buf.actions[t], buf.log_probs[t] = act_sampled(model.actor, obs, mask, sampler, temp)
                next_obs, reward, terminated, truncated, _ = env.step(buf.actions[t])
                buf.raw_rewards[t] = np.asarray(reward, dtype=np.float64)
                buf.dones[t] = np.asarray(terminated, bool) | np.asarray(truncated, bool)
                returns.add(buf.raw_rewards[t], buf.dones[t])
                obs = _obs(next_obs)
            adv = group_advantages(buf.raw_rewards, buf.dones, cfg.group_size, cfg.advantage, cfg.gamma)
            model.train()
            flat: dict[str, torch.Tensor] = {
                "obs": torch.from_numpy(buf.obs.reshape(cfg.batch_size, n_features)),
                "masks": torch.from_numpy(buf.masks.reshape(cfg.batch_size, n_actions)),
                "actions": torch.from_numpy(buf.actions.reshape(-1)),
                "old_log_probs": torch.from_numpy(buf.log_probs.reshape(-1)),
                "advantages": torch.from_numpy(adv.reshape(-1).astype(np.float32)),
            }
            parts = None
            for _epoch in range(cfg.update_epochs):
                for idx in np.split(rng.permutation(cfg.batch_size), cfg.n_minibatches):
                    i = torch.from_numpy(idx)
                    mb = {k: v[i] for k, v in flat.items()}
                    parts = ppo_loss(
                        model, loss_cfg, mb["obs"], mb["masks"], mb["actions"], mb["old_log_probs"], none[i],
                        mb["advantages"], none[i], ent, temp,
                    )  # fmt: skip
                    optimiser_step(optimizer, parts.loss, model.actor.parameters(), cfg.max_grad_norm)
            assert parts is not None
            finished = returns.pop()
            stats = UpdateStats(
                update=update,
                global_step=update * cfg.batch_size,
                learning_rate=lr,
                policy_loss=parts.policy_loss,
                value_loss=0.0,
                entropy=parts.entropy,
                approx_kl=parts.approx_kl,
                clip_fraction=parts.clip_fraction,
                explained_variance=float("nan"),
                mean_step_reward=float(buf.raw_rewards.mean()),
                episode_return=float(np.mean(finished)) if finished else None,
                episodes=len(finished),
                steps_per_second=cfg.batch_size / max(time.perf_counter() - t0, 1e-9),
            )
            if session.record(stats, cfg.batch_size):
                break
    return session.finish(update * cfg.batch_size)


__all__ = ["GroupEnv", "GrpoConfig", "group_advantages", "run_grpo"]
