"""A model with memory: decide carries its context in the controller state, which survives a restart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from random_model import random_mlp_onnx, random_recurrent_onnx

from rlscale.policy.decide import ControllerState, DecisionConfig, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.model import ModelMismatchError, PolicyModel
from rlscale.policy.spec import encode_matrix

from .conftest import T0, make_obs

FULL = DecisionConfig(gate=GateConfig(mode="full"))
MEMORY = PolicyModel.from_bytes(random_recurrent_onnx(context=8, seed=5))


def _play(state: ControllerState, model: PolicyModel | None, steps: int, t0: float = T0) -> ControllerState:
    for i in range(steps):
        obs = make_obs(timestamp=t0 + 15 * i, cpu_utilization=0.3 + 0.1 * (i % 7), request_rate=50.0 + 20 * i)
        _, state = decide(obs, FULL, state, model)
    return state


def test_the_context_is_what_the_model_returned_and_feeds_the_next_decision() -> None:
    state = ControllerState.initial(FULL)
    assert state.context is None
    obs = make_obs(timestamp=T0)
    _, after = decide(obs, FULL, state, MEMORY)
    expected_logits, expected_context = MEMORY.step(encode_matrix(obs.raw(FULL)))
    assert after.context == expected_context[0].tolist() and len(after.context) == MEMORY.context_size
    # The next decision is fed this context, not an empty one.
    obs2 = make_obs(timestamp=T0 + 15, cpu_utilization=0.9)
    _, again = decide(obs2, FULL, after, MEMORY)
    fed, _ = MEMORY.step(encode_matrix(obs2.raw(FULL)), np.array([after.context], dtype=np.float32))
    _, fresh_context = MEMORY.step(encode_matrix(obs2.raw(FULL)))
    assert again.context is not None and not np.allclose(again.context, fresh_context[0])
    assert not np.allclose(fed, expected_logits)


def test_a_restart_from_the_stored_state_resumes_the_memory_bit_for_bit() -> None:
    """What the operator does: status.controllerState is to_dict() as JSON; a restart reads it back."""
    state = _play(ControllerState.initial(FULL), MEMORY, 12)
    stored = json.loads(json.dumps(state.to_dict()))
    restored = ControllerState.from_dict(stored)
    assert restored.context == state.context
    uninterrupted = _play(state, MEMORY, 5, T0 + 12 * 15)
    resumed = _play(restored, MEMORY, 5, T0 + 12 * 15)
    assert resumed.to_dict() == uninterrupted.to_dict()
    # … and forgetting it would have made a difference.
    restored.context = None
    assert _play(restored, MEMORY, 5, T0 + 12 * 15).context != uninterrupted.context


def test_no_model_or_a_feed_forward_model_keeps_no_memory() -> None:
    state = _play(ControllerState.initial(FULL), MEMORY, 3)
    assert state.context is not None
    assert _play(state, None, 1).context is None  # the model did not see this interval
    feed_forward = PolicyModel.from_bytes(random_mlp_onnx(seed=1))
    assert _play(state, feed_forward, 1).context is None


def test_a_context_of_another_width_is_replaced_by_an_empty_one() -> None:
    """A model swapped for one with a different memory must not crash or read a foreign context."""
    state = _play(ControllerState.initial(FULL), MEMORY, 3)
    wider = PolicyModel.from_bytes(random_recurrent_onnx(context=12, seed=6))
    obs = make_obs(timestamp=T0 + 60)
    _, after = decide(obs, FULL, state, wider)
    _, fresh = wider.step(encode_matrix(obs.raw(FULL)))
    assert after.context == fresh[0].tolist()


@pytest.mark.parametrize("stored", [None, [], "abc", [1.0, "x"], [1.0, float("nan")], {"a": 1}])
def test_an_unreadable_stored_context_starts_afresh(stored: object) -> None:
    data = ControllerState.initial(FULL).to_dict() | {"context": stored}
    assert ControllerState.from_dict(data).context is None


def test_a_model_that_takes_a_context_but_returns_none_is_refused() -> None:
    import onnx

    proto = onnx.load_model_from_string(random_recurrent_onnx(context=4))
    kept = [o for o in proto.graph.output if o.name != "context_out"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    with pytest.raises(ModelMismatchError, match="context"):
        PolicyModel.from_bytes(proto.SerializeToString())
