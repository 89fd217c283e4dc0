"""The book chapter's GRPO, compared with PPO on equal environment-step budgets.

Both trainers learn the five-level world of :mod:`rlscale.training.five_levels` from scratch
with the same network, the same masking, the same clipping, learning rate, discount,
entropy and temperature schedules, and the same number of environment steps — every
member of a GRPO group counts — on the same training days; each collects 2048 steps per
update (PPO: 16 envs × 128 steps; GRPO: 4 groups × 8 clones × 64 steps), so their learning
curves share an x-axis. What differs is only what GRPO is: no critic, advantages from the
group (:mod:`rlscale.training.grpo`). The final models are evaluated like the five-level
PPO row: exported to ONNX and run by ``decide`` on held-out days, one model per seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.policy.baselines import BaselineConfig
from rlscale.training.episodes import episode_metrics
from rlscale.training.evaluate import aggregate, decision_config, play
from rlscale.training.five_levels import COLUMNS, PPO_CONFIG, TRAIN_DAYS, TRAIN_SEED0, seed000_sim_config
from rlscale.training.grpo import GrpoConfig
from rlscale.training.reproduce import format_table
from rlscale.training.workloads import generate

BUDGET = 300_000
GRPO_CONFIG = GrpoConfig(
    total_steps=BUDGET,
    n_groups=4,
    group_size=8,
    horizon=64,
    learning_rate=PPO_CONFIG.learning_rate,
    gamma=PPO_CONFIG.gamma,
    ent_coef=PPO_CONFIG.ent_coef,
    ent_coef_final=PPO_CONFIG.ent_coef_final,
    temperature_final=PPO_CONFIG.temperature_final,
    update_epochs=PPO_CONFIG.update_epochs,
    n_minibatches=PPO_CONFIG.n_minibatches,
    clip_coef=PPO_CONFIG.clip_coef,
    max_grad_norm=PPO_CONFIG.max_grad_norm,
)


def run(
    seeds: Sequence[int] = range(3), *, steps: int | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """PPO and GRPO, ``steps`` environment steps each (default :data:`BUDGET`), one model per seed."""
    from rlscale.training.trainers import train_export

    budget = steps if steps is not None else BUDGET
    sim = seed000_sim_config()
    train_loads = [generate("diurnal", 1440, TRAIN_SEED0 + i) for i in range(TRAIN_DAYS)]
    configs: dict[str, dict[str, Any]] = {
        "PPO": {"ppo": PPO_CONFIG.model_copy(update={"total_steps": budget})},
        "GRPO": {"grpo": GRPO_CONFIG.model_copy(update={"total_steps": budget})},
    }
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    curves: dict[str, list[list[float]]] = {name: [] for name in configs}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    learned = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
    for seed in seeds:
        models = []
        for name, cfg in configs.items():
            if progress is not None:
                progress(f"grpo: training {name} seed {seed} ({budget} steps) ...")
            model, trained = train_export("ppo" if name == "PPO" else "grpo", sim, train_loads, seed=seed, **cfg)
            models.append(model)
            curves[name].append([s.mean_step_reward for s in trained.history])
            seconds[name].append(trained.wall_seconds)
        played = play(sim, generate("diurnal", 1440, seed), [(learned, m) for m in models], [seed])
        for name, logs in zip(configs, played, strict=True):
            per_seed[name].append(episode_metrics(logs[0]))
    steps_per_update = PPO_CONFIG.batch_size
    return {
        "experiment": "grpo",
        "world": "five-levels",
        "seeds": len(seeds),
        "budget_steps": budget,
        "policies": {
            name: {**aggregate(ms), "train_seconds": float(np.mean(seconds[name]))} for name, ms in per_seed.items()
        },
        "learning_curves": {
            name: {
                "global_step": [steps_per_update * (i + 1) for i in range(min(map(len, c)))],
                "mean_step_reward": np.mean([x[: min(map(len, c))] for x in c], axis=0).tolist(),
                "std": np.std([x[: min(map(len, c))] for x in c], axis=0).tolist(),
            }
            for name, c in curves.items()
        },
        "configs": {name: next(iter(cfg.values())).model_dump(mode="json") for name, cfg in configs.items()},
    }


def format_result(result: dict[str, Any]) -> str:
    title = (
        f"grpo vs ppo: five-level world, {result['budget_steps']} env steps each, {result['seeds']} seeds "
        "(final models on held-out days, mean ± std)"
    )
    lines = [format_table(title, result["policies"], COLUMNS)]
    for name, c in result["learning_curves"].items():
        r = c["mean_step_reward"]
        marks = [r[round(f * (len(r) - 1))] for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
        lines.append(
            f"  {name} learning curve (mean step reward at 0/25/50/75/100 % of the budget): "
            + ", ".join(f"{x:.3f}" for x in marks)
            + f"; {result['policies'][name]['train_seconds']:.0f} s per model"
        )
    return "\n".join(lines)


def plot_result(result: dict[str, Any], path: Path) -> None:
    """The learning curves: mean step reward against environment steps, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, c in result["learning_curves"].items():
        x, y, sd = np.array(c["global_step"]), np.array(c["mean_step_reward"]), np.array(c["std"])
        ax.plot(x, y, label=name)
        ax.fill_between(x, y - sd, y + sd, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean step reward (training)")
    ax.set_title(f"five-level world, {result['seeds']} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["BUDGET", "GRPO_CONFIG", "format_result", "plot_result", "run"]
