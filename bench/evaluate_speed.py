"""Evaluation speed: many controllers through the simulator, a decide() loop vs one decide_batch per step.

An evaluation plays a grid of baseline configurations × seeds (plus learned models) over
a load window. This plays ``--configs`` HPA configurations × ``--seeds`` seeds (and
``--models`` learned controllers per seed, a random-weight MLP in ``full`` gate mode)
over ``--steps`` intervals twice:

* ``loop``  — :func:`rlscale.training.episodes.run_episodes` with one ``decide`` callback
  per controller (an Observation built per env per step, one ``decide`` call each);
* ``batch`` — :func:`rlscale.training.episodes.run_controllers`: one ``decide_batch`` per
  step over the simulator's raw columns;

and, for the floor, the simulator alone (``step_targets`` with fixed targets). It prints
wall and CPU seconds, decisions per second, the speed-up, and whether the two runs' logs
are identical (they must be; the tests assert it). Numbers are printed, never asserted::

    .venv/bin/python bench/evaluate_speed.py                 # 39 HPA configs × 3 seeds, 1500 steps
    .venv/bin/python bench/evaluate_speed.py --steps 300 --models 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.model import PolicyModel
from rlscale.training.episodes import LOG_KEYS, Controller, EpisodeLog, run_controllers, run_episodes
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import generate

# The random-weight model is a test fixture (tests/random_model.py), not part of the package.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from random_model import random_mlp_onnx


def hpa_grid(sim: SimConfig, n: int) -> list[DecisionConfig]:
    """``n`` HPA configurations: target utilisations × scale-down stabilisation windows."""
    windows = (0.0, 60.0, 300.0)
    targets = np.linspace(0.3, 0.95, max(1, -(-n // len(windows))))
    out = [
        DecisionConfig(
            limits=sim.limits,
            objective=sim.objective,
            baseline=BaselineConfig(
                kind="hpa", hpa=HpaConfig(target_utilization=round(float(t), 3), scale_down_stabilization_s=w)
            ),
        )
        for t in targets
        for w in windows
    ]
    return out[:n]


def callback(c: Controller) -> Callable[[Observation], Decision]:
    state = ControllerState.initial(c.config)

    def fn(obs: Observation) -> Decision:
        nonlocal state
        decision, state = decide(obs, c.config, state, c.model, model_error=c.model_error)
        return decision

    return fn


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def identical(a: list[EpisodeLog], b: list[EpisodeLog]) -> bool:
    return all(
        np.array_equal(x.steps[k], y.steps[k], equal_nan=True) for x, y in zip(a, b, strict=True) for k in LOG_KEYS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=39, help="HPA configurations")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", type=int, default=0, help="learned controllers per seed (random MLP, full gate)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--skip-loop", action="store_true", help="time only the batch path")
    args = parser.parse_args()

    sim = SimConfig(metrics_missing_prob=0.01)
    load = generate("flash_crowd", args.steps, seed=1)
    per_seed = [Controller(c) for c in hpa_grid(sim, args.configs)]
    learned = DecisionConfig(limits=sim.limits, objective=sim.objective, gate=GateConfig(mode="full"))
    per_seed += [
        Controller(learned, PolicyModel.from_bytes(random_mlp_onnx(hidden=64, seed=i))) for i in range(args.models)
    ]
    controllers = per_seed * args.seeds
    seeds = [s for s in range(args.seeds) for _ in per_seed]
    n = len(controllers)
    decisions = n * args.steps

    def sim_only() -> None:
        env = VectorSim(sim, load, n_envs=n, autoreset=False, fixed_start=True, env_seeds=seeds, episode_steps=10**12)
        env.reset()
        r, c, m = np.full(n, 5), np.full(n, sim.initial_cpu_limit_m), np.full(n, sim.initial_memory_limit_mib)
        for _ in range(args.steps):
            env.step_targets(r, c, m)

    print(
        f"{args.configs} HPA configs + {args.models} learned × {args.seeds} seeds = {n} controllers, "
        f"{args.steps} steps ({decisions} decisions); {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"{'path':<8}{'wall s':>10}{'cpu s':>10}{'decisions/s':>14}{'µs/decision':>14}")
    _, wall, cpu = timed(sim_only)
    print(f"{'sim':<8}{wall:>10.2f}{cpu:>10.2f}{'':>14}{cpu / decisions * 1e6:>14.1f}   (simulator alone, the floor)")
    batch, b_wall, b_cpu = timed(lambda: run_controllers(sim, load, controllers, seeds))
    print(f"{'batch':<8}{b_wall:>10.2f}{b_cpu:>10.2f}{decisions / b_cpu:>14.0f}{b_cpu / decisions * 1e6:>14.1f}")
    if args.skip_loop:
        return
    loop, l_wall, l_cpu = timed(lambda: run_episodes(sim, load, [callback(c) for c in controllers], seeds))
    print(f"{'loop':<8}{l_wall:>10.2f}{l_cpu:>10.2f}{decisions / l_cpu:>14.0f}{l_cpu / decisions * 1e6:>14.1f}")
    print(f"speed-up (CPU time): {l_cpu / b_cpu:.1f}×; logs identical: {identical(batch, loop)}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
