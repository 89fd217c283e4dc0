"""Train a policy end to end: clone the HPA, improve on it with PPO, export it to ONNX.

:mod:`rlscale.training.ppo` is the algorithm alone, one file to read top to bottom. This
module is what ``rlscale train`` runs around it:

* the **warm start** — behaviour cloning of the HPA teacher along its own rollouts in the
  simulator, so PPO starts from a policy that already scales sensibly (docs/training.md);
* the **pipeline** — build the training mix, warm-start, run PPO, record the provenance
  written into the model, and export the actor with its parity check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rlscale.training.ppo import (
    ActorCritic,
    BoolArray,
    FloatArray,
    PpoResult,
    UpdateStats,
    _obs,
    as_sequences,
    masked_log_probs,
    run_ppo,
    seed_everything,
)
from rlscale.training.ppo_config import TrainConfig

# --------------------------------------------------------------------------- warm start (cloning the HPA)


def hpa_actions(replica_outcomes: npt.NDArray[np.int64], allowed: BoolArray, targets: npt.NDArray[np.int64]) -> Any:
    """The replica-only action whose masked outcome is nearest each HPA target.

    ``replica_outcomes``/``allowed`` are the mask's columns for the actions that leave the
    limits alone (:data:`REPLICA_ONLY`, no-op first), so ties go to the smaller move.
    """
    dist = np.abs(replica_outcomes - targets[:, None]).astype(np.float64)
    dist[~allowed] = np.inf
    return REPLICA_ONLY[np.argmin(dist, axis=1)]


def _replica_only() -> npt.NDArray[np.int64]:
    from rlscale.policy.actions import CPU_STEPS, MEMORY_STEPS

    return np.flatnonzero((CPU_STEPS == 0) & (MEMORY_STEPS == 0)).astype(np.int64)


#: Indices of the actions that change replicas only (the no-op first), in table order.
REPLICA_ONLY = _replica_only()


def teacher_rollouts(env: Any, teacher: Any, steps: int) -> tuple[FloatArray, BoolArray, npt.NDArray[np.int64]]:
    """Observations, masks and the HPA's choices (mapped onto the action table) along its own rollouts.

    ``env`` is a :class:`~rlscale.training.sim.VectorSim`; ``teacher`` an
    :class:`~rlscale.policy.baselines.HpaConfig`. Each env keeps its own HPA controller state
    (stabilisation window, behaviour-policy periods), reset with the episode.
    """
    from rlscale.policy.baselines import HpaState, hpa_recommend

    lim = env.config.limits
    states = [HpaState() for _ in range(env.n_envs)]
    obs = _obs(env.reset())
    out_obs, out_masks, out_actions = [], [], []
    for _ in range(max(1, steps // env.n_envs)):
        cols, mask = env.columns(), env.mask_result()
        targets = np.empty(env.n_envs, dtype=np.int64)
        for i, st in enumerate(states):
            util = float(cols["cpu_utilization"][i])
            targets[i], _ = hpa_recommend(
                teacher,
                st,
                current_replicas=int(env.replicas[i]),
                ready_replicas=int(cols["ready_replicas"][i]),
                utilization=None if np.isnan(util) else util,
                min_replicas=lim.min_replicas,
                max_replicas=lim.max_replicas,
                now=float(cols["timestamp"][i]),
            )
        actions = hpa_actions(mask.replicas[:, REPLICA_ONLY], mask.allowed[:, REPLICA_ONLY], targets)
        out_obs.append(obs)
        out_masks.append(mask.allowed.copy())
        out_actions.append(actions)
        before = env.replicas.copy()
        obs, _, terminated, truncated, info = env.step(actions)
        obs = _obs(obs)
        done = np.asarray(terminated) | np.asarray(truncated)
        for i, st in enumerate(states):
            if done[i]:
                states[i] = HpaState()
            else:
                st.record_change(teacher, float(cols["timestamp"][i]), int(info["replicas"][i] - before[i]))
    return np.concatenate(out_obs), np.concatenate(out_masks), np.concatenate(out_actions)


def clone_actor(
    model: ActorCritic,
    obs: FloatArray,
    masks: BoolArray,
    actions: npt.NDArray[np.int64],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
    n_envs: int = 1,
    seq_len: int = 16,
) -> float:
    """Behaviour cloning: maximise the masked log-probability of the teacher's actions.

    Returns the fraction of samples whose masked argmax is the teacher's action. A model
    with an encoder learns from sequences (``obs`` in :func:`teacher_rollouts`' time-major
    order over ``n_envs`` environments) like PPO's update does.
    """
    if model.encoder is not None:
        return _clone_sequences(
            model,
            obs,
            masks,
            actions,
            n_envs=n_envs,
            seq_len=seq_len,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            rng=rng,
        )
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=learning_rate)
    t_obs, t_masks, t_actions = torch.from_numpy(obs), torch.from_numpy(masks), torch.from_numpy(actions)
    n = len(actions)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(n))
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            log_probs = masked_log_probs(model(t_obs[idx]), t_masks[idx])
            loss = -log_probs.gather(-1, t_actions[idx, None]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        greedy = masked_log_probs(model(t_obs), t_masks).argmax(-1)
    return float((greedy == t_actions).float().mean())


def _clone_sequences(
    model: ActorCritic,
    obs: FloatArray,
    masks: BoolArray,
    actions: npt.NDArray[np.int64],
    *,
    n_envs: int,
    seq_len: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
) -> float:
    """Behaviour cloning through the context encoder: shuffled sequences, each from its stored starting context.

    The starting contexts are recomputed under the current weights at every epoch (one
    no-grad pass over each environment's whole series). Episode boundaries inside the
    teacher's series are not marked: the context just carries over, which a warm start can
    afford (PPO, which does mark them, follows).
    """
    steps = len(actions) // n_envs // seq_len * seq_len
    if steps == 0:
        raise ValueError(f"{len(actions)} samples over {n_envs} envs do not fill one sequence of {seq_len} steps")

    def series(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return a[: steps * n_envs].reshape(steps, n_envs, *a.shape[1:])

    def cut(a: npt.NDArray[Any]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(as_sequences(a, seq_len)))

    full_obs = torch.from_numpy(np.ascontiguousarray(series(obs)))
    no_starts = torch.zeros(steps, n_envs, dtype=torch.bool)
    s_obs, s_masks, s_actions = cut(series(obs)), cut(series(masks)), cut(series(actions))
    n_seq = s_obs.shape[1]
    per_batch = max(1, batch_size // seq_len)
    params = [*model.actor.parameters(), *(model.encoder.parameters() if model.encoder is not None else [])]
    optimizer = torch.optim.Adam(params, lr=learning_rate)

    def carried() -> torch.Tensor:
        with torch.no_grad():
            trunk, _ = model.unroll(full_obs, model.initial_context(n_envs), no_starts)
        return torch.cat([model.initial_context(n_envs)[None], trunk[:-1]])

    for _ in range(epochs):
        starts_ctx = cut(carried().numpy())[0]
        order = torch.from_numpy(rng.permutation(n_seq))
        for lo in range(0, n_seq, per_batch):
            idx = order[lo : lo + per_batch]
            trunk, _ = model.unroll(s_obs[:, idx], starts_ctx[idx], no_starts[:seq_len, : len(idx)])
            log_probs = masked_log_probs(model(trunk), s_masks[:, idx])
            loss = -log_probs.gather(-1, s_actions[:, idx, None]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        trunk, _ = model.unroll(full_obs, model.initial_context(n_envs), no_starts)
        greedy = masked_log_probs(model(trunk), torch.from_numpy(series(masks))).argmax(-1)
    return float((greedy == torch.from_numpy(series(actions))).float().mean())


# --------------------------------------------------------------------------- the training pipeline


@dataclass
class TrainOutcome:
    """A finished training run: the PPO result and the exported, checked ONNX model."""

    ppo: PpoResult
    onnx_bytes: bytes
    parity: float
    training_info: dict[str, Any]


def training_info(config: TrainConfig, data_provenance: dict[str, Any], result: PpoResult) -> dict[str, Any]:
    """The provenance written into the model: enough to retrain it and to know what it saw."""
    import datetime
    import importlib.metadata

    last = result.history[-1] if result.history else None
    return {
        "algorithm": "ppo (invalid-action masking), rlscale.training.ppo",
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "data": data_provenance,
        "global_step": result.global_step,
        "wall_seconds": round(result.wall_seconds, 1),
        "final_update": last.row() if last is not None else None,
        "versions": {
            "rlscale": importlib.metadata.version("rlscale"),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def warm_start(config: TrainConfig, loads: list[Any]) -> tuple[ActorCritic, dict[str, Any]]:
    """An actor-critic whose actor imitates the HPA on the training load (the critic is untouched)."""
    from rlscale.policy.actions import N_ACTIONS
    from rlscale.policy.baselines import HpaConfig
    from rlscale.policy.spec import N_FEATURES
    from rlscale.training.sim import VectorSim

    ws = config.warm_start
    assert ws is not None
    torch.set_num_threads(config.ppo.torch_threads)
    rng = seed_everything(config.seed)
    model = ActorCritic(N_FEATURES, N_ACTIONS, config.ppo.hidden, config.ppo.context_size)
    t0 = time.perf_counter()
    teacher = HpaConfig(target_utilization=ws.teacher_target_utilization)
    env = VectorSim(config.sim, loads, n_envs=ws.n_envs, seed=config.seed + 1_000_003)
    obs, masks, actions = teacher_rollouts(env, teacher, ws.steps)
    accuracy = clone_actor(
        model,
        obs,
        masks,
        actions,
        epochs=ws.epochs,
        batch_size=ws.batch_size,
        learning_rate=ws.learning_rate,
        rng=rng,
        n_envs=ws.n_envs,
        seq_len=config.ppo.seq_len,
    )
    return model, {
        "teacher": f"hpa(target_utilization={ws.teacher_target_utilization})",
        "samples": len(actions),
        "clone_accuracy": round(accuracy, 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_training(
    config: TrainConfig,
    loads: list[Any],
    data_provenance: dict[str, Any],
    *,
    model: ActorCritic | None,
    critic_only_updates: int,
    out_dir: Path | None,
    progress: bool,
    tensorboard: bool,
    on_update: Callable[[UpdateStats, ActorCritic], bool | None] | None,
) -> PpoResult:
    """PPO in the simulator on ``loads`` with ``config``: what training and fine-tuning both run.

    Checkpoints carry the seed, the resolved config and ``data_provenance``, so an export
    from any of them records where it came from.
    """
    from rlscale.policy.actions import N_ACTIONS
    from rlscale.policy.spec import N_FEATURES
    from rlscale.training.sim import VectorSim

    env = VectorSim(config.sim, loads, n_envs=config.ppo.n_envs, seed=config.seed)
    return run_ppo(
        env,
        config.ppo,
        n_features=N_FEATURES,
        n_actions=N_ACTIONS,
        seed=config.seed,
        out_dir=out_dir,
        progress=progress,
        tensorboard=tensorboard,
        checkpoint_info={"seed": config.seed, "config": config.model_dump(mode="json"), "data": data_provenance},
        model=model,
        critic_only_updates=critic_only_updates,
        on_update=on_update,
    )


def train(
    config: TrainConfig,
    out_dir: Path | None = None,
    *,
    progress: bool = True,
    tensorboard: bool = True,
    on_update: Callable[[UpdateStats, ActorCritic], bool | None] | None = None,
) -> TrainOutcome:
    """Train a policy from scratch on the configured data and export it (not written anywhere).

    Training sees only ``training_mix`` data: generated series and, if configured, the
    training windows of extra trace files. ``on_update`` is passed to :func:`run_ppo`
    (``bench/train_time.py`` snapshots the model through it).
    """
    from rlscale.training.export import export_actor
    from rlscale.training.workloads import training_mix

    d = config.data
    mix = training_mix(
        d.seed, n_generated=d.n_generated, n_steps=d.n_steps, patterns=d.patterns, extra_traces=d.extra_traces
    )
    model, critic_only, warm_info = None, 0, None
    if config.warm_start is not None:
        model, warm_info = warm_start(config, list(mix.loads))
        critic_only = config.warm_start.critic_only_updates
    result = run_training(
        config,
        list(mix.loads),
        mix.provenance,
        model=model,
        critic_only_updates=critic_only,
        out_dir=out_dir,
        progress=progress,
        tensorboard=tensorboard,
        on_update=on_update,
    )
    info = training_info(config, mix.provenance, result)
    if warm_info is not None:
        info["warm_start"] = warm_info
    data, parity = export_actor(result.model.policy_module(), info)
    return TrainOutcome(result, data, parity, info)
