"""Simulator throughput: environment steps per second of :class:`rlscale.training.sim.VectorSim`.

Prints, for each batch size, three figures:

* ``step``      — ``step(actions)`` alone, actions drawn without looking at the mask (the
  simulator evaluates the safety mask for the chosen action only);
* ``mask+step`` — ``action_masks()`` then ``step`` on a masked random action: what a PPO
  rollout pays per env step (minus the network);
* ``mask``      — ``action_masks()`` alone (policy's ``action_mask`` over all 63 actions).

Run pinned to one core for an honest single-core figure::

    taskset -c 0 .venv/bin/python bench/sim_throughput.py
    .venv/bin/python bench/sim_throughput.py --n-envs 1 256 --seconds 2

Numbers are printed, never asserted: speed belongs here, not in the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from rlscale.policy.actions import N_ACTIONS
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import training_mix


def _rate(fn: Callable[[], None], n_envs: int, seconds: float) -> tuple[float, int]:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * n_envs / elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 256, 4096, 16384])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--substeps", type=int, default=None, help="override SimConfig.substeps")
    args = parser.parse_args()

    config = SimConfig() if args.substeps is None else SimConfig(substeps=args.substeps)
    loads = list(training_mix(0, n_generated=7).loads)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"python {platform.python_version()}, numpy {np.__version__}, cpus allowed: {affinity}")
    print(f"substeps={config.substeps}, step_s={config.step_s}, episode_steps={config.episode_steps}")
    print(f"{'n_envs':>7} {'step':>14} {'mask+step':>14} {'mask':>14}   (env-steps/s)")
    for n in args.n_envs:
        sim = VectorSim(config, loads, n_envs=n, seed=0)
        sim.reset()
        rng = np.random.default_rng(0)

        def step_only(sim: VectorSim = sim, n: int = n, rng: np.random.Generator = rng) -> None:
            sim.step(rng.integers(0, N_ACTIONS, size=n))

        def mask_and_step(sim: VectorSim = sim, rng: np.random.Generator = rng) -> None:
            allowed = sim.action_masks()
            # A random allowed action per env (Gumbel-max over the mask), as a masked policy samples.
            scores = np.where(allowed, rng.random(allowed.shape), -1.0)
            sim.step(scores.argmax(axis=1))

        def mask_only(sim: VectorSim = sim) -> None:
            sim._mask = None  # force a fresh evaluation of the same state
            sim.action_masks()

        step_rate, _ = _rate(step_only, n, args.seconds)
        both_rate, _ = _rate(mask_and_step, n, args.seconds)
        mask_rate, _ = _rate(mask_only, n, args.seconds)
        print(f"{n:>7} {step_rate:>14,.0f} {both_rate:>14,.0f} {mask_rate:>14,.0f}", flush=True)


if __name__ == "__main__":
    main()
