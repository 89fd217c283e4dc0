"""PPO with invalid-action masking over the vectorised simulator, in the style of CleanRL's ``ppo.py``.

One file holds the whole algorithm so it can be read top to bottom: the actor-critic
network, the masked categorical distribution, GAE, the clipped loss, rollout collection
and the update loop. The safety mask the operator enforces is the mask PPO trains with:
forbidden actions get a logit of ``-inf`` before the softmax, so they are never sampled,
carry no probability mass in the log-probabilities or the entropy, and receive no
gradient. The policy therefore learns only among actions it will actually be allowed to
take, and the exported logits need no knowledge of the mask (``policy/`` applies it).

Why a compact loop of our own rather than sb3-contrib's ``MaskablePPO`` is explained, with
measurements, in docs/training.md. The warm start (cloning the HPA) and the pipeline that
turns a config into an exported model live in :mod:`rlscale.training.train`.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rlscale.training.ppo_config import PpoConfig, SloConstraint

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


class VecEnv(Protocol):
    """What PPO needs from a vectorised environment (``rlscale.training.sim.VectorSim`` fits).

    ``step`` auto-resets finished environments; where an episode was cut by the time
    limit, ``info["final_obs"]`` (if given) holds the last observation so the return can
    be bootstrapped from its value instead of treated as an ending.
    """

    n_envs: int

    def reset(self) -> Any: ...

    def step(self, actions: npt.NDArray[np.int64]) -> tuple[Any, Any, Any, Any, dict[str, Any]]: ...

    def action_masks(self) -> BoolArray: ...


# --------------------------------------------------------------------------- network


def _layer(d_in: int, d_out: int, std: float) -> nn.Linear:
    """Orthogonal weights and zero bias, as in CleanRL and SB3 (stabler early learning)."""
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(d_in: int, hidden: Sequence[int], d_out: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [_layer(d_in, width, float(np.sqrt(2.0))), nn.Tanh()]
        d_in = width
    layers.append(_layer(d_in, d_out, out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs; only the actor is exported.

    Separate trunks keep the exported model small and keep value-loss gradients out of the
    policy. The actor's last layer starts near zero (std 0.01), so the initial policy is
    close to uniform over the allowed actions.
    """

    def __init__(self, n_features: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.n_features, self.n_actions, self.hidden = n_features, n_actions, tuple(hidden)
        self.actor = _mlp(n_features, hidden, n_actions, 0.01)
        self.critic = _mlp(n_features, hidden, 1, 1.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The logits: what the ONNX export computes."""
        return self.actor(obs)


# --------------------------------------------------------------------------- masked distribution


def masked_log_probs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probabilities with forbidden actions at exactly ``-inf`` (probability 0).

    ``mask`` is boolean, True = allowed; every row must allow at least one action (the
    no-op always is).
    """
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def masked_entropy(log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy over the allowed actions only; masked terms are exactly 0.

    The ``-inf`` is replaced *before* multiplying: ``where(mask, p · log p, 0)`` would still
    back-propagate ``0 · -inf = nan`` through the unselected branch.
    """
    finite = torch.where(mask, log_probs, torch.zeros_like(log_probs))
    return -(log_probs.exp() * finite).sum(-1)


def sample_actions(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one action per row; a masked action has probability 0 and is never drawn."""
    return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------- advantages


def compute_gae(
    rewards: npt.NDArray[np.floating[Any]],
    values: npt.NDArray[np.floating[Any]],
    dones: npt.NDArray[np.bool_],
    last_values: npt.NDArray[np.floating[Any]],
    gamma: float,
    gae_lambda: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Generalised advantage estimation over a rollout of shape ``(T, n_envs)``.

    ``dones[t]`` is True when the episode ended with step ``t`` (the next observation
    belongs to a new episode, so nothing is bootstrapped across it). ``last_values`` is the
    critic's value of the observation after the last step. Returns ``(advantages,
    returns)`` with ``returns = advantages + values`` (the critic's regression target).
    """
    n_steps = rewards.shape[0]
    adv = np.zeros(rewards.shape, dtype=np.float64)
    last_gae = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(n_steps)):
        next_values = last_values if t == n_steps - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t].astype(np.float64)
        delta = rewards[t] + gamma * next_values * nonterminal - values[t]
        last_gae = delta + gamma * gae_lambda * nonterminal * last_gae
        adv[t] = last_gae
    return adv, adv + values.astype(np.float64)


class RewardScaler:
    """Scale rewards by a running standard deviation of each env's discounted return.

    The same statistic as gymnasium's ``NormalizeReward`` wrapper and SB3's
    ``VecNormalize(norm_reward=True)``: without it the critic regresses onto returns whose
    size depends on the reward weights (and a weight change would need new learning
    rates). Only the *scale* changes, never the sign or the ordering of returns, so the
    optimal policy is unchanged; and only the critic and advantages see scaled rewards.
    """

    def __init__(self, n_envs: int, gamma: float, epsilon: float = 1e-8) -> None:
        self.gamma, self.epsilon = gamma, epsilon
        self.returns = np.zeros(n_envs)
        self.mean, self.var, self.count = 0.0, 1.0, epsilon

    def __call__(self, rewards: npt.NDArray[np.float64], dones: BoolArray) -> npt.NDArray[np.float64]:
        self.returns = self.returns * self.gamma + rewards
        self._update(self.returns)
        self.returns[dones] = 0.0
        return rewards / np.sqrt(self.var + self.epsilon)

    def _update(self, x: npt.NDArray[np.float64]) -> None:
        """Chan et al.'s parallel update of the running mean and variance."""
        batch_mean, batch_var, n = float(x.mean()), float(x.var()), x.size
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total


# --------------------------------------------------------------------------- loss


@dataclass(frozen=True)
class LossParts:
    loss: torch.Tensor
    value_loss_tensor: torch.Tensor
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float


def ppo_loss(
    model: ActorCritic,
    cfg: PpoConfig,
    obs: torch.Tensor,
    masks: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    ent_coef: float | None = None,
    temperature: float = 1.0,
) -> LossParts:
    """The clipped surrogate + (clipped) value loss − entropy bonus on one minibatch.

    ``ent_coef`` overrides ``cfg.ent_coef`` (the loop passes the annealed value);
    ``temperature`` divides the logits (the same value the rollout sampled with).
    """
    log_probs = masked_log_probs(model(obs) / temperature, masks)
    new_log_prob = log_probs.gather(-1, actions[:, None]).squeeze(-1)
    log_ratio = new_log_prob - old_log_probs
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = float(((ratio - 1.0) - log_ratio).mean())  # the low-variance estimator (Schulman)
        clip_fraction = float(((ratio - 1.0).abs() > cfg.clip_coef).float().mean())
    if cfg.norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    pg_loss = torch.max(
        -advantages * ratio, -advantages * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
    ).mean()
    new_values = model.value(obs)
    if cfg.clip_vloss:
        clipped = old_values + torch.clamp(new_values - old_values, -cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max((new_values - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((new_values - returns) ** 2).mean()
    entropy = masked_entropy(log_probs, masks).mean()
    ent = cfg.ent_coef if ent_coef is None else ent_coef
    loss = pg_loss - ent * entropy + cfg.vf_coef * v_loss
    return LossParts(
        loss, v_loss, float(pg_loss.detach()), float(v_loss.detach()), float(entropy.detach()), approx_kl, clip_fraction
    )


# --------------------------------------------------------------------------- loop


def constrained_reward(
    info: dict[str, Any], lam: float, c: SloConstraint
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The Lagrangian reward of one step and its violation indicator, from the simulator's ``info``."""
    violated = np.asarray(info["slo_violated"], dtype=np.float64)
    cost = np.asarray(info["cpu_allocated_m"], dtype=np.float64) / 1000.0 * c.cost_per_core
    changes = c.replica_change * np.asarray(info["replicas_changed"], dtype=np.float64)
    changes += c.limit_change * np.asarray(info["limits_changed"], dtype=np.float64)
    return -cost - lam * violated - changes, violated


def dual_step(lam: float, violation_rate: float, c: SloConstraint) -> float:
    """One dual-ascent step on λ, in log space (λ spans orders of magnitude), within (0, lambda_max]."""
    step = c.lambda_lr * (violation_rate - c.violation_rate) / c.violation_rate
    return float(min(max(lam * math.exp(max(min(step, 1.0), -1.0)), 1e-6), c.lambda_max))


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; returns the numpy generator PPO uses for minibatches."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


@dataclass
class Rollout:
    """One rollout's buffers, shape ``(T, n_envs, ...)``."""

    obs: FloatArray
    masks: BoolArray
    actions: npt.NDArray[np.int64]
    log_probs: npt.NDArray[np.float32]
    values: npt.NDArray[np.float32]
    rewards: npt.NDArray[np.float64]  # as learned from (scaled when norm_reward)
    raw_rewards: npt.NDArray[np.float64]  # as the environment gave them
    dones: BoolArray

    @classmethod
    def empty(cls, n_steps: int, n_envs: int, n_features: int, n_actions: int) -> Rollout:
        return cls(
            obs=np.zeros((n_steps, n_envs, n_features), np.float32),
            masks=np.zeros((n_steps, n_envs, n_actions), bool),
            actions=np.zeros((n_steps, n_envs), np.int64),
            log_probs=np.zeros((n_steps, n_envs), np.float32),
            values=np.zeros((n_steps, n_envs), np.float32),
            rewards=np.zeros((n_steps, n_envs), np.float64),
            raw_rewards=np.zeros((n_steps, n_envs), np.float64),
            dones=np.zeros((n_steps, n_envs), bool),
        )


@dataclass
class UpdateStats:
    """What one update logs (a CSV row and TensorBoard scalars)."""

    update: int
    global_step: int
    learning_rate: float
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    mean_step_reward: float
    episode_return: float | None
    episodes: int
    steps_per_second: float
    slo_violation_rate: float | None = None  # with an SLO constraint: the rollout's share of violating intervals
    slo_lambda: float | None = None  # … and the multiplier after this update's dual step

    def row(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {}
        for k, v in self.__dict__.items():
            out[k] = "" if v is None else v
        return out


@dataclass
class PpoResult:
    model: ActorCritic
    history: list[UpdateStats] = field(default_factory=list)
    wall_seconds: float = 0.0
    global_step: int = 0
    stopped_early: bool = False  # ``on_update`` asked to stop before ``cfg.n_updates``


def _obs(x: Any) -> FloatArray:
    """Accept ``obs`` or a Gymnasium-style ``(obs, info)`` pair from ``reset``."""
    if isinstance(x, tuple):
        x = x[0]
    return np.asarray(x, dtype=np.float32)


def _final_obs(info: dict[str, Any], truncated: BoolArray) -> tuple[npt.NDArray[np.intp], FloatArray] | None:
    """Rows cut by the time limit and their last observations, if the env reports them."""
    final = info.get("final_obs")
    if final is None or not truncated.any():
        return None
    rows = np.flatnonzero(truncated)
    return rows, np.stack([np.asarray(final[i], dtype=np.float32) for i in rows])


class _Logger:
    """CSV rows plus TensorBoard scalars for every update."""

    def __init__(self, out_dir: Path | None, tensorboard: bool) -> None:
        self._csv_file = None
        self._writer: csv.DictWriter[str] | None = None
        self._tb: Any = None
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._csv_file = (out_dir / "progress.csv").open("w", newline="")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, stats: UpdateStats) -> None:
        row = stats.row()
        if self._csv_file is not None:
            if self._writer is None:
                self._writer = csv.DictWriter(self._csv_file, fieldnames=list(row))
                self._writer.writeheader()
            self._writer.writerow(row)
            self._csv_file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("update", "global_step") and value != "":
                    self._tb.add_scalar(f"ppo/{key}", float(value), stats.global_step)

    def close(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        if self._tb is not None:
            self._tb.close()


def save_checkpoint(
    path: Path,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    cfg: PpoConfig,
    update: int,
    global_step: int,
    training_info: dict[str, Any] | None = None,
) -> None:
    """A checkpoint holds everything needed to export the actor (with its provenance) or resume training."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ppo": cfg.model_dump(mode="json"),
            "n_features": model.n_features,
            "n_actions": model.n_actions,
            "update": update,
            "global_step": global_step,
            "training_info": training_info,
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[ActorCritic, dict[str, Any]]:
    """The actor-critic stored in a checkpoint, and the checkpoint's other fields."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    cfg = PpoConfig.model_validate(data["ppo"])
    model = ActorCritic(int(data["n_features"]), int(data["n_actions"]), cfg.hidden)
    model.load_state_dict(data["model"])
    return model, data


def run_ppo(
    env: VecEnv,
    cfg: PpoConfig,
    *,
    n_features: int,
    n_actions: int,
    seed: int,
    out_dir: Path | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    on_update: Callable[[UpdateStats, ActorCritic], bool | None] | None = None,
    checkpoint_info: dict[str, Any] | None = None,
    model: ActorCritic | None = None,
    critic_only_updates: int = 0,
) -> PpoResult:
    """Train an actor-critic on ``env`` (already seeded by the caller) with masked PPO.

    With ``out_dir`` set, writes ``progress.csv``, ``tensorboard/`` and
    ``checkpoints/update_NNNNN.pt`` (every ``cfg.checkpoint_every`` updates and at the end),
    each carrying ``checkpoint_info`` (the provenance an export from it will record).
    ``on_update(stats, model)`` is called after every update (benchmarks snapshot the model);
    if it returns True, training stops there — the hook a wall-clock budget uses
    (:mod:`rlscale.training.finetune`), checked between updates so that no update is cut in half.
    ``model`` continues from a given (e.g. warm-started) network; for its first
    ``critic_only_updates`` updates only the critic learns.
    """
    torch.set_num_threads(cfg.torch_threads)
    rng = seed_everything(seed)
    sampler = torch.Generator().manual_seed(seed)
    model = model if model is not None else ActorCritic(n_features, n_actions, cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-5)
    logger = _Logger(out_dir, tensorboard)
    buf = Rollout.empty(cfg.n_steps, cfg.n_envs, n_features, n_actions)
    result = PpoResult(model)

    next_obs = _obs(env.reset())
    if next_obs.shape != (cfg.n_envs, n_features):
        raise ValueError(f"env observations have shape {next_obs.shape}, expected ({cfg.n_envs}, {n_features})")
    next_mask = np.asarray(env.action_masks(), dtype=bool)
    ep_return = np.zeros(cfg.n_envs)
    scaler = RewardScaler(cfg.n_envs, cfg.gamma) if cfg.norm_reward else None
    constraint = cfg.slo_constraint
    lam = constraint.lambda_init if constraint is not None else 0.0
    start = time.perf_counter()
    global_step = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.n_updates * cfg.batch_size, unit="step", desc="ppo", dynamic_ncols=True)
    try:
        for update in range(1, cfg.n_updates + 1):
            progress_frac = (update - 1) / cfg.n_updates
            lr = cfg.learning_rate * (1.0 - progress_frac) if cfg.anneal_lr else cfg.learning_rate
            for group in optimizer.param_groups:
                group["lr"] = lr
            ent_coef = cfg.ent_coef
            if cfg.ent_coef_final is not None:
                ent_coef += (cfg.ent_coef_final - cfg.ent_coef) * progress_frac
            temperature = 1.0
            if cfg.temperature_final is not None:
                temperature += (cfg.temperature_final - 1.0) * progress_frac
            finished: list[float] = []
            violations = 0.0
            t0 = time.perf_counter()
            # ---- rollout
            model.eval()
            for t in range(cfg.n_steps):
                buf.obs[t], buf.masks[t] = next_obs, next_mask
                with torch.no_grad():
                    obs_t = torch.from_numpy(next_obs)
                    log_probs = masked_log_probs(model(obs_t) / temperature, torch.from_numpy(next_mask))
                    action = sample_actions(log_probs, sampler)
                    buf.log_probs[t] = log_probs.gather(-1, action[:, None]).squeeze(-1).numpy()
                    buf.values[t] = model.value(obs_t).numpy()
                buf.actions[t] = action.numpy()
                obs, reward, terminated, truncated, info = env.step(buf.actions[t])
                reward = np.asarray(reward, dtype=np.float64)
                if constraint is not None:
                    reward, violated = constrained_reward(info, lam, constraint)
                    violations += float(violated.sum())
                terminated = np.asarray(terminated, dtype=bool)
                truncated = np.asarray(truncated, dtype=bool)
                ep_return += reward
                done = terminated | truncated
                buf.raw_rewards[t] = reward
                if scaler is not None:
                    reward = scaler(reward, done)
                cut = _final_obs(info, truncated & ~terminated)
                if cut is not None:  # bootstrap time-limit cuts from the last observation's value
                    rows, final = cut
                    with torch.no_grad():
                        reward[rows] += cfg.gamma * model.value(torch.from_numpy(final)).numpy()
                buf.rewards[t], buf.dones[t] = reward, done
                for i in np.flatnonzero(done):
                    finished.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                next_obs, next_mask = _obs(obs), np.asarray(env.action_masks(), dtype=bool)
            global_step += cfg.batch_size
            violation_rate = violations / cfg.batch_size
            if constraint is not None:
                lam = dual_step(lam, violation_rate, constraint)
            with torch.no_grad():
                last_values = model.value(torch.from_numpy(next_obs)).numpy()
            adv, returns = compute_gae(buf.rewards, buf.values, buf.dones, last_values, cfg.gamma, cfg.gae_lambda)

            # ---- update
            model.train()
            b_obs = torch.from_numpy(buf.obs.reshape(cfg.batch_size, n_features))
            b_masks = torch.from_numpy(buf.masks.reshape(cfg.batch_size, n_actions))
            b_actions = torch.from_numpy(buf.actions.reshape(-1))
            b_log_probs = torch.from_numpy(buf.log_probs.reshape(-1))
            b_values = torch.from_numpy(buf.values.reshape(-1))
            b_adv = torch.from_numpy(adv.reshape(-1).astype(np.float32))
            b_returns = torch.from_numpy(returns.reshape(-1).astype(np.float32))
            parts: LossParts | None = None
            for _epoch in range(cfg.update_epochs):
                order = rng.permutation(cfg.batch_size)
                stop = False
                for lo in range(0, cfg.batch_size, cfg.minibatch_size):
                    idx = torch.from_numpy(order[lo : lo + cfg.minibatch_size])
                    parts = ppo_loss(
                        model,
                        cfg,
                        b_obs[idx],
                        b_masks[idx],
                        b_actions[idx],
                        b_log_probs[idx],
                        b_values[idx],
                        b_adv[idx],
                        b_returns[idx],
                        ent_coef,
                        temperature,
                    )
                    optimizer.zero_grad()
                    loss = parts.loss if update > critic_only_updates else cfg.vf_coef * parts.value_loss_tensor
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    if cfg.target_kl is not None and parts.approx_kl > cfg.target_kl:
                        stop = True
                        break
                if stop:
                    break
            assert parts is not None
            var_y = float(np.var(returns))
            explained = float("nan") if var_y == 0 else 1.0 - float(np.var(returns - buf.values)) / var_y
            stats = UpdateStats(
                update=update,
                global_step=global_step,
                learning_rate=lr,
                policy_loss=parts.policy_loss,
                value_loss=parts.value_loss,
                entropy=parts.entropy,
                approx_kl=parts.approx_kl,
                clip_fraction=parts.clip_fraction,
                explained_variance=explained,
                mean_step_reward=float(buf.raw_rewards.mean()),
                episode_return=float(np.mean(finished)) if finished else None,
                episodes=len(finished),
                steps_per_second=cfg.batch_size / max(time.perf_counter() - t0, 1e-9),
                slo_violation_rate=violation_rate if constraint is not None else None,
                slo_lambda=lam if constraint is not None else None,
            )
            result.history.append(stats)
            logger.log(stats)
            halt = bool(on_update(stats, model)) if on_update is not None else False
            if bar is not None:
                bar.update(cfg.batch_size)
                bar.set_postfix(reward=f"{stats.mean_step_reward:.3f}", entropy=f"{stats.entropy:.2f}")
            last = update == cfg.n_updates or halt
            if out_dir is not None and ((cfg.checkpoint_every and update % cfg.checkpoint_every == 0) or last):
                path = out_dir / "checkpoints" / f"update_{update:05d}.pt"
                save_checkpoint(path, model, optimizer, cfg, update, global_step, checkpoint_info)
            if halt and update < cfg.n_updates:
                result.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    model.eval()
    result.wall_seconds = time.perf_counter() - start
    result.global_step = global_step
    return result
