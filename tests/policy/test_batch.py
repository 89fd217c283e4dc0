"""decide_batch is decide in a loop: same Decisions, same states, bit for bit.

Hypothesis draws a handful of controllers — each with its own limits (some shared, some
not), objective, baseline (HPA / static / proportional), gate mode (shadow / gradual /
full) and model (a real random-weight ONNX MLP, shared or not, or none) — and plays them
over several consecutive steps of random observations with missing metrics, threading
each controller's state through. Every step, the loop of :func:`decide` and
:func:`decide_batch` (fed both ways: Observation objects and the raw matrix) must agree
on every field of every Decision, its mask reasons and explanation, and the new state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_model import random_mlp_onnx, random_recurrent_onnx

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide, decide_batch
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.model import PolicyModel
from rlscale.policy.observation import CONFIG_COLUMNS, FIELD_SOURCES
from rlscale.policy.reward import Objective
from rlscale.policy.spec import N_FEATURES, RAW_COLUMNS

from .conftest import T0

MODELS = (
    PolicyModel.from_bytes(random_mlp_onnx(hidden=16, seed=1)),
    PolicyModel.from_bytes(random_mlp_onnx(hidden=64, seed=2)),
    PolicyModel.from_bytes(random_recurrent_onnx(context=8, seed=3)),  # with memory: the context threads through
)
ROW = {name: i for i, name in enumerate(RAW_COLUMNS)}


@st.composite
def limit_sets(draw: st.DrawFn) -> ScalingLimits:
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(max(lo, 1), 40))
    return ScalingLimits(
        min_replicas=lo,
        max_replicas=hi,
        max_scale_up_pods=draw(st.integers(1, 6)),
        max_scale_up_percent=draw(st.sampled_from([0.0, 50.0, 100.0])),
        max_scale_down_pods=draw(st.integers(1, 4)),
        max_scale_down_percent=draw(st.sampled_from([0.0, 20.0, 50.0])),
        scale_up_cooldown_s=draw(st.sampled_from([0.0, 30.0])),
        scale_down_cooldown_s=draw(st.sampled_from([0.0, 60.0, 300.0])),
        limit_change_cooldown_s=draw(st.sampled_from([0.0, 120.0, 600.0])),
        cpu_limit_min_m=100,
        cpu_limit_max_m=draw(st.sampled_from([500, 2000, 4000])),
        cpu_limit_step_m=draw(st.sampled_from([100, 250])),
        memory_limit_min_mib=128,
        memory_limit_max_mib=draw(st.sampled_from([1024, 4096])),
        memory_limit_step_mib=draw(st.sampled_from([128, 256])),
        max_total_cpu_m=draw(st.none() | st.integers(500, 40_000)),
        max_total_memory_mib=draw(st.none() | st.integers(1024, 60_000)),
    )


@st.composite
def baselines(draw: st.DrawFn) -> BaselineConfig:
    kind = draw(st.sampled_from(["hpa", "static", "proportional"]))
    if kind == "static":
        return BaselineConfig(kind="static", static_replicas=draw(st.integers(0, 50)))
    if kind == "proportional":
        return BaselineConfig(kind="proportional", rate_per_replica=draw(st.sampled_from([5.0, 25.0, 80.0])))
    hpa = HpaConfig(
        target_utilization=draw(st.sampled_from([0.5, 0.7, 0.9])),
        scale_down_stabilization_s=draw(st.sampled_from([0.0, 60.0, 300.0])),
        scale_up_stabilization_s=draw(st.sampled_from([0.0, 30.0])),
    )
    return BaselineConfig(kind="hpa", hpa=hpa)


@st.composite
def gates(draw: st.DrawFn) -> GateConfig:
    return GateConfig(
        mode=draw(st.sampled_from(["shadow", "gradual", "full"])),
        initial_ratio=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])),
        window_decisions=draw(st.integers(2, 4)),
        min_samples=draw(st.integers(1, 2)),
        seed=draw(st.integers(0, 5)),
    )


@st.composite
def controllers(draw: st.DrawFn) -> list[tuple[list[DecisionConfig], PolicyModel | None, str | None]]:
    """1–7 controllers; each has one or two configs (a gate-mode change mid-run), a model or none."""
    limits_pool = draw(st.lists(limit_sets(), min_size=1, max_size=3))
    objectives = [Objective(), Objective(latency_slo_ms=80.0, max_error_rate=0.001)]
    out = []
    for _ in range(draw(st.integers(1, 7))):
        limits = draw(st.sampled_from(limits_pool))
        objective = draw(st.sampled_from(objectives))
        baseline = draw(baselines())
        configs = [
            DecisionConfig(limits=limits, objective=objective, baseline=baseline, gate=draw(gates()))
            for _ in range(draw(st.integers(1, 2)))
        ]
        model = draw(st.sampled_from([None, *MODELS]))
        error = draw(st.sampled_from([None, "model built for spec abc"])) if model is None else None
        out.append((configs, model, error))
    return out


#: Ranges of the random metrics, by unit (a new measured or lagged field reuses its unit's).
RANGES = {"fraction": (0.0, 2.5), "1/s": (0.0, 3000.0), "ms": (1.0, 2000.0), "requests": (0.0, 50.0)}


@st.composite
def raw_column(draw: st.DrawFn, now: float, replicas: int, cpu: int, mem: int) -> list[float]:
    """One controller's raw column: counts as given (or random), each metric random, unknown (NaN) 1 time in 5."""
    if draw(st.booleans()):
        replicas = draw(st.integers(0, 45))
        cpu, mem = draw(st.sampled_from([100, 250, 600, 2500])), draw(st.sampled_from([128, 512, 3000]))
    deployment = {
        "timestamp": now,
        "replicas": float(replicas),
        "ready_replicas": draw(st.floats(0.0, float(replicas))),  # the simulator's is fractional
        "cpu_limit_m": float(cpu),
        "memory_limit_mib": float(mem),
    }
    column = []
    for name, src in FIELD_SOURCES.items():
        if src.kind == "deployment":
            column.append(deployment[name])
        elif draw(st.integers(0, 4)) == 0:
            column.append(math.nan)
        else:
            column.append(draw(st.floats(*RANGES.get(src.unit, (0.0, 1000.0)))))
    # The configuration rows are junk on purpose: each controller's config replaces them.
    return [*column, *([-1.0] * len(CONFIG_COLUMNS))]


def as_observation(column: np.ndarray) -> Observation:
    """What the simulator's ``observation(i)`` builds from the same column."""
    values: dict[str, object] = {}
    for name, src in FIELD_SOURCES.items():
        v = float(column[ROW[name]])
        if src.kind == "deployment":
            values[name] = v if name == "timestamp" else int(v)
        else:
            values[name] = None if math.isnan(v) else v
    return Observation(**values)  # type: ignore[arg-type]


def assert_same(batch: list[Decision], loop: list[Decision]) -> None:
    assert len(batch) == len(loop)
    for b, d in zip(batch, loop, strict=True):
        assert b == d
        assert np.array_equal(b.reasons, d.reasons) and not b.reasons.flags.writeable
        assert (b.masked, b.explanation) == (d.masked, d.explanation)


def assert_same_states(batch: list[ControllerState], loop: list[ControllerState]) -> None:
    assert [s.to_dict() for s in batch] == [s.to_dict() for s in loop]
    assert [type(v) for s in batch for v in s.to_dict().values()] == [
        type(v) for s in loop for v in s.to_dict().values()
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), ctrls=controllers(), steps=st.integers(1, 6))
def test_batch_equals_the_loop_of_decide(data: st.DataObject, ctrls: list, steps: int) -> None:
    n = len(ctrls)
    states = [ControllerState.initial(configs[0]) for configs, _, _ in ctrls]
    models = [model for _, model, _ in ctrls]
    errors = [error for _, _, error in ctrls]
    now = T0 + data.draw(st.floats(0, 86_400 * 7))
    current = [(5, 500, 512)] * n
    for _ in range(steps):
        configs = [data.draw(st.sampled_from(c)) for c, _, _ in ctrls]
        raw = np.array([data.draw(raw_column(now, *cur)) for cur in current], dtype=np.float64).T
        raw_before = raw.copy()
        observations = [as_observation(raw[:, i]) for i in range(n)]
        before = [s.to_dict() for s in states]

        loop = [
            decide(obs, cfg, state, model, model_error=err)  # type: ignore[arg-type]
            for obs, cfg, state, model, err in zip(observations, configs, states, models, errors, strict=True)
        ]
        from_matrix = decide_batch(raw, configs, states, models, model_errors=errors)
        from_objects = decide_batch(observations, configs, states, models, model_errors=errors)

        loop_decisions, loop_states = [d for d, _ in loop], [s for _, s in loop]
        for decisions, new_states in (from_matrix, from_objects):
            assert_same(decisions, loop_decisions)
            assert_same_states(new_states, loop_states)
        assert [s.to_dict() for s in states] == before, "decide_batch modified its input states"
        assert np.array_equal(raw, raw_before, equal_nan=True), "decide_batch modified its input matrix"

        states = loop_states
        current = [(d.replicas, d.cpu_limit_m, d.memory_limit_mib) for d in loop_decisions]
        now += data.draw(st.sampled_from([15.0, 30.0, 60.0, 400.0]))


def test_the_onnx_runner_computes_each_row_independently() -> None:
    """What the batch relies on: a row's logits do not depend on the rest of its batch."""
    x = np.random.default_rng(0).uniform(-1.0, 3.0, size=(117, N_FEATURES)).astype(np.float32)
    for model in MODELS:
        one_by_one = np.concatenate([model.logits(x[i : i + 1]) for i in range(len(x))])
        assert np.array_equal(model.logits(x), one_by_one)


def test_empty_batch_and_bad_shapes() -> None:
    cfg = DecisionConfig()
    assert decide_batch([], [], []) == ([], [])
    state = ControllerState.initial(cfg)
    with pytest.raises(ValueError, match="raw matrix of shape"):
        decide_batch(np.zeros((len(RAW_COLUMNS), 2)), [cfg], [state])
    with pytest.raises(ValueError, match="states"):
        decide_batch(np.zeros((len(RAW_COLUMNS), 1)), [cfg], [])
    with pytest.raises(ValueError, match="models"):
        decide_batch(np.zeros((len(RAW_COLUMNS), 1)), [cfg], [state], [None, None])
    unknown_replicas = np.zeros((len(RAW_COLUMNS), 1))
    unknown_replicas[ROW["replicas"]] = np.nan
    with pytest.raises(ValueError, match="Deployment rows"):
        decide_batch(unknown_replicas, [cfg], [state])
