"""Several simulated services sharing one capacity budget, stepped together.

Each member of a budget is a service with its own load trace: one
:class:`~rlscale.training.sim.VectorSim` per member, whose envs are the *columns* — one
budget instance per (policy, seed), so policies × seeds run in one batch as in
:func:`~rlscale.training.episodes.run_controllers`. Every interval, for every member, one
:func:`~rlscale.policy.decide.decide_batch` proposes targets for all columns; then, per
column, :func:`~rlscale.policy.budget.arbitrate` grants them within the budget by the
column's rule, and each member's simulator is stepped to what was *granted*. A refused
scale-up is what quota does to it: the pods are not created, nothing starts.

Columns marked ``coordinated`` decide under limits whose CPU budget is what the member
could be granted — its current allocation, the budget's free headroom and the pods other
members hold beyond their target (:func:`~rlscale.policy.budget.budget_limits`) — so the
safety mask itself refuses what could never be granted; their members may be asked to
give such spare pods back (``max_reclaim``, bounded by the member's scale-down step).
FCFS columns draw a fresh arrival order every interval from the column's seed:
independent autoscalers have no agreed order.

What a member remembers of a cut decision follows who decides it: a controller with a model
(rlscale's operator, learned or coordinated) remembers what it was *granted*
(:func:`~rlscale.policy.decide.regrant`: a refused scale-up starts no cooldown), exactly as
the operator does; a model-less HPA column remembers what it *asked*, as a Kubernetes HPA
under a quota does (it set the replicas; the quota refused the pods).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rlscale.policy.budget import (
    BudgetConfig,
    BudgetRule,
    MemberRequest,
    arbitrate,
    budget_limits,
    grantable_cpu_m,
    scale_down_step,
    slo_pressure,
)
from rlscale.policy.decide import ControllerState, DecisionConfig, decide_batch, regrant
from rlscale.policy.spec import RAW_COLUMNS
from rlscale.training.episodes import LOG_KEYS, Controller, EpisodeLog
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

#: Per-step keys a budget member's log adds to :data:`~rlscale.training.episodes.LOG_KEYS`.
BUDGET_LOG_KEYS: tuple[str, ...] = ("proposed_replicas", "refused_pods", "budget_binding")


@dataclass(frozen=True)
class BudgetColumn:
    """One budget instance: one controller per member, the rule that grants between them, a seed."""

    controllers: tuple[Controller, ...]
    rule: BudgetRule
    seed: int
    coordinated: bool = False


def member_seed(seed: int, member: int) -> int:
    """Members draw independent noise; equal column seeds share it (common random numbers across policies)."""
    return seed * 1009 + member


def run_budget(
    sim: SimConfig, loads: Sequence[Trace], budget: BudgetConfig, columns: Sequence[BudgetColumn]
) -> list[list[EpisodeLog]]:
    """Play every column's members through their loads under ``budget``; logs by ``[column][member]``.

    ``budget.rule`` is ignored in favour of each column's own. All loads are played from
    their first row for the length of the shortest.
    """
    m_count, c_count = len(loads), len(columns)
    if m_count < 1 or c_count < 1:
        raise ValueError("run_budget: give at least one load and one column")
    for k, col in enumerate(columns):
        if len(col.controllers) != m_count:
            raise ValueError(
                f"columns[{k}]: expected one controller per member ({m_count}), got {len(col.controllers)}"
            )
    sims = []
    for j, load in enumerate(loads):
        s = VectorSim(
            sim,
            load,
            n_envs=c_count,
            autoreset=False,
            fixed_start=True,
            env_seeds=[member_seed(col.seed, j) for col in columns],
            episode_steps=10**12,
        )
        s.reset()
        sims.append(s)
    steps = min(int(s.episode_lengths[0]) for s in sims)
    rules = [budget.model_copy(update={"rule": col.rule}) for col in columns]
    orders = [np.random.default_rng(col.seed) for col in columns]
    base: list[list[DecisionConfig]] = [[col.controllers[j].config for col in columns] for j in range(m_count)]
    models = [[col.controllers[j].model for col in columns] for j in range(m_count)]
    states: list[list[ControllerState]] = [
        [
            c.state if c.state is not None else ControllerState.initial(c.config)
            for c in (col.controllers[j] for col in columns)
        ]
        for j in range(m_count)
    ]
    names = [f"m{j}" for j in range(m_count)]
    logs: list[list[dict[str, list[Any]]]] = [
        [{key: [] for key in (*LOG_KEYS, *BUDGET_LOG_KEYS)} for _ in range(m_count)] for _ in range(c_count)
    ]
    cpu_row, p99_row = RAW_COLUMNS.index("cpu_utilization"), RAW_COLUMNS.index("latency_p99_ms")
    for _ in range(steps):
        raws = []
        for s in sims:
            cols = s.columns()
            raws.append(np.stack([cols[name] for name in RAW_COLUMNS]))
        # Every member's situation before deciding: what it holds, how pressed it is.
        now = [
            [
                MemberRequest(
                    name=names[j],
                    replicas=int(s.replicas[k]),
                    cpu_limit_m=int(s.cpu_limit_m[k]),
                    memory_limit_mib=int(s.memory_limit_mib[k]),
                    proposed_replicas=int(s.replicas[k]),
                    proposed_cpu_limit_m=int(s.cpu_limit_m[k]),
                    proposed_memory_limit_mib=int(s.memory_limit_mib[k]),
                    pressure=slo_pressure(
                        float(raws[j][cpu_row, k]), float(raws[j][p99_row, k]), base[j][k].objective.latency_slo_ms
                    ),
                    max_reclaim=scale_down_step(base[j][k].limits, int(s.replicas[k])) if columns[k].coordinated else 0,
                    min_replicas=base[j][k].limits.min_replicas,
                )
                for k in range(c_count)
            ]
            for j, s in enumerate(sims)
        ]
        decisions = []
        used_configs = []
        for j in range(m_count):
            configs = base[j]
            if any(col.coordinated for col in columns):
                configs = [
                    cfg.model_copy(
                        update={
                            "limits": budget_limits(
                                cfg.limits, grantable_cpu_m(budget, [row[k] for row in now], names[j])
                            )
                        }
                    )
                    if columns[k].coordinated
                    else cfg
                    for k, cfg in enumerate(base[j])
                ]
            d, states[j] = decide_batch(raws[j], configs, states[j], models[j])
            decisions.append(d)
            used_configs.append(configs)
        targets = np.zeros((3, m_count, c_count), dtype=np.int64)
        refused = np.zeros((m_count, c_count), dtype=np.int64)
        binding = np.zeros(c_count, dtype=bool)
        for k in range(c_count):
            requests = [
                replace(
                    now[j][k],
                    proposed_replicas=decisions[j][k].replicas,
                    proposed_cpu_limit_m=decisions[j][k].cpu_limit_m,
                    proposed_memory_limit_mib=decisions[j][k].memory_limit_mib,
                )
                for j in range(m_count)
            ]
            order = list(orders[k].permutation(names)) if columns[k].rule == "fcfs" else None
            result = arbitrate(rules[k], requests, order=order)
            binding[k] = result.binding
            for j, g in enumerate(result.grants):
                targets[:, j, k] = (g.replicas, g.cpu_limit_m, g.memory_limit_mib)
                refused[j, k] = g.refused_pods
                if g.refused and columns[k].controllers[j].model is not None:
                    # rlscale's operator remembers what it was granted (regrant); a plain HPA under a
                    # quota remembers the replicas it set, which the quota then refused.
                    _, states[j][k] = regrant(
                        used_configs[j][k], states[j][k], decisions[j][k], g.replicas, g.cpu_limit_m, g.memory_limit_mib
                    )
        for j, s in enumerate(sims):
            _, _, _, _, info = s.step_targets(targets[0, j], targets[1, j], targets[2, j])
            for k in range(c_count):
                row = logs[k][j]
                for key in LOG_KEYS:
                    row[key].append(info[key][k])
                row["proposed_replicas"].append(decisions[j][k].replicas)
                row["refused_pods"].append(refused[j, k])
                row["budget_binding"].append(binding[k])
    out = []
    for k, col in enumerate(columns):
        out.append(
            [
                EpisodeLog(
                    seed=col.seed,
                    load_name=sims[j].series_names[0],
                    step_s=sim.step_s,
                    steps={key: np.asarray(v) for key, v in logs[k][j].items()},
                )
                for j in range(m_count)
            ]
        )
    return out


__all__ = ["BUDGET_LOG_KEYS", "BudgetColumn", "member_seed", "run_budget"]
