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


class ContextEncoder(nn.Module):
    """Seed 001's gated context encoder: a learned running summary of what the policy has seen.

    ``h_t = tanh(W_s s_t + b_s)``, ``g_t = σ(W_g [s_t, c_{t−1}] + b_g)``,
    ``c_t = g_t ⊙ h_t + (1 − g_t) ⊙ c_{t−1}``. Each unit of the context decides, from what it
    sees now and what it holds, how much of the present to take in: a slow unit averages load
    over many intervals (a level), a fast one tracks the last few (a ramp). Chosen over an LSTM
    because it is one gate instead of four (a decision stays a few small matrix products),
    its context is a convex mix of ``tanh`` values and so stays in ``[-1, 1]`` whatever runs,
    and its ONNX graph is Gemm/Tanh/Sigmoid/Mul/Add, which any runtime executes.
    """

    def __init__(self, n_features: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.input = _layer(n_features, size, float(np.sqrt(2.0)))
        self.gate = _layer(n_features + size, size, 1.0)

    def forward(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.input(obs))
        g = torch.sigmoid(self.gate(torch.cat([obs, context], dim=-1)))
        return g * h + (1.0 - g) * context


class RecurrentActor(nn.Module):
    """What a model with an encoder exports: ``(obs, context_in) → (logits, context_out)``."""

    def __init__(self, encoder: ContextEncoder, actor: nn.Module) -> None:
        super().__init__()
        self.encoder, self.actor = encoder, actor

    def forward(self, obs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.encoder(obs, context)
        return self.actor(c), c


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs, optionally behind a shared context encoder; only the actor is exported.

    Separate trunks keep the exported model small and keep value-loss gradients out of the
    policy's MLP. The actor's last layer starts near zero (std 0.01), so the initial policy is
    close to uniform over the allowed actions.

    With ``context_size > 0`` both heads read the encoder's context ``c_t`` instead of the
    bare observation (the *trunk input*); without, the trunk input is the observation. The
    critic shares the encoder (as in CleanRL's recurrent PPO): the value loss is what
    teaches the context to hold what predicts the future.
    """

    def __init__(
        self, n_features: int, n_actions: int, hidden: Sequence[int] = (64, 64), context_size: int = 0
    ) -> None:
        super().__init__()
        self.n_features, self.n_actions, self.hidden = n_features, n_actions, tuple(hidden)
        self.context_size = context_size
        self.encoder = ContextEncoder(n_features, context_size) if context_size else None
        trunk = context_size or n_features
        self.actor = _mlp(trunk, hidden, n_actions, 0.01)
        self.critic = _mlp(trunk, hidden, 1, 1.0)

    def initial_context(self, n: int) -> torch.Tensor:
        """The context of a controller that has seen nothing yet (zeros; width 0 without an encoder)."""
        return torch.zeros(n, self.context_size)

    def encode(self, obs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The trunk input for one step: the new context ``c_t``, or ``obs`` itself without an encoder."""
        return obs if self.encoder is None else self.encoder(obs, context)

    def unroll(
        self, obs: torch.Tensor, context: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk inputs over a sequence ``obs`` of shape ``(L, B, F)`` from ``context`` ``(B, C)``.

        ``starts[t]`` (``(L, B)`` bool) marks the first step of an episode: the context is
        zeroed there, exactly as the rollout did. Returns ``(trunk (L, B, ·), last context)``.
        """
        if self.encoder is None:
            return obs, context
        out = []
        for t in range(obs.shape[0]):
            context = self.encoder(obs[t], context.masked_fill(starts[t, :, None], 0.0))
            out.append(context)
        return torch.stack(out), context

    def value(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.critic(trunk).squeeze(-1)

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        """The logits from the trunk input (see :meth:`encode`); without an encoder, what the ONNX export computes."""
        return self.actor(trunk)

    def policy_module(self) -> nn.Module:
        """The module the ONNX export traces: the actor MLP, or the encoder and actor together."""
        return self.actor if self.encoder is None else RecurrentActor(self.encoder, self.actor)


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
    starts: BoolArray  # the step opened an episode (the context was zeroed before it)
    contexts: FloatArray  # the context carried *into* each step, ``(T, n_envs, context_size)``

    @classmethod
    def empty(cls, n_steps: int, n_envs: int, n_features: int, n_actions: int, context_size: int = 0) -> Rollout:
        return cls(
            obs=np.zeros((n_steps, n_envs, n_features), np.float32),
            masks=np.zeros((n_steps, n_envs, n_actions), bool),
            actions=np.zeros((n_steps, n_envs), np.int64),
            log_probs=np.zeros((n_steps, n_envs), np.float32),
            values=np.zeros((n_steps, n_envs), np.float32),
            rewards=np.zeros((n_steps, n_envs), np.float64),
            raw_rewards=np.zeros((n_steps, n_envs), np.float64),
            dones=np.zeros((n_steps, n_envs), bool),
            starts=np.zeros((n_steps, n_envs), bool),
            contexts=np.zeros((n_steps, n_envs, context_size), np.float32),
        )


def as_sequences(a: npt.NDArray[Any], seq_len: int) -> npt.NDArray[Any]:
    """``(T, n_envs, ...)`` → ``(seq_len, n_sequences, ...)``: each column ``seq_len`` consecutive steps of one env."""
    t, n = a.shape[:2]
    chunks = a.reshape(t // seq_len, seq_len, n, *a.shape[2:]).swapaxes(0, 1)
    return chunks.reshape(seq_len, (t // seq_len) * n, *a.shape[2:])


@dataclass(frozen=True)
class Minibatch:
    """One PPO minibatch. Per-sample tensors are flat ``(b, ...)``; with an encoder, ``obs`` and
    ``starts`` keep their sequence axis ``(L, b', ...)`` and ``contexts`` holds each sequence's
    starting context, so that :meth:`trunk` recomputes the context under the current weights."""

    obs: torch.Tensor
    masks: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    adv: torch.Tensor
    returns: torch.Tensor
    starts: torch.Tensor | None = None
    contexts: torch.Tensor | None = None

    def trunk(self, model: ActorCritic) -> torch.Tensor:
        """What the heads read for every sample, in the order of the flat tensors."""
        if self.contexts is None or self.starts is None:
            return self.obs
        trunk, _ = model.unroll(self.obs, self.contexts, self.starts)
        return trunk.reshape(-1, trunk.shape[-1])


class UpdateBatches:
    """A rollout cut into PPO's minibatches.

    Without an encoder: single steps, shuffled (CleanRL's scheme). With one: sequences of
    ``seq_len`` consecutive steps, shuffled as units, each replayed from the context the
    rollout carried into its first step — truncated back-propagation through time with
    stored starting states (R2D2's "stored state"), which keeps the minibatches as varied
    as the feed-forward ones while the gradient still reaches ``seq_len`` steps back.
    """

    def __init__(
        self, buf: Rollout, adv: npt.NDArray[np.float64], returns: npt.NDArray[np.float64], cfg: PpoConfig
    ) -> None:
        self.recurrent = cfg.context_size > 0
        self.n_minibatches = cfg.n_minibatches
        arrays: dict[str, npt.NDArray[Any]] = {
            "obs": buf.obs,
            "masks": buf.masks,
            "actions": buf.actions,
            "log_probs": buf.log_probs,
            "values": buf.values,
            "adv": adv.astype(np.float32),
            "returns": returns.astype(np.float32),
        }
        if self.recurrent:
            arrays |= {"starts": buf.starts, "contexts": buf.contexts}
            self.seq_len = cfg.seq_len
            self.tensors = {
                k: torch.from_numpy(np.ascontiguousarray(as_sequences(v, cfg.seq_len))) for k, v in arrays.items()
            }
            self.n_units = cfg.n_sequences
        else:
            self.tensors = {k: torch.from_numpy(v.reshape(cfg.batch_size, *v.shape[2:])) for k, v in arrays.items()}
            self.n_units = cfg.batch_size

    def shuffled(self, rng: np.random.Generator) -> list[Minibatch]:
        """One epoch's minibatches, in a fresh random order."""
        order = rng.permutation(self.n_units)
        size = self.n_units // self.n_minibatches
        out = []
        for lo in range(0, self.n_units, size):
            idx = torch.from_numpy(order[lo : lo + size])
            if not self.recurrent:
                out.append(Minibatch(**{k: v[idx] for k, v in self.tensors.items()}))
                continue
            flat = {
                k: self.tensors[k][:, idx].flatten(0, 1) for k in self.tensors if k not in ("obs", "starts", "contexts")
            }
            out.append(
                Minibatch(
                    obs=self.tensors["obs"][:, idx],
                    starts=self.tensors["starts"][:, idx],
                    contexts=self.tensors["contexts"][0, idx],
                    **flat,
                )
            )
        return out


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
            "context_size": model.context_size,
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
    model = ActorCritic(int(data["n_features"]), int(data["n_actions"]), cfg.hidden, int(data.get("context_size", 0)))
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
    model = model if model is not None else ActorCritic(n_features, n_actions, cfg.hidden, cfg.context_size)
    if model.context_size != cfg.context_size:
        raise ValueError(f"the model's context is {model.context_size} wide, the config says {cfg.context_size}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-5)
    logger = _Logger(out_dir, tensorboard)
    buf = Rollout.empty(cfg.n_steps, cfg.n_envs, n_features, n_actions, cfg.context_size)
    result = PpoResult(model)

    next_obs = _obs(env.reset())
    if next_obs.shape != (cfg.n_envs, n_features):
        raise ValueError(f"env observations have shape {next_obs.shape}, expected ({cfg.n_envs}, {n_features})")
    next_mask = np.asarray(env.action_masks(), dtype=bool)
    context = model.initial_context(cfg.n_envs)
    next_start = np.ones(cfg.n_envs, dtype=bool)
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
                buf.obs[t], buf.masks[t], buf.starts[t], buf.contexts[t] = next_obs, next_mask, next_start, context
                with torch.no_grad():
                    start_t = torch.from_numpy(next_start)[:, None]
                    trunk = model.encode(torch.from_numpy(next_obs), context.masked_fill(start_t, 0.0))
                    log_probs = masked_log_probs(model(trunk) / temperature, torch.from_numpy(next_mask))
                    action = sample_actions(log_probs, sampler)
                    buf.log_probs[t] = log_probs.gather(-1, action[:, None]).squeeze(-1).numpy()
                    buf.values[t] = model.value(trunk).numpy()
                if model.encoder is not None:
                    context = trunk
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
                        final_trunk = model.encode(torch.from_numpy(final), context[torch.from_numpy(rows)])
                        reward[rows] += cfg.gamma * model.value(final_trunk).numpy()
                buf.rewards[t], buf.dones[t] = reward, done
                for i in np.flatnonzero(done):
                    finished.append(float(ep_return[i]))
                    ep_return[i] = 0.0
                next_obs, next_mask, next_start = _obs(obs), np.asarray(env.action_masks(), dtype=bool), done
            global_step += cfg.batch_size
            violation_rate = violations / cfg.batch_size
            if constraint is not None:
                lam = dual_step(lam, violation_rate, constraint)
            with torch.no_grad():
                start_t = torch.from_numpy(next_start)[:, None]
                last_trunk = model.encode(torch.from_numpy(next_obs), context.masked_fill(start_t, 0.0))
                last_values = model.value(last_trunk).numpy()
            adv, returns = compute_gae(buf.rewards, buf.values, buf.dones, last_values, cfg.gamma, cfg.gae_lambda)

            # ---- update
            model.train()
            batches = UpdateBatches(buf, adv, returns, cfg)
            parts: LossParts | None = None
            for _epoch in range(cfg.update_epochs):
                stop = False
                for mb in batches.shuffled(rng):
                    parts = ppo_loss(
                        model,
                        cfg,
                        mb.trunk(model),
                        mb.masks,
                        mb.actions,
                        mb.log_probs,
                        mb.values,
                        mb.adv,
                        mb.returns,
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
