"""The actor-critic paper's table — TH / LAT / RU / COST — on the Alibaba 2018 trace, reproduced.

The paper trains an actor-critic autoscaler with a gated context encoder on Alibaba's
cluster-trace-v2018, split chronologically 70/15/15, with the reward **αT − βL − χC − δO**
(throughput, latency, cost, control overhead), and reports throughput (TH), latency (LAT),
resource utilisation (RU) and cost (COST) on the test period for it and its baselines.

Here:

* the trace is ``alibaba2018_cluster_cpu_day3-8_1min.csv`` (cluster-mean CPU of about 4000
  machines, days 3–8; provenance in ../shared/traces/README.md), split 70/15/15 in time;
* the reward is :func:`rlscale.policy.reward.reward` with the project's default weights
  mapped onto the paper's terms — α = ``throughput`` (served share), β = ``latency``
  (p99 / SLO), χ = ``cost`` (allocated / allocatable CPU), δ = ``scaling_change`` and
  ``limit_change`` (control overhead) — and the one term the paper does not have, the SLO
  penalty, set to 0 (:data:`AC_WEIGHTS`);
* the policy is the project's PPO (an actor-critic) with the **gated context encoder** of
  policy v2 (``PpoConfig.context_size``; :class:`rlscale.training.ppo.ContextEncoder`), warm-started
  from the HPA and trained on the trace's **training window only** (:data:`TRAIN_CONFIG`),
  one model per seed; its ONNX model carries the context through ``decide``;
* the baselines — the HPA, the static count, the proportional heuristic and the threshold
  rule — are tuned on the same training window by the same reward, and the shipped PPO
  model (no encoder, trained on generated load) is shown as well;
* every policy runs through ``decide`` on the **test window**, same seeds for all.

TH is the served request rate, LAT the request-weighted mean latency (and the p99), RU the
CPU used over CPU allocated, COST the allocated CPU core-hours of the test window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.model import PolicyModel, load_default_model
from rlscale.policy.reward import Objective, RewardWeights
from rlscale.training.episodes import episode_metrics, run_episodes
from rlscale.training.evaluate import aggregate, decide_fn, decision_config, tune_baseline
from rlscale.training.ppo_config import DataConfig, PpoConfig, TrainConfig, WarmStartConfig
from rlscale.training.reproduce import format_table, plot_bars
from rlscale.training.sim_config import SimConfig
from rlscale.training.threshold import threshold_fn, tune_threshold
from rlscale.training.workloads import load_trace, traces_dir

TRACE_FILE = "alibaba2018_cluster_cpu_day3-8_1min.csv"
#: αT − βL − χC − δO: the project's default weights, without the SLO penalty the paper does not have.
AC_WEIGHTS = RewardWeights(sla_violation=0.0)
CONTEXT_SIZE = 16
#: Training: PPO with the context encoder, HPA warm start, on the trace's training window only.
TRAIN_CONFIG = TrainConfig(
    ppo=PpoConfig(
        total_steps=262_144,
        n_envs=16,
        n_steps=128,
        context_size=CONTEXT_SIZE,
        seq_len=16,
        checkpoint_every=0,
        slo_constraint=None,
    ),
    sim=SimConfig(objective=Objective(weights=AC_WEIGHTS), load_scale_range=(0.8, 1.25)),
    data=DataConfig(n_generated=0, extra_traces=(str(traces_dir() / TRACE_FILE),)),
    warm_start=WarmStartConfig(steps=65_536, epochs=5, critic_only_updates=5),
)
BASELINES: tuple[str, ...] = ("hpa", "static", "heuristic")
#: (metric key, heading, decimals).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("throughput_rps", "TH req/s", 1),
    ("mean_latency_ms", "LAT ms", 1),
    ("p99_latency_ms", "LAT p99 ms", 0),
    ("utilisation_pct", "RU %", 1),
    ("cpu_hours", "COST core-h", 1),
    ("cumulative_reward", "αT−βL−χC−δO", 1),
    ("slo_violation_minutes", "SLO-viol. min", 1),
)


def table_metrics(log: Any) -> dict[str, float]:
    """TH / LAT / RU / COST (and the reward and SLO minutes) of one run."""
    m = episode_metrics(log)
    served = float(log.steps["served"].sum())
    return {
        "throughput_rps": served / (len(log) * log.step_s),
        "mean_latency_ms": m["mean_latency_ms"],
        "p99_latency_ms": m["p99_latency_ms"],
        "utilisation_pct": 100.0 * m["utilisation"],
        "cpu_hours": m["cpu_hours"],
        "replica_hours": m["replica_hours"],
        "cumulative_reward": m["cumulative_reward"],
        "slo_violation_minutes": m["slo_violation_minutes"],
    }


def train_config(seed: int, steps: int | None) -> TrainConfig:
    """:data:`TRAIN_CONFIG` with this seed (and budget)."""
    cfg = TRAIN_CONFIG.model_copy(update={"seed": seed})
    if steps is not None:
        cfg = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"total_steps": steps})})
    return cfg


def train_models(seeds: Sequence[int], steps: int | None, say: Callable[[str], None]) -> list[PolicyModel]:
    """One context-encoder PPO model per seed, on the training window (the pipeline of ``rlscale train``)."""
    from rlscale.training.train import train

    models = []
    for seed in seeds:
        cfg = train_config(seed, steps)
        say(f"actor-critic-alibaba: training PPO + context encoder, seed {seed} ({cfg.ppo.total_steps} steps) ...")
        outcome = train(cfg, None, progress=False, tensorboard=False)
        models.append(PolicyModel.from_bytes(outcome.onnx_bytes, source=f"ac-alibaba:seed{seed}"))
    return models


def run(
    seeds: Sequence[int] = range(3), *, steps: int | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = progress if progress is not None else (lambda _msg: None)
    trace = load_trace(traces_dir() / TRACE_FILE)
    split = trace.split(0.7, 0.15, 0.15)
    sim = SimConfig(objective=Objective(weights=AC_WEIGHTS))
    models = train_models(seeds, steps, say)
    say("actor-critic-alibaba: tuning the baselines on the training window ...")
    tuned = {kind: tune_baseline(kind, sim, split.train) for kind in BASELINES}  # type: ignore[arg-type]
    th = tune_threshold(sim, split.train)
    learned = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
    shipped = load_default_model()
    names = ["PPO + context encoder (trained here)", "PPO shipped (no encoder)", *BASELINES, "threshold"]
    per_seed: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    say("actor-critic-alibaba: the test window ...")
    for k, seed in enumerate(seeds):
        fns = [
            decide_fn(learned, models[k]),
            decide_fn(learned, shipped),
            *(decide_fn(decision_config(sim, tuned[b].chosen)) for b in BASELINES),
            threshold_fn(decision_config(sim, BaselineConfig(kind="static")), th["chosen"]),
        ]
        for name, log in zip(names, run_episodes(sim, split.test, fns, seed), strict=True):
            per_seed[name].append(table_metrics(log))
    return {
        "experiment": "actor-critic-alibaba",
        "trace": trace.name,
        "split": [0.7, 0.15, 0.15],
        "window": "test",
        "test_rows": len(split.test),
        "seeds": len(seeds),
        "reward_weights": AC_WEIGHTS.model_dump(),
        "train_config": train_config(0, steps).model_dump(mode="json", exclude={"seed"}),
        "tuning": {**{b: tuned[b].summary() for b in BASELINES}, "threshold": th["chosen"].model_dump()},
        "policies": {name: aggregate(v) for name, v in per_seed.items()},
        "models": [{"source": m.source, "global_step": m.training.get("global_step")} for m in models],
    }


def format_result(result: dict[str, Any]) -> str:
    title = (
        f"actor-critic-alibaba: {result['trace']} test window ({result['test_rows']} min, last 15 %), "
        f"{result['seeds']} seeds (mean ± std); reward αT − βL − χC − δO"
    )
    return format_table(title, result["policies"], COLUMNS)


def plot_result(result: dict[str, Any], path: Path) -> None:
    plot_bars(result, COLUMNS[:5], path, "Alibaba 2018, test window: TH / LAT / RU / COST")


__all__ = ["AC_WEIGHTS", "TRAIN_CONFIG", "format_result", "plot_result", "run", "table_metrics"]
