"""The seed-000 experiment, reproduced in the project's simulator and decision function.

The original experiment was a small sanity check of the problem framing: a service with
**five allocation levels** (1–5 units), a reward of **−(latency + α·resources)**, and two
conventional policies — **static** at 3 units and **proportional** at one unit per 25
units of load — compared over five seeds on mean latency, p99 latency, utilisation and
cumulative reward.

Here the five levels are replicas 1–5 (CPU and memory limits pinned, so the only
resource is the unit count), the reward is :func:`rlscale.policy.reward.reward` with every
weight zero except ``latency`` (p99 / SLO, with the SLO at 1 s so the term is the p99 in
seconds) and ``cost`` (set so that the cost term is α × units), and both policies run
through :func:`rlscale.policy.decide.decide` in :func:`rlscale.training.episodes.run_episodes`.
One unit serves about 32 requests/s (30 ms of CPU per request on a 1-core pod); each seed
plays one generated day of diurnal load whose 95th percentile needs 3.5 units at 80 %
utilisation, so static 3 under-provisions the peak and proportional-25 over-provisions
it: the trade-off the experiment shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.reward import Objective, RewardWeights
from rlscale.training.episodes import run_episodes
from rlscale.training.evaluate import aggregate, decide_fn, decision_config, episode_metrics
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import generate

LEVELS = 5
#: Weight of resources against latency: reward = −(p99/SLO + ALPHA × units).
ALPHA = 0.1
STATIC_UNITS = 3
LOAD_PER_UNIT = 25.0
UNIT_CPU_M = 1000

#: Columns of the printed table: (metric key, heading).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("mean_latency_ms", "mean latency ms"),
    ("p99_latency_ms", "p99 latency ms"),
    ("utilisation", "utilisation"),
    ("cumulative_reward", "cumulative reward"),
    ("slo_violation_minutes", "SLO-violation min"),
)


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


def run_seed000(seeds: Sequence[int] = range(5), steps: int = 1440) -> dict[str, Any]:
    """Both policies on one generated day per seed (common random numbers within a seed)."""
    sim = seed000_sim_config()
    policies = {
        f"static ({STATIC_UNITS} units)": BaselineConfig(kind="static", static_replicas=STATIC_UNITS),
        f"proportional (1 unit per {LOAD_PER_UNIT:g} load)": BaselineConfig(
            kind="proportional", rate_per_replica=LOAD_PER_UNIT
        ),
    }
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in policies}
    for seed in seeds:
        load = generate("diurnal", steps, seed)
        fns = [decide_fn(decision_config(sim, b)) for b in policies.values()]
        for name, log in zip(policies, run_episodes(sim, load, fns, seed), strict=True):
            per_seed[name].append(episode_metrics(log))
    return {
        "experiment": "seed000",
        "levels": LEVELS,
        "alpha": ALPHA,
        "seeds": len(per_seed[next(iter(policies))]),
        "steps_per_seed": steps,
        "policies": {name: aggregate(ms) for name, ms in per_seed.items()},
    }


def format_seed000(result: dict[str, Any]) -> str:
    """A plain-text table, mean ± std over seeds."""
    head = ["policy", *(h for _, h in COLUMNS)]
    rows = [head]
    for name, m in result["policies"].items():
        cells = [name]
        for key, _ in COLUMNS:
            digits = 3 if key == "utilisation" else 1
            cells.append(f"{m[key]:.{digits}f} ± {m[key + '_std']:.{digits}f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        f"seed-000: {result['levels']} allocation levels, reward −(p99 s + {result['alpha']:g}·units), "
        f"{result['seeds']} seeds × {result['steps_per_seed']} steps (mean ± std)"
    ]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)
