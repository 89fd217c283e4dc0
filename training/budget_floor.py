"""The clairvoyant floor of a shared budget: the fewest SLO-violation minutes any arbitration could reach.

``rlscale evaluate`` measures a policy against a clairvoyant oracle (:mod:`rlscale.training.oracle`);
a budget needs the same yardstick. Here each member's oracle says, interval by interval,
the fewest pods that meet its SLO (knowing its whole future load). When the members'
needs together exceed the budget, someone must be short, and a member short of its need
violates. The fewest members that must be short in an interval is the smallest ``k`` such
that the others' needs — the smallest first — fit the budget; members whose need no
allocation meets (the oracle's unavoidable intervals) count as short anyway. Summed over
intervals, that is a floor on total SLO-violation minutes for every way of sharing the
budget: fair, first come first served, or learned.

It is optimistic on purpose, as the oracle is: it ignores start-up delays (a pod needed
now was started earlier, out of the same budget), the backlog a short interval leaves,
and the scaling steps. So a policy far above the floor leaves room that may not all be
reachable; a policy below it would be a bug. The floor also says nothing of fairness:
it is reached by starving the fewest members, whoever they are. A budget the members
already exceed when the window starts (each is sized for its first minute, and held
capacity is never taken away) counts as what they start with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlscale.training.budget_sim import member_seed
from rlscale.training.oracle import run_oracles
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace


def short_members(needs_cores: np.ndarray, unavoidable: np.ndarray, budget_cores: float) -> np.ndarray:
    """Per interval, the fewest members that must be short: ``needs_cores`` and ``unavoidable`` are (members, T)."""
    needs = np.where(unavoidable, np.inf, needs_cores)
    ordered = np.sort(needs, axis=0)  # the smallest needs first; the unavoidable last (inf)
    fits = np.cumsum(ordered, axis=0) <= budget_cores + 1e-9  # the first j+1 members fit together
    served = fits.sum(axis=0)
    return needs.shape[0] - served


def violation_floor(sim: SimConfig, windows: Sequence[Trace], budget_cores: float, seeds: Sequence[int]) -> list[float]:
    """The floor on total SLO-violation minutes of ``windows`` sharing ``budget_cores``, per seed.

    Each member's need is its oracle's under the draws that member gets in the policies'
    runs (common random numbers), at the initial CPU limit, as the budget counts it (pods × limit).
    """
    # Member j of a column seeded s draws with seed member_seed(s, j): the oracle draws the same.
    runs = [
        run_oracles(sim, w, [member_seed(int(s), j) for s in seeds], variants=[False]) for j, w in enumerate(windows)
    ]
    out = []
    for seed in seeds:
        member_runs = [r[(False, member_seed(int(seed), j))] for j, r in enumerate(runs)]
        steps = min(len(m.needed) for m in member_runs)
        needs = np.stack([m.needed[:steps] * m.cpu_limit_m[:steps] for m in member_runs]) / 1000.0
        unavoidable = np.stack([m.unavoidable[:steps] for m in member_runs])
        # Every policy starts from the same Deployments, and held capacity is never taken away:
        # a budget they already exceed at the start is, for the floor, what they start with.
        start = sum(_initial_cores(sim, w, member_seed(int(seed), j)) for j, w in enumerate(windows))
        out.append(float(short_members(needs, unavoidable, max(budget_cores, start)).sum()) * sim.step_s / 60.0)
    return out


def _initial_cores(sim: SimConfig, window: Trace, seed: int) -> float:
    """The CPU a member starts the window with (the simulator sizes it for the first minute's load)."""
    env = VectorSim(sim, window, n_envs=1, autoreset=False, fixed_start=True, env_seeds=[seed], episode_steps=10**12)
    env.reset()
    return float(env.replicas[0]) * sim.initial_cpu_limit_m / 1000.0


__all__ = ["short_members", "violation_floor"]
