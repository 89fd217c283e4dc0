"""The operator's batched decisions equal the decisions made one by one.

:class:`~rlscale.operator.batchdecide.DecisionBatcher` collects the decisions that
reconciles ask for concurrently and runs ``decide_batch`` once. Hypothesis draws up to
24 controllers — each with its own limits (some shared), baseline, gate mode, model (the
shipped ONNX model, a random-weight one, or none with a model error), state after a few
decisions and observation with missing metrics — and asks for all decisions concurrently
through the batcher, with a small ``max_batch`` sometimes (so batches also flush when
full) and some requests cancelled while they wait. Every decision and new state must be
exactly what ``decide`` returns for that controller alone.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_model import random_mlp_onnx

from rlscale.operator.batchdecide import DecisionBatcher
from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.decide import ControllerState, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.model import PolicyModel, load_default_model
from rlscale.policy.observation import FIELD_SOURCES

T0 = 1_700_000_000.0
MODELS: tuple[PolicyModel | None, ...] = (
    None,
    load_default_model(),
    PolicyModel.from_bytes(random_mlp_onnx(hidden=16, seed=3)),
)
LIMITS = (
    ScalingLimits(),
    ScalingLimits(min_replicas=2, max_replicas=8, scale_down_cooldown_s=0.0, max_total_cpu_m=6000),
    ScalingLimits(min_replicas=0, max_replicas=40, max_scale_up_pods=6, cpu_limit_max_m=4000),
)


@st.composite
def configs(draw: st.DrawFn) -> DecisionConfig:
    kind = draw(st.sampled_from(["hpa", "static", "proportional"]))
    baseline = (
        BaselineConfig(kind="static", static_replicas=draw(st.integers(0, 20)))
        if kind == "static"
        else BaselineConfig(kind="proportional", rate_per_replica=25.0)
        if kind == "proportional"
        else BaselineConfig()
    )
    gate = GateConfig(
        mode=draw(st.sampled_from(["shadow", "gradual", "full"])),
        initial_ratio=draw(st.sampled_from([0.0, 0.5, 1.0])),
        window_decisions=2,
        min_samples=1,
        seed=draw(st.integers(0, 3)),
    )
    return DecisionConfig(limits=draw(st.sampled_from(LIMITS)), baseline=baseline, gate=gate)


@st.composite
def observations(draw: st.DrawFn, now: float) -> Observation:
    replicas = draw(st.integers(0, 30))
    values: dict[str, object] = {
        "timestamp": now,
        "replicas": replicas,
        "ready_replicas": draw(st.integers(0, replicas)),
        "cpu_limit_m": draw(st.sampled_from([250, 500, 2000])),
        "memory_limit_mib": draw(st.sampled_from([256, 512, 2048])),
    }
    for name, src in FIELD_SOURCES.items():
        if src.kind != "deployment":
            unknown = draw(st.integers(0, 4)) == 0
            values[name] = None if unknown else draw(st.floats(0.0, 1.0 if src.unit == "fraction" else 2000.0))
    return Observation(**values)  # type: ignore[arg-type]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), n=st.integers(1, 24), max_batch=st.sampled_from([1, 3, 1024]))
def test_batched_decisions_equal_one_by_one(data: st.DataObject, n: int, max_batch: int) -> None:
    now = T0 + data.draw(st.floats(0, 86_400))
    cases = []
    for _ in range(n):
        config = data.draw(configs())
        model = data.draw(st.sampled_from(MODELS))
        error = None if model is not None else data.draw(st.sampled_from([None, "model built for spec abc"]))
        state = ControllerState.initial(config)
        for k in range(data.draw(st.integers(0, 3))):  # some history: gate windows, cooldowns
            _, state = decide(data.draw(observations(now - 60 * (3 - k))), config, state, model, model_error=error)
        cases.append((data.draw(observations(now)), config, state, model, error))
    cancelled = set(data.draw(st.lists(st.integers(0, n - 1), max_size=3)))
    expected = [decide(o, c, s, m, model_error=e) for o, c, s, m, e in cases]
    before = [s.to_dict() for _, _, s, _, _ in cases]

    batches: list[int] = []

    async def run() -> list[object]:
        batcher = DecisionBatcher(window_s=0.002, max_batch=max_batch, observe=lambda _s, size: batches.append(size))
        tasks = [asyncio.create_task(batcher.decide(o, c, s, m, e)) for o, c, s, m, e in cases]
        await asyncio.sleep(0)  # every request is waiting now (or decided already, when a batch filled up)
        for i in list(cancelled):
            if tasks[i].done():
                cancelled.discard(i)  # too late to cancel: it must hold the right decision
            else:
                tasks[i].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    got = asyncio.run(run())
    for i, (result, (decision, state)) in enumerate(zip(got, expected, strict=True)):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError)
            continue
        assert isinstance(result, tuple)
        batch_decision, batch_state = result
        assert batch_decision == decision
        assert np.array_equal(batch_decision.reasons, decision.reasons)
        assert batch_decision.explanation == decision.explanation
        assert all(_same(a, b) for a, b in zip(batch_state.to_dict().values(), state.to_dict().values(), strict=True))
    assert [s.to_dict() for _, _, s, _, _ in cases] == before, "a batch modified the states it was given"
    live = n - len(cancelled)
    # A request cancelled after its batch ran was decided all the same; one cancelled before was not.
    assert live <= sum(batches) <= n
    if max_batch >= n:  # all waiting together: one decide_batch call
        assert len(batches) == (1 if live else 0)


def test_one_bad_controller_fails_alone() -> None:
    """A controller whose input makes decide raise gets the error; the others in its batch their decisions."""
    config = DecisionConfig()
    good = Observation(timestamp=T0, replicas=3, ready_replicas=3, cpu_limit_m=500, memory_limit_mib=512)
    bad = Observation(timestamp=T0, replicas=3, ready_replicas=3, cpu_limit_m=500, memory_limit_mib=512)
    object.__setattr__(bad, "replicas", "three")  # what no validated Observation holds

    async def run() -> list[object]:
        batcher = DecisionBatcher(window_s=0.001)
        state = ControllerState.initial(config)
        return list(
            await asyncio.gather(
                batcher.decide(good, config, state, None),
                batcher.decide(bad, config, state, None),
                return_exceptions=True,
            )
        )

    first, second = asyncio.run(run())
    assert first == decide(good, config, ControllerState.initial(config), None)
    assert isinstance(second, Exception)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DecisionBatcher(max_batch=0)
