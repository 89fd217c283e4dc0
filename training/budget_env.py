"""Multi-agent training in one budget: one agent per service, all sharing one set of parameters.

:class:`BudgetVecEnv` is a PPO vector environment (:class:`~rlscale.training.ppo.VecEnv`)
whose slots are *agents*: ``groups`` budgets of ``members`` services each, slot
``k * members + j`` being service ``j`` of budget ``k``. One policy network acts for every
slot, so the parameters are shared by construction and any number of members works.

What each agent sees and may do:

* **Observation:** its own, exactly the spec's features (:mod:`rlscale.policy.spec`): the
  model stays a normal rlscale model (same spec hash, same loader, usable outside a budget).
  The budget reaches the agent through its mask instead of extra features — the justified
  alternative to a fixed-size budget summary in the observation, which would change the
  observation contract and make the budgeted model a different kind of artefact.
* **Mask:** the safety mask with the member's CPU budget set to what it could be granted:
  what it holds, the budget's free headroom and the spare pods of other members
  (:func:`~rlscale.policy.budget.grantable_cpu_m`), so no agent can propose beyond it.
* **Arbitration:** the budget's fair rule (:func:`~rlscale.policy.budget.arbitrate`) grants
  the proposals, as the operator does.
* **Reward:** its own reward (:func:`rlscale.policy.reward.reward`, from the simulator)
  plus ``fairness_weight`` × Jain's index over the budget's members' recent SLO attainment
  (an exponential average), the same for every member of a budget, so that an agent gains
  nothing by starving the others.

Each member's service is its own :class:`~rlscale.training.sim.VectorSim` (one env per
budget) with its own loads; all members use the same episode length, so a budget's
episodes end together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.budget import (
    BudgetConfig,
    MemberRequest,
    arbitrate,
    budget_limits,
    grantable_cpu_m,
    jain_index,
    scale_down_step,
    slo_pressure,
)
from rlscale.policy.mask import ScalingState, action_mask
from rlscale.policy.spec import RAW_COLUMNS
from rlscale.training.sim import LoadLike, VectorSim
from rlscale.training.sim_config import SimConfig

BoolArray = npt.NDArray[np.bool_]


class BudgetVecEnv:
    """``groups`` budgets × ``members`` services as PPO agent slots; see the module docstring."""

    def __init__(
        self,
        sim: SimConfig,
        member_loads: Sequence[Sequence[LoadLike]],
        budget: BudgetConfig,
        *,
        groups: int,
        seed: int = 0,
        fairness_weight: float = 0.5,
        attainment_decay: float = 0.05,
    ) -> None:
        if groups < 1 or len(member_loads) < 2:
            raise ValueError("BudgetVecEnv: at least one budget of at least two members")
        self.sim = sim
        self.budget = budget
        self.members = len(member_loads)
        self.groups = groups
        self.n_envs = groups * self.members
        self.fairness_weight = fairness_weight
        self.attainment_decay = attainment_decay
        self._sims = [
            VectorSim(sim, list(loads), n_envs=groups, seed=seed * 1009 + j) for j, loads in enumerate(member_loads)
        ]
        self._names = [f"m{j}" for j in range(self.members)]
        self._attainment = np.ones((self.members, groups))
        self._masks: list[Any] = []

    # --- helpers -------------------------------------------------------------------------------------------------

    def _now(self) -> list[list[MemberRequest]]:
        """Every member's situation: [member][group]."""
        cpu_row, p99_row = RAW_COLUMNS.index("cpu_utilization"), RAW_COLUMNS.index("latency_p99_ms")
        lim, slo = self.sim.limits, self.sim.objective.latency_slo_ms
        out = []
        for j, s in enumerate(self._sims):
            cols = s.columns()
            row = []
            for k in range(self.groups):
                r, c, m = int(s.replicas[k]), int(s.cpu_limit_m[k]), int(s.memory_limit_mib[k])
                pressure = slo_pressure(float(cols[RAW_COLUMNS[cpu_row]][k]), float(cols[RAW_COLUMNS[p99_row]][k]), slo)
                row.append(
                    MemberRequest(
                        self._names[j], r, c, m, r, c, m, pressure, 1.0, scale_down_step(lim, r), lim.min_replicas
                    )
                )
            out.append(row)
        return out

    def _compute_masks(self) -> None:
        now = self._now()
        self._now_cache = now
        self._masks = []
        for j, s in enumerate(self._sims):
            state = s.scaling_state()
            per_group = []
            for k in range(self.groups):
                limits = budget_limits(
                    self.sim.limits, grantable_cpu_m(self.budget, [row[k] for row in now], self._names[j])
                )
                one = ScalingState(*(np.asarray(getattr(state, f))[k : k + 1] for f in _STATE_FIELDS))
                per_group.append(action_mask(limits, one))
            self._masks.append(per_group)

    def _obs(self, per_member: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        # Slot k * members + j = member j of group k.
        return np.stack(per_member, axis=1).reshape(self.n_envs, -1).astype(np.float32)

    # --- VecEnv --------------------------------------------------------------------------------------------------

    def reset(self) -> npt.NDArray[np.float32]:
        obs = [s.reset() for s in self._sims]
        self._attainment[:] = 1.0
        self._compute_masks()
        return self._obs(obs)

    def action_masks(self) -> BoolArray:
        rows = [[self._masks[j][k].allowed[0] for j in range(self.members)] for k in range(self.groups)]
        return np.array(rows, dtype=bool).reshape(self.n_envs, N_ACTIONS)

    def step(self, actions: npt.ArrayLike) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        a = np.asarray(actions, dtype=np.int64).reshape(self.groups, self.members)
        targets = np.zeros((3, self.members, self.groups), dtype=np.int64)
        for k in range(self.groups):
            requests = []
            for j in range(self.members):
                mask = self._masks[j][k]
                idx = int(a[k, j])
                requests.append(
                    replace(
                        self._now_cache[j][k],
                        proposed_replicas=int(mask.replicas[0, idx]),
                        proposed_cpu_limit_m=int(mask.cpu_limit_m[0, idx]),
                        proposed_memory_limit_mib=int(mask.memory_limit_mib[0, idx]),
                    )
                )
            for j, g in enumerate(arbitrate(self.budget, requests).grants):
                targets[:, j, k] = (g.replicas, g.cpu_limit_m, g.memory_limit_mib)
        obs, rewards, terms, truncs, finals = [], [], [], [], []
        per_slot: dict[str, list[Any]] = {key: [] for key in _INFO_KEYS}
        for j, s in enumerate(self._sims):
            o, r, te, tr, info = s.step_targets(targets[0, j], targets[1, j], targets[2, j])
            for key in _INFO_KEYS:
                per_slot[key].append(np.asarray(info[key]))
            obs.append(o)
            rewards.append(np.asarray(r, dtype=np.float64))
            terms.append(te)
            truncs.append(tr)
            finals.append(info.get("final_obs", o))
            ok = 1.0 - np.asarray(info["slo_violated"], dtype=np.float64)
            self._attainment[j] = (1 - self.attainment_decay) * self._attainment[j] + self.attainment_decay * ok
        fairness = np.array([jain_index(self._attainment[:, k].tolist()) for k in range(self.groups)])
        reward = np.stack(rewards) + self.fairness_weight * fairness[None, :]  # (members, groups)
        done = np.stack(terms) | np.stack(truncs)
        self._attainment[:, done.any(axis=0)] = 1.0  # a new episode in these budgets
        self._compute_masks()
        info_out: dict[str, Any] = {"final_obs": self._obs(finals), "fairness": fairness}
        for key, values in per_slot.items():  # what PPO's constrained reward reads, per slot
            info_out[key] = np.stack(values).T.reshape(-1)
        return (
            self._obs(obs),
            reward.T.reshape(-1),
            np.stack(terms).T.reshape(-1),
            np.stack(truncs).T.reshape(-1),
            info_out,
        )


_INFO_KEYS = ("slo_violated", "cpu_allocated_m", "replicas_changed", "limits_changed")
_STATE_FIELDS = (
    "replicas",
    "cpu_limit_m",
    "memory_limit_mib",
    "metrics_ok",
    "memory_utilization",
    "now",
    "last_scale_up_at",
    "last_scale_down_at",
    "last_limit_change_at",
)

__all__ = ["BudgetVecEnv"]
