"""What the three trainers — PPO, GRPO and DQN — share, and ``rlscale train --algo`` over them.

:mod:`rlscale.training.ppo` is the reference algorithm, one file to read top to bottom; it
already holds the masked distribution, the rollout buffers, the logger and the seeding.
:mod:`rlscale.training.grpo` and :mod:`rlscale.training.dqn` import those pieces instead of
copying them, and the few pieces that PPO writes inline but the other two need as functions
live here: acting with a masked network, the running episode returns, one optimiser step,
and the pipeline that trains any of the three on a :class:`~rlscale.training.ppo_config.TrainConfig`'s
world and exports the result to ONNX through the same checked exporter. So every trainer
masks exactly as the operator does (forbidden actions get no probability, no Q-value, no
gradient), and every exported model is read by :func:`rlscale.policy.decide.decide` alike:
PPO's and GRPO's logits, DQN's Q-values — all masked and arg-maxed in ``policy/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rlscale.training.ppo import UpdateStats, masked_log_probs, sample_actions
from rlscale.training.ppo_config import TrainConfig

Algo = Literal["ppo", "grpo", "dqn"]
ALGOS: tuple[Algo, ...] = ("ppo", "grpo", "dqn")
OnUpdate = Callable[[UpdateStats, nn.Module], bool | None]


# --------------------------------------------------------------------------- acting with a masked network


def act_sampled(
    net: nn.Module,
    obs: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    sampler: torch.Generator,
    temperature: float = 1.0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """One action per row from the masked softmax of the logits / ``temperature``, and its log-probability."""
    with torch.no_grad():
        log_probs = masked_log_probs(net(torch.from_numpy(obs)) / temperature, torch.from_numpy(mask))
        action = sample_actions(log_probs, sampler)
        chosen = log_probs.gather(-1, action[:, None]).squeeze(-1)
    return action.numpy().astype(np.int64), chosen.numpy().astype(np.float32)


def greedy_masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The best allowed action per row (what ``policy.model.masked_argmax`` does at run time).

    Goes through :func:`~rlscale.training.ppo.masked_log_probs`: the log-softmax keeps the
    order of the allowed scores, and forbidden ones are ``-inf``.
    """
    return masked_log_probs(scores, mask).argmax(-1)


def uniform_allowed(mask: npt.NDArray[np.bool_], sampler: torch.Generator) -> npt.NDArray[np.int64]:
    """A uniformly random *allowed* action per row (ε-greedy exploration never tries a forbidden one)."""
    t_mask = torch.from_numpy(mask)
    log_probs = masked_log_probs(torch.zeros(t_mask.shape), t_mask)
    return sample_actions(log_probs, sampler).numpy().astype(np.int64)


def optimiser_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[Any], max_norm: float
) -> None:
    """Backward, clip the gradient norm, step: one update of any of the trainers."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(list(params), max_norm)
    optimizer.step()


class EpisodeReturns:
    """Per-env running returns; the returns of episodes that finished since the last :meth:`pop`."""

    def __init__(self, n_envs: int) -> None:
        self._running = np.zeros(n_envs)
        self._finished: list[float] = []

    def add(self, reward: npt.NDArray[np.float64], done: npt.NDArray[np.bool_]) -> None:
        self._running += reward
        self._finished.extend(float(x) for x in self._running[done])
        self._running[done] = 0.0

    def pop(self) -> list[float]:
        out, self._finished = self._finished, []
        return out


@dataclass(frozen=True)
class RunSpec:
    """What every trainer is told besides its config: the problem's sizes, the seed, and where to report."""

    n_features: int
    n_actions: int
    seed: int
    out_dir: Path | None = None
    progress: bool = False
    tensorboard: bool = False
    on_update: OnUpdate | None = None


class Session:
    """A training loop's bookkeeping: progress bar, CSV/TensorBoard log (PPO's logger), history, clock, stop hook.

    ``with Session(...) as s:`` around the loop; :meth:`record` after every update (True: stop,
    the ``on_update`` hook asked for it); :meth:`finish` for the result.
    """

    def __init__(self, algo: Algo, actor: nn.Module, spec: RunSpec, total_steps: int) -> None:
        from rlscale.training.ppo import _Logger

        self.spec, self.result = spec, Trained(algo, actor)
        self._logger = _Logger(spec.out_dir, spec.tensorboard)
        self._bar: Any = None
        if spec.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", desc=algo, dynamic_ncols=True)
        self._start = time.perf_counter()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        self._logger.close()

    def record(self, stats: UpdateStats, steps: int) -> bool:
        """Log one update (``steps`` environment steps since the last); True if training should stop."""
        self.result.history.append(stats)
        self._logger.log(stats)
        if self._bar is not None:
            self._bar.update(steps)
        return bool(self.spec.on_update(stats, self.result.actor)) if self.spec.on_update is not None else False

    def finish(self, global_step: int) -> Trained:
        self.result.actor.eval()
        self.result.wall_seconds = time.perf_counter() - self._start
        self.result.global_step = global_step
        return self.result


# --------------------------------------------------------------------------- one pipeline for every algorithm


@dataclass
class Trained:
    """A finished run of any trainer: the network that computes the exported logits, and its log."""

    algo: Algo
    actor: nn.Module
    history: list[UpdateStats] = field(default_factory=list)
    wall_seconds: float = 0.0
    global_step: int = 0

    def learning_curve(self) -> list[dict[str, float]]:
        """(env steps, mean step reward) per update: what the GRPO study plots."""
        return [{"global_step": s.global_step, "mean_step_reward": s.mean_step_reward} for s in self.history]


def train_algo(
    algo: Algo,
    env: Any,
    *,
    seed: int,
    ppo: Any = None,
    grpo: Any = None,
    dqn: Any = None,
    out_dir: Path | None = None,
    progress: bool = False,
    tensorboard: bool = False,
    on_update: OnUpdate | None = None,
) -> Trained:
    """Train ``algo`` on ``env`` (a :class:`~rlscale.training.sim.VectorSim` built for it) from scratch.

    ``ppo`` / ``grpo`` / ``dqn`` are the algorithm's config (defaults when None). GRPO needs
    an env whose envs come in groups that share their noise (:func:`grpo_env`).
    """
    from rlscale.policy.actions import N_ACTIONS
    from rlscale.policy.spec import N_FEATURES

    spec = RunSpec(N_FEATURES, N_ACTIONS, seed, out_dir, progress, tensorboard, on_update)
    if algo == "ppo":
        from rlscale.training.ppo import run_ppo
        from rlscale.training.ppo_config import PpoConfig

        p = run_ppo(env, ppo if ppo is not None else PpoConfig(), **spec.__dict__)
        return Trained("ppo", p.model.policy_module(), p.history, p.wall_seconds, p.global_step)
    if algo == "grpo":
        from rlscale.training.grpo import GrpoConfig, run_grpo

        return run_grpo(env, grpo if grpo is not None else GrpoConfig(), spec)
    if algo == "dqn":
        from rlscale.training.dqn import DqnConfig, run_dqn

        return run_dqn(env, dqn if dqn is not None else DqnConfig(), spec)
    raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")


def n_envs_of(algo: Algo, ppo: Any = None, grpo: Any = None, dqn: Any = None) -> int:
    """How many parallel environments ``algo``'s config asks for."""
    from rlscale.training.dqn import DqnConfig
    from rlscale.training.grpo import GrpoConfig
    from rlscale.training.ppo_config import PpoConfig

    if algo == "grpo":
        return (grpo if grpo is not None else GrpoConfig()).n_envs
    if algo == "dqn":
        return int((dqn if dqn is not None else DqnConfig()).n_envs)
    return int((ppo if ppo is not None else PpoConfig()).n_envs)


def make_env(algo: Algo, sim: Any, loads: Any, *, seed: int, n_envs: int, group_size: int = 1) -> Any:
    """The training simulator for ``algo``: independent envs, or for GRPO groups of ``group_size`` that share noise."""
    from rlscale.training.sim import VectorSim

    if algo != "grpo":
        return VectorSim(sim, loads, n_envs=n_envs, seed=seed)
    groups = n_envs // group_size
    env_seeds = [seed * 1_000_003 + g for g in range(groups) for _ in range(group_size)]
    return VectorSim(sim, loads, n_envs=n_envs, env_seeds=env_seeds)


def export_trained(trained: Trained, info: dict[str, Any]) -> tuple[bytes, float]:
    """The trained network as a checked ONNX policy (metadata, parity), whatever the algorithm."""
    from rlscale.training.export import export_actor

    return export_actor(trained.actor, {"algorithm": trained.algo, **info})


def train_export(
    algo: Algo,
    sim: Any,
    loads: Any,
    *,
    seed: int,
    ppo: Any = None,
    grpo: Any = None,
    dqn: Any = None,
    info: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    progress: bool = False,
) -> tuple[Any, Trained]:
    """Train ``algo`` from scratch in the world ``sim`` on ``loads`` and load the exported ONNX model.

    Returns the :class:`~rlscale.policy.model.PolicyModel` (ready for ``decide``) and the run.
    """
    from rlscale.policy.model import PolicyModel
    from rlscale.training.grpo import GrpoConfig

    group = (grpo if grpo is not None else GrpoConfig()).group_size if algo == "grpo" else 1
    n_envs = n_envs_of(algo, ppo=ppo, grpo=grpo, dqn=dqn)
    env = make_env(algo, sim, loads, seed=seed, n_envs=n_envs, group_size=group)
    trained = train_algo(
        algo, env, seed=seed, ppo=ppo, grpo=grpo, dqn=dqn, out_dir=out_dir, progress=progress,
        tensorboard=out_dir is not None,
    )  # fmt: skip
    provenance = {"seed": seed, "global_step": trained.global_step, "wall_seconds": round(trained.wall_seconds, 1)}
    data, _ = export_trained(trained, {**provenance, **(info or {})})
    return PolicyModel.from_bytes(data, source=f"{algo}:seed{seed}"), trained


def train_config_algo(
    config: TrainConfig,
    algo: Algo,
    *,
    steps: int | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
) -> tuple[bytes, Trained]:
    """``rlscale train --algo grpo|dqn``: that trainer on the config's world and data, from scratch, exported.

    The simulated service, the data mix and the seed are the config's; the algorithm's own
    hyperparameters are its config's defaults (``steps`` overrides the budget). There is no
    warm start: the HPA clone is part of the PPO pipeline (:mod:`rlscale.training.train`).
    """
    from rlscale.training.dqn import DqnConfig
    from rlscale.training.grpo import GrpoConfig
    from rlscale.training.workloads import training_mix

    d = config.data
    mix = training_mix(
        d.seed, n_generated=d.n_generated, n_steps=d.n_steps, patterns=d.patterns, extra_traces=d.extra_traces
    )
    budget = {"total_steps": steps} if steps is not None else {}
    grpo, dqn = GrpoConfig(**budget), DqnConfig(**budget)
    algo_cfg = grpo if algo == "grpo" else dqn
    info = {
        "config": {"sim": config.sim.model_dump(mode="json"), algo: algo_cfg.model_dump(mode="json")},
        "data": mix.provenance,
    }
    model, trained = train_export(
        algo, config.sim, list(mix.loads), seed=config.seed, grpo=grpo, dqn=dqn, info=info, out_dir=out_dir,
        progress=progress,
    )  # fmt: skip
    return model.data, trained


__all__ = [
    "ALGOS",
    "Algo",
    "EpisodeReturns",
    "RunSpec",
    "Session",
    "Trained",
    "act_sampled",
    "export_trained",
    "greedy_masked",
    "make_env",
    "optimiser_step",
    "train_algo",
    "train_config_algo",
    "train_export",
    "uniform_allowed",
]
