"""Training wall time: how long PPO from scratch takes to beat the tuned HPA on the public traces.

Trains the default config (or ``--config``) and, every ``--every`` updates, pauses the
training clock, exports the actor to ONNX and evaluates it on the TEST windows of every
trace in ``--traces-dir`` against the HPA tuned on each trace's TRAINING window (the same
comparison as ``rlscale evaluate-all``). Prints one line per snapshot and, at the end,
the training wall time at which the bar (cost_ratio ≤ 1 against the HPA frontier, or fewer
SLO-violation minutes than any HPA setting, on at least ``--need`` traces) was first met, and the full run's time.
The snapshots are measurements only; the shipped model is always the final one.

With ``--compare-sb3 STEPS`` it instead times this project's PPO loop against
sb3-contrib's ``MaskablePPO`` (same hyperparameters, ``AutoscaleEnv`` in a
``DummyVecEnv``) for STEPS environment steps each. sb3-contrib is not a dependency;
install it into a side directory and put that on ``PYTHONPATH``::

    .venv/bin/pip install --target /tmp/sb3 --no-deps stable-baselines3 sb3-contrib cloudpickle pandas
    PYTHONPATH=/tmp/sb3 nice .venv/bin/python bench/train_time.py --compare-sb3 65536

Run::

    nice .venv/bin/python bench/train_time.py            # default config, snapshots every 50 updates

Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import N_FEATURES
from rlscale.training.cli import load_train_config
from rlscale.training.episodes import episode_metrics, run_episodes
from rlscale.training.evaluate import aggregate, decide_fn, decision_config, grid_metrics
from rlscale.training.export import export_actor
from rlscale.training.frontier import hpa_grid, match
from rlscale.training.oracle import oracle_report
from rlscale.training.ppo import ActorCritic, UpdateStats, run_ppo
from rlscale.training.ppo_config import PpoConfig, TrainConfig
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.train import train
from rlscale.training.workloads import load_trace, traces_dir, training_mix


class BarJudge:
    """The learned policy's cost at matched SLO on every trace's test window (HPA grid runs done once)."""

    def __init__(self, folder: Path, seeds: range) -> None:
        self.sim = SimConfig()
        self.seeds = seeds
        self.windows = []
        self.hpa: list[list[dict[str, float]]] = []
        self.oracle: list[float] = []
        grid = hpa_grid()
        for path in sorted(folder.glob("*.csv")):
            split = load_trace(path).split()
            per_seed = [grid_metrics(self.sim, split.test, grid, [s]) for s in seeds]
            self.windows.append((path.stem, split.test))
            self.hpa.append([aggregate([ps[i] for ps in per_seed]) for i in range(len(grid))])
            self.oracle.append(float(oracle_report(self.sim, split.test, list(seeds))["replica_hours"]))

    def met(self, model: PolicyModel) -> list[bool]:
        """cost_ratio ≤ 1 (or fewer SLO minutes than any HPA setting) per trace."""
        cfg = decision_config(self.sim, BaselineConfig(kind="hpa"), learned=True)
        out = []
        for (_, window), hpa, oracle_rh in zip(self.windows, self.hpa, self.oracle, strict=True):
            runs = [episode_metrics(run_episodes(self.sim, window, [decide_fn(cfg, model)], s)[0]) for s in self.seeds]
            m = aggregate(runs)
            matched = match(m["slo_violation_minutes"], m["replica_hours"], hpa, oracle_rh)
            out.append(bool(matched["dominates_hpa_on_slo"] or (matched["cost_ratio"] or 2.0) <= 1.0))
        return out


@dataclass
class _Clock:
    """Training wall time excludes the snapshots' export and evaluation."""

    start: float
    paused: float = 0.0
    first: float | None = None


def time_to_bar(config: TrainConfig, every: int, need: int, folder: Path, seeds: int) -> None:
    judge = BarJudge(folder, range(seeds))
    print(f"traces: {', '.join(n for n, _ in judge.windows)}; bar needs {need} of {len(judge.windows)}")
    print(
        "oracle replica-h per trace: "
        + ", ".join(f"{n}: {o:.1f}" for (n, _), o in zip(judge.windows, judge.oracle, strict=False))
    )
    clock = _Clock(start=time.perf_counter())

    def on_update(stats: UpdateStats, model: ActorCritic) -> None:
        if stats.update % every and stats.update != config.ppo.n_updates:
            return
        pause = time.perf_counter()
        data, _ = export_actor(model.actor, {"snapshot": stats.update})
        met = judge.met(PolicyModel.from_bytes(data))
        train_s = pause - clock.start - clock.paused
        if sum(met) >= need and clock.first is None:
            clock.first = train_s
        print(
            f"update {stats.update:4d}  steps {stats.global_step:>9,}  train {train_s:6.0f} s  "
            f"bar met on {sum(met)}/{len(met)} {''.join('x' if m else '.' for m in met)}",
            flush=True,
        )
        clock.paused += time.perf_counter() - pause

    # The same train() as `rlscale train` (warm start included), so the time is the default config's.
    result = train(config, progress=False, tensorboard=False, on_update=on_update).ppo
    total = time.perf_counter() - clock.start - clock.paused
    print(f"full training: {result.global_step:,} steps in {total:.0f} s of training wall time (warm start included)")
    first = clock.first
    print(f"time to bar ({need}+ traces): " + (f"{first:.0f} s" if first is not None else "not reached"))


def compare_sb3(steps: int, n_envs: int) -> None:
    """Steps per second of this project's loop vs sb3-contrib MaskablePPO on the same simulator."""
    cfg = PpoConfig(total_steps=steps, n_envs=n_envs, n_steps=128, n_minibatches=4, checkpoint_every=0)
    sim = SimConfig()
    loads = list(training_mix(0, n_generated=7).loads)
    env = VectorSim(sim, loads, n_envs=n_envs, seed=0)
    t = time.perf_counter()
    run_ppo(env, cfg, n_features=N_FEATURES, n_actions=N_ACTIONS, seed=0, progress=False, tensorboard=False)
    ours = cfg.n_updates * cfg.batch_size / (time.perf_counter() - t)
    print(f"rlscale PPO over VectorSim({n_envs}):           {ours:10,.0f} env-steps/s")
    try:
        from sb3_contrib import MaskablePPO
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        print("sb3-contrib not importable: see this file's docstring to measure it")
        return
    from rlscale.training.sim_env import AutoscaleEnv

    vec = DummyVecEnv([lambda i=i: AutoscaleEnv(sim, loads, seed=i) for i in range(n_envs)])
    agent = MaskablePPO(
        "MlpPolicy",
        vec,
        n_steps=128,
        batch_size=cfg.minibatch_size,
        n_epochs=cfg.update_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        policy_kwargs={"net_arch": list(cfg.hidden), "activation_fn": torch.nn.Tanh},
        seed=0,
        device="cpu",
        verbose=0,
    )
    t = time.perf_counter()
    agent.learn(total_timesteps=cfg.n_updates * cfg.batch_size)
    theirs = cfg.n_updates * cfg.batch_size / (time.perf_counter() - t)
    print(
        f"sb3-contrib MaskablePPO, DummyVecEnv({n_envs}):   {theirs:10,.0f} env-steps/s  ({ours / theirs:.1f}x slower)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--every", type=int, default=50, help="evaluate a snapshot every this many updates")
    parser.add_argument("--need", type=int, default=3, help="traces on which the bar must be met")
    parser.add_argument("--seeds", type=int, default=3, help="simulator seeds per evaluation")
    parser.add_argument("--traces-dir", type=Path, default=None)
    parser.add_argument("--compare-sb3", type=int, default=None, metavar="STEPS")
    parser.add_argument("--n-envs", type=int, default=64, help="for --compare-sb3")
    args = parser.parse_args()

    torch.set_num_threads(1)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, cpus {cpus}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other work on these cores slows every figure)")
    if args.compare_sb3 is not None:
        compare_sb3(args.compare_sb3, args.n_envs)
        return
    config = load_train_config(args.config)
    if args.seed is not None:
        config = config.model_copy(update={"seed": args.seed})
    time_to_bar(config, args.every, args.need, args.traces_dir or traces_dir(), args.seeds)


if __name__ == "__main__":
    main()
