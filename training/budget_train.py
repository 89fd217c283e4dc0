"""Train the coordinated agents: PPO with shared parameters over the members of budgets.

Continues from a trained policy (the shipped model by default, as
:mod:`rlscale.training.finetune` does: actor weights read back from ONNX, a fresh critic
trained alone first) in :class:`~rlscale.training.budget_env.BudgetVecEnv`: ``groups``
budgets whose members play the *training* windows of the given traces, the budget's
headroom in each agent's mask, the fair arbitration between them, and a fairness term
(Jain's index over the members' recent SLO attainment) added to every agent's own reward.

The reward is the multi-objective one of :func:`rlscale.policy.reward.reward` (not the
Lagrangian SLO constraint of default training): the constraint's reward is rebuilt from
cost and violations alone, which would drop the fairness term. The result is an ordinary
rlscale model (the spec's observation, this spec's hash), exported with its provenance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.budget import BudgetConfig
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import N_FEATURES
from rlscale.training.budget_env import BudgetVecEnv
from rlscale.training.finetune import actor_critic_from_onnx, base_config
from rlscale.training.ppo import ActorCritic, UpdateStats, run_ppo
from rlscale.training.ppo_config import FineTuneConfig
from rlscale.training.workloads import Trace


def train_coordinated(
    init: PolicyModel,
    traces: Sequence[Trace],
    budget_cores: float,
    *,
    minutes: float = 10.0,
    seed: int = 0,
    groups: int = 8,
    fairness_weight: float = 0.5,
    episode_steps: int = 360,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """ONNX bytes of the coordinated agents' shared policy, trained for about ``minutes``."""
    from rlscale.training.export import export_actor
    from rlscale.training.train import training_info

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    recorded = init.training.get("config", {}) if isinstance(init.training.get("config"), dict) else {}
    hidden = recorded.get("ppo", {}).get("hidden")
    ac = actor_critic_from_onnx(init.data, seed, tuple(hidden) if hidden else None)
    base, _note = base_config(init.training, ac.hidden)
    ft = FineTuneConfig()
    members = len(traces)
    ppo = base.ppo.model_copy(
        update={
            "n_envs": groups * members,
            "n_steps": 64,
            "n_minibatches": 4,
            "total_steps": ft.total_steps,
            "learning_rate": ft.learning_rate,
            "ent_coef": ft.ent_coef,
            "ent_coef_final": None,
            "slo_constraint": None,
            "norm_reward": True,
        }
    )
    sim = base.sim.model_copy(update={"episode_steps": episode_steps})
    windows = [t.split().train for t in traces]
    budget = BudgetConfig(cpu_m=max(1, round(budget_cores * 1000)))
    env = BudgetVecEnv(sim, [[w] for w in windows], budget, groups=groups, seed=seed, fairness_weight=fairness_weight)
    budget_s = minutes * 60.0

    def out_of_time(stats: UpdateStats, _model: ActorCritic) -> bool:
        say(f"update {stats.update}: mean step reward {stats.mean_step_reward:.3f}")
        return time.perf_counter() - t0 >= budget_s

    say(f"training {groups} budgets x {members} members for {minutes} min")
    result = run_ppo(
        env,
        ppo,
        n_features=N_FEATURES,
        n_actions=N_ACTIONS,
        seed=seed,
        progress=False,
        tensorboard=False,
        model=ac,
        critic_only_updates=ft.critic_warmup_updates,
        on_update=out_of_time,
    )
    config = base.model_copy(update={"seed": seed, "ppo": ppo, "sim": sim, "warm_start": None})
    data_provenance: dict[str, Any] = {
        "kind": "budget",
        "series": [w.provenance() for w in windows],
        "budget_cores": budget_cores,
        "groups": groups,
        "fairness_weight": fairness_weight,
    }
    info = training_info(config, data_provenance, result)
    info["algorithm"] = "multi-agent ppo, shared parameters, fair budget arbitration, rlscale.training.budget_train"
    info["budget"] = {
        "init_from": init.source,
        "steps_done": result.global_step,
        "updates": len(result.history),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    data, _parity = export_actor(result.model.policy_module(), info)
    return data


__all__ = ["train_coordinated"]
