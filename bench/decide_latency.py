"""Decision latency: observation → ONNX → mask → gate, in-process, with a small MLP policy.

Target (issue 2): p99 ≤ 200 µs per decision. Prints p50/p99 per stage and for the whole
``decide`` call over varied observations, and the ratio of p99 to the target. Also times
``decide`` with a model that has memory (the gated context encoder, ``--memory`` wide, its
context carried in the controller state) against the feed-forward one: target (policy v2)
p50 ≤ 1.5× the feed-forward model's.

    python bench/decide_latency.py [--n 20000] [--hidden 64] [--memory 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from rlscale.policy.decide import ControllerState, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.mask import ScalingState, action_mask
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import encode_matrix

# The random-weight model is a test fixture (tests/random_model.py), not part of the package.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from random_model import random_mlp_onnx, random_recurrent_onnx

TARGET_P99_US = 200.0
TARGET_MEMORY_RATIO = 1.5


def _observations(n: int, seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        replicas = int(rng.integers(1, 50))
        out.append(
            Observation(
                timestamp=1.7e9 + 15.0 * i,
                replicas=replicas,
                ready_replicas=replicas,
                cpu_limit_m=int(rng.choice([250, 500, 1000])),
                memory_limit_mib=512,
                cpu_utilization=float(rng.uniform(0.1, 1.5)),
                memory_utilization=float(rng.uniform(0.2, 0.9)),
                request_rate=float(rng.uniform(1, 2000)),
                request_rate_prev=float(rng.uniform(1, 2000)),
                latency_p50_ms=float(rng.uniform(5, 100)),
                latency_p99_ms=float(rng.uniform(20, 600)),
                latency_p99_prev_ms=float(rng.uniform(20, 600)),
                error_rate=float(rng.uniform(0, 0.02)),
                queue_per_replica=float(rng.uniform(0, 20)),
            )
        )
    return out


def _percentiles(samples_ns: list[int]) -> tuple[float, float, float]:
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--memory", type=int, default=64, help="context width of the model with memory")
    args = parser.parse_args()

    model = PolicyModel.from_bytes(random_mlp_onnx(hidden=args.hidden))
    memory = PolicyModel.from_bytes(random_recurrent_onnx(context=args.memory, hidden=args.hidden))
    config = DecisionConfig(gate=GateConfig(mode="gradual", initial_ratio=0.5))
    observations = _observations(args.n, seed=1)
    state = ControllerState.initial(config)
    memory_state = ControllerState.initial(config)
    for obs in observations[:500]:  # warm-up
        _, state = decide(obs, config, state, model)
        _, memory_state = decide(obs, config, memory_state, memory)

    stages: dict[str, list[int]] = {
        "encode": [],
        "onnx": [],
        "mask": [],
        "decide (total)": [],
        "decide, no model": [],
        "decide, with memory": [],
    }
    clock = time.perf_counter_ns
    cpu_start = time.process_time()
    for obs in observations:
        t0 = clock()
        x = encode_matrix(obs.raw(config))
        t1 = clock()
        model.logits(x)
        t2 = clock()
        action_mask(
            config.limits,
            ScalingState.single(
                replicas=obs.replicas,
                cpu_limit_m=obs.cpu_limit_m,
                memory_limit_mib=obs.memory_limit_mib,
                metrics_ok=obs.metrics_ok,
                memory_utilization=obs.memory_utilization,
                now=obs.timestamp,
                last_scale_up_at=state.last_scale_up_at,
                last_scale_down_at=state.last_scale_down_at,
                last_limit_change_at=state.last_limit_change_at,
            ),
        )
        t3 = clock()
        _, state = decide(obs, config, state, model)
        t4 = clock()
        decide(obs, config, state, None)
        t5 = clock()
        _, memory_state = decide(obs, config, memory_state, memory)
        t6 = clock()
        stages["encode"].append(t1 - t0)
        stages["onnx"].append(t2 - t1)
        stages["mask"].append(t3 - t2)
        stages["decide (total)"].append(t4 - t3)
        stages["decide, no model"].append(t5 - t4)
        stages["decide, with memory"].append(t6 - t5)

    cpu_per_iteration = (time.process_time() - cpu_start) / len(observations) * 1e6
    load = os.getloadavg()[0]
    print(f"decision latency over {args.n} varied observations, MLP hidden={args.hidden}, load avg {load:.2f}")
    print(f"(process CPU time per loop iteration, all stages together: {cpu_per_iteration:.1f} µs)")
    print(f"{'stage':<20}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}")
    for name, samples in stages.items():
        p50, p99, mean = _percentiles(samples)
        print(f"{name:<20}{p50:>10.1f}{p99:>10.1f}{mean:>10.1f}")
    p99 = _percentiles(stages["decide (total)"])[1]
    print(f"p99/target = {p99 / TARGET_P99_US:.2f} (target p99 ≤ {TARGET_P99_US:.0f} µs)")
    ratio = _percentiles(stages["decide, with memory"])[0] / _percentiles(stages["decide (total)"])[0]
    print(
        f"with memory (context {args.memory}) / feed-forward, p50: {ratio:.2f}× (target ≤ {TARGET_MEMORY_RATIO:.1f}×)"
    )


if __name__ == "__main__":
    main()
