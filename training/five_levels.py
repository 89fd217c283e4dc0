"""The five-level experiment (seed 000), reproduced in the project's simulator and decision function.

The original experiment was a small test of the problem framing: a service with **five
allocation levels** (1–5 units), a reward of **−(latency + α·resources)**, and an RL policy
compared with two conventional ones — **static** at 3 units and **proportional** at one
unit per 25 units of load — over five seeds on mean latency, p99 latency, utilisation and
cumulative reward. The paper reports RL 78.4 ms mean / 120 ms p99, static 120.5 / 300,
heuristic 95.3 / 180.

Here the five levels are replicas 1–5 (CPU and memory limits pinned, so the only
resource is the unit count), the reward is :func:`rlscale.policy.reward.reward` with every
weight zero except ``latency`` (p99 / SLO, with the SLO at 1 s so the term is the p99 in
seconds) and ``cost`` (set so that the cost term is α × units), and every policy runs
through :func:`rlscale.policy.decide.decide`. One unit serves about 32 requests/s (30 ms
of CPU per request on a 1-core pod); each seed plays one generated day of diurnal load
whose 95th percentile needs 3.5 units at 80 % utilisation, so static 3 under-provisions
the peak and proportional-25 over-provisions it: the trade-off the experiment shows.

The **PPO** row is the project's own PPO (:func:`rlscale.training.ppo.run_ppo`, the safety
mask as everywhere) trained in this world from scratch, one model per seed, on generated
diurnal days that are never evaluated on (seeds 1000+; evaluation plays days 0..N−1),
exported to ONNX and run by ``decide`` with the gate in ``full`` mode — the operator's path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.reward import Objective, RewardWeights
from rlscale.training.episodes import episode_metrics
from rlscale.training.evaluate import aggregate, decision_config, play
from rlscale.training.ppo_config import PpoConfig
from rlscale.training.reproduce import format_table, plot_bars
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import generate

LEVELS = 5
#: Weight of resources against latency: reward = −(p99/SLO + ALPHA × units).
ALPHA = 0.1
STATIC_UNITS = 3
LOAD_PER_UNIT = 25.0
UNIT_CPU_M = 1000

#: Columns of the printed table: (metric key, heading, decimals).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("mean_latency_ms", "mean latency ms", 1),
    ("p99_latency_ms", "p99 latency ms", 1),
    ("utilisation", "utilisation", 3),
    ("cumulative_reward", "cumulative reward", 1),
    ("slo_violation_minutes", "SLO-violation min", 1),
)
#: The paper's numbers (mean and p99 latency, ms); it reports no utilisation or reward values.
PAPER: dict[str, dict[str, float]] = {
    "RL": {"mean_latency_ms": 78.4, "p99_latency_ms": 120.0},
    "static": {"mean_latency_ms": 120.5, "p99_latency_ms": 300.0},
    "heuristic": {"mean_latency_ms": 95.3, "p99_latency_ms": 180.0},
}
#: PPO in this world: chosen on training days only (docs/experiments.md). A smaller discount
#: than the default config's (the world has no start-up delay worth planning 50 steps for),
#: a cooling softmax so that the arg-max the operator takes is what was trained.
PPO_CONFIG = PpoConfig(
    total_steps=300_000,
    n_envs=16,
    n_steps=128,
    learning_rate=1e-3,
    gamma=0.95,
    ent_coef_final=0.0,
    temperature_final=0.3,
    checkpoint_every=0,
)
#: Training days: generated diurnal days with seeds disjoint from the evaluated ones.
TRAIN_SEED0, TRAIN_DAYS = 1000, 8


def seed000_sim_config() -> SimConfig:
    """The seed-000 world: 5 levels, limits pinned, reward −(p99 seconds + α·units)."""
    limits = ScalingLimits(
        min_replicas=1,
        max_replicas=LEVELS,
        max_scale_up_pods=LEVELS,
        max_scale_down_pods=LEVELS,
        scale_down_cooldown_s=0,
        cpu_limit_min_m=UNIT_CPU_M,
        cpu_limit_max_m=UNIT_CPU_M,
        memory_limit_min_mib=1024,
        memory_limit_max_mib=1024,
    )
    # cost term = w · (units × UNIT_CPU_M) / (LEVELS × UNIT_CPU_M) = w · units / LEVELS, so w = α · LEVELS.
    weights = RewardWeights(
        throughput=0.0, latency=1.0, sla_violation=0.0, cost=ALPHA * LEVELS, scaling_change=0.0, limit_change=0.0
    )
    return SimConfig(
        limits=limits,
        objective=Objective(latency_slo_ms=1000.0, weights=weights),
        initial_replicas=STATIC_UNITS,
        initial_cpu_limit_m=UNIT_CPU_M,
        cpu_per_request_ms=30.0,
        target_replicas_p95=3.5,
        load_target_utilization=0.8,
    )


def run(
    seeds: Sequence[int] = range(5),
    *,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    day_steps: int = 1440,
) -> dict[str, Any]:
    """Static, proportional and PPO on one generated day per seed (common random numbers within a seed).

    ``steps`` overrides PPO's training budget (environment steps per model).
    """
    from rlscale.training.trainers import train_export

    sim = seed000_sim_config()
    baselines = {
        f"static ({STATIC_UNITS} units)": BaselineConfig(kind="static", static_replicas=STATIC_UNITS),
        f"proportional (1 unit per {LOAD_PER_UNIT:g} load)": BaselineConfig(
            kind="proportional", rate_per_replica=LOAD_PER_UNIT
        ),
    }
    ppo = PPO_CONFIG if steps is None else PPO_CONFIG.model_copy(update={"total_steps": steps})
    train_loads = [generate("diurnal", day_steps, TRAIN_SEED0 + i) for i in range(TRAIN_DAYS)]
    names = [*baselines, "PPO (trained here)"]
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    training: list[dict[str, Any]] = []
    for seed in seeds:
        if progress is not None:
            progress(f"five-levels: training PPO seed {seed} ({ppo.total_steps} steps) ...")
        model, trained = train_export("ppo", sim, train_loads, seed=seed, ppo=ppo)
        training.append({"seed": seed, "steps": trained.global_step, "seconds": round(trained.wall_seconds, 1)})
        learned = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
        controllers = [(decision_config(sim, b), None) for b in baselines.values()] + [(learned, model)]
        played = play(sim, generate("diurnal", day_steps, seed), controllers, [seed])
        for name, logs in zip(names, played, strict=True):
            per_seed[name].append(episode_metrics(logs[0]))
    return {
        "experiment": "five-levels",
        "levels": LEVELS,
        "alpha": ALPHA,
        "seeds": len(per_seed[names[0]]),
        "steps_per_seed": day_steps,
        "ppo": {"config": ppo.model_dump(mode="json"), "training": training, "train_days": TRAIN_DAYS},
        "policies": {name: aggregate(ms) for name, ms in per_seed.items()},
        "paper": PAPER,
    }


def format_result(result: dict[str, Any]) -> str:
    """Our table (mean ± std over seeds), then the paper's numbers."""
    title = (
        f"five-levels: {result['levels']} allocation levels, reward −(p99 s + {result['alpha']:g}·units), "
        f"{result['seeds']} seeds × {result['steps_per_seed']} steps (mean ± std)"
    )
    paper = "  ".join(
        f"{name} {m['mean_latency_ms']:g} / {m['p99_latency_ms']:g} ms" for name, m in result["paper"].items()
    )
    return format_table(title, result["policies"], COLUMNS) + f"\npaper (mean / p99 latency): {paper}"


def plot_result(result: dict[str, Any], path: Path) -> None:
    plot_bars(result, COLUMNS[:4], path, "five-levels (mean ± std over seeds)")
