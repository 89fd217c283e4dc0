"""The clairvoyant oracle: the fewest replica-hours any policy could spend on a window.

A cost comparison needs a floor: how far is a policy (or the HPA) from what is physically
possible? The oracle knows the whole future load and the simulator's service model, and
computes, interval by interval, the smallest allocation whose *true* simulated outcome
meets the SLO:

1. **Greedy, exact.** Every candidate allocation (replica counts from ``min_replicas`` to
   ``max_replicas`` at the initial CPU limit; with ``any_cpu_limit`` also every CPU-limit
   step within bounds) is simulated for the interval from the oracle's current state, in
   one batch of envs sharing the same random draws as the policies' runs under that seed
   (common random numbers). The cheapest that meets the SLO is kept, and every env
   continues from its state (:meth:`VectorSim.copy_env`). Candidates' pods are ready when
   the interval begins (:meth:`VectorSim.step_prestarted`): the oracle started them one
   start-up delay early, which step 2 bills.
2. **Unavoidable intervals.** Where no candidate meets the SLO — the first interval is the
   usual one: every policy starts from the same Deployment, and pods started by the first
   decision are not ready in time — the oracle takes the largest allocation (to recover
   fastest) and counts the interval as unavoidable.
3. **Billing as the policies are billed.** A pod needed in interval ``t+1`` must be started
   during interval ``t`` (start-up delay ≤ one interval), and is billed from then; then the
   safety mask's step limits (pods or percent per scale-up and per scale-down) are applied
   by raising counts — a backward pass for scale-ups, a forward pass for scale-downs — since
   more pods never break the SLO in the simulator. Cooldowns are not applied: the floor may
   only be lower than what a policy can reach, never higher.

Greedy is not guaranteed optimal (a cheaper allocation now can leave more backlog for
later), but meeting the SLO leaves little backlog, and the property that matters is tested:
no policy in the evaluation runs spends fewer replica-hours with no more SLO-violation
minutes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import step_rooms
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class OracleRun:
    """The oracle on one window under one seed."""

    replicas: IntArray  # per interval, as billed (after start-up and step-limit passes)
    needed: IntArray  # per interval, the greedy's count (ready at the interval's start)
    cpu_limit_m: IntArray  # per interval
    unavoidable: npt.NDArray[np.bool_]  # intervals no candidate got through
    step_s: float
    found: int  # replicas before the first decision: the Deployment every policy starts from

    @property
    def replica_hours(self) -> float:
        return float(self.replicas.sum()) * self.step_s / 3600.0

    @property
    def cpu_hours(self) -> float:
        return float((self.replicas * self.cpu_limit_m).sum()) / 1000.0 * self.step_s / 3600.0

    @property
    def unavoidable_minutes(self) -> float:
        return float(self.unavoidable.sum()) * self.step_s / 60.0


def _candidates(sim: SimConfig, any_cpu_limit: bool) -> tuple[IntArray, IntArray]:
    lim = sim.limits
    counts = np.arange(lim.min_replicas, lim.max_replicas + 1, dtype=np.int64)
    if not any_cpu_limit:
        return counts, np.full(counts.size, sim.initial_cpu_limit_m, dtype=np.int64)
    cpus = np.arange(lim.cpu_limit_min_m, lim.cpu_limit_max_m + 1, lim.cpu_limit_step_m, dtype=np.int64)
    cpus = np.union1d(cpus, [sim.initial_cpu_limit_m, lim.cpu_limit_max_m])
    rr, cc = np.meshgrid(counts, cpus, indexing="ij")
    return rr.ravel(), cc.ravel()


def _rooms(limits: ScalingLimits, replicas: int) -> tuple[int, int]:
    """The mask's scale-up and scale-down rooms from ``replicas`` (:func:`rlscale.policy.mask.step_rooms`)."""
    up, down = step_rooms(limits, np.array([replicas], dtype=np.int64))
    return int(up[0]), int(down[0])


def bill(needed: Sequence[int], limits: ScalingLimits, *, start_ahead: bool, first: int) -> IntArray:
    """The replica counts a controller must set so that ``needed`` pods are ready in every interval.

    ``first`` is the count before the first decision (the Deployment as found). With
    ``start_ahead``, pods needed in interval ``t+1`` are set (and billed) in interval ``t``.
    Then the step limits hold between consecutive counts, by raising counts only.
    """
    b = np.asarray(needed, dtype=np.int64).copy()
    if start_ahead and b.size > 1:
        b[:-1] = np.maximum(b[:-1], b[1:])
    b = np.clip(b, limits.min_replicas, limits.max_replicas)
    changed = True
    while changed:
        changed = False
        for t in range(b.size - 1, 0, -1):  # a scale-up from b[t-1] must reach b[t]
            while b[t - 1] + _rooms(limits, int(b[t - 1]))[0] < b[t]:
                b[t - 1] += 1
                changed = True
        prev = first
        for t in range(b.size):  # a scale-down from prev may not go below prev - room
            floor = prev - _rooms(limits, prev)[1]
            if b[t] < floor:
                b[t] = floor
                changed = True
            prev = int(b[t])
    return b


def run_oracles(
    sim: SimConfig, window: Trace, seeds: Sequence[int], *, variants: Sequence[bool] = (False, True)
) -> dict[tuple[bool, int], OracleRun]:
    """The oracle on ``window`` for every seed and variant (``any_cpu_limit`` False/True), in one batch.

    Each (variant, seed) block of envs holds that variant's candidates and draws exactly
    what a single env seeded ``seed`` would (the policies' runs draw the same).
    """
    blocks: list[tuple[bool, int, IntArray, IntArray]] = []
    for any_cpu in variants:
        reps, cpus = _candidates(sim, any_cpu)
        order = np.lexsort((cpus, reps))  # cheapest first: fewest pods, then the smallest limit
        for seed in seeds:
            blocks.append((any_cpu, int(seed), reps[order], cpus[order]))
    reps = np.concatenate([b[2] for b in blocks])
    cpus = np.concatenate([b[3] for b in blocks])
    starts = np.cumsum([0] + [b[2].size for b in blocks])
    env_seeds = np.concatenate([np.full(b[2].size, b[1]) for b in blocks])
    mem = np.full(reps.size, sim.initial_memory_limit_mib, dtype=np.int64)
    env = VectorSim(
        sim,
        window,
        n_envs=int(reps.size),
        autoreset=False,
        fixed_start=True,
        env_seeds=[int(x) for x in env_seeds],
        episode_steps=10**12,
    )
    env.reset()
    found = [int(env.replicas[lo]) for lo in starts[:-1]]  # each block's Deployment as found
    steps = int(env.episode_lengths[0])
    needed = np.zeros((len(blocks), steps), dtype=np.int64)
    cpu = np.zeros((len(blocks), steps), dtype=np.int64)
    unavoidable = np.zeros((len(blocks), steps), dtype=bool)
    src = np.zeros(reps.size, dtype=np.intp)
    for t in range(steps):
        # Before the first decision nothing could have been started early.
        step = env.step_targets if t == 0 else env.step_prestarted
        _, _, _, _, info = step(reps, cpus, mem)
        violated = info["slo_violated"]
        for j, (lo, hi) in enumerate(itertools.pairwise(starts)):
            ok = np.flatnonzero(~violated[lo:hi])
            if ok.size:
                pick = lo + int(ok[0])
            else:
                unavoidable[j, t] = True
                pick = hi - 1  # the most capacity: the last candidate
            needed[j, t], cpu[j, t] = reps[pick], cpus[pick]
            src[lo:hi] = pick
        env.copy_env(src)
    start_ahead = sim.startup_delay_s > 0
    return {
        (b[0], b[1]): OracleRun(
            bill(needed[j], sim.limits, start_ahead=start_ahead, first=found[j]),
            needed[j],
            cpu[j],
            unavoidable[j],
            sim.step_s,
            found[j],
        )
        for j, b in enumerate(blocks)
    }


def run_oracle(sim: SimConfig, window: Trace, seed: int, *, any_cpu_limit: bool = False) -> OracleRun:
    """The oracle on ``window`` under one ``seed`` (the same draws as the policies' runs with that seed)."""
    return run_oracles(sim, window, [seed], variants=[any_cpu_limit])[(any_cpu_limit, seed)]


def _summary(runs: Sequence[OracleRun]) -> dict[str, float]:
    rh = [r.replica_hours for r in runs]
    return {
        "replica_hours": float(np.mean(rh)),
        "replica_hours_std": float(np.std(rh, ddof=1)) if len(rh) > 1 else 0.0,
        "cpu_hours": float(np.mean([r.cpu_hours for r in runs])),
        "slo_violation_minutes": float(np.mean([r.unavoidable_minutes for r in runs])),
        "unavoidable_minutes": float(np.mean([r.unavoidable_minutes for r in runs])),
    }


def oracle_report(
    sim: SimConfig, window: Trace, seeds: Sequence[int], runs: dict[tuple[bool, int], OracleRun] | None = None
) -> dict[str, object]:
    """The JSON ``oracle`` object: means over seeds at the initial CPU limit, and under ``any_cpu_limit``.

    Its SLO-violation minutes are the unavoidable ones: the oracle breaks the SLO only where
    no allocation could have kept it. ``runs`` (from :func:`run_oracles` with both variants)
    saves running them again when the caller needs them too.
    """
    if runs is None:
        runs = run_oracles(sim, window, seeds)
    return {
        **_summary([runs[(False, s)] for s in seeds]),
        "any_cpu_limit": _summary([runs[(True, s)] for s in seeds]),
        "per_seed": [
            {
                "seed": int(s),
                "replica_hours": runs[(False, s)].replica_hours,
                "unavoidable_minutes": runs[(False, s)].unavoidable_minutes,
                "any_cpu_limit_replica_hours": runs[(True, s)].replica_hours,
                "any_cpu_limit_unavoidable_minutes": runs[(True, s)].unavoidable_minutes,
            }
            for s in seeds
        ],
    }


__all__ = ["OracleRun", "bill", "oracle_report", "run_oracle", "run_oracles"]
