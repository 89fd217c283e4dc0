"""Build small MLP policy models in ONNX directly, without torch: a fixture, not part of the package.

Tests and benchmarks need real ONNX models with the right contract (and some with a
wrong one) without training anything; this writes them with ``onnx.helper``. Trained
models come from :mod:`rlscale.training.export` instead.

Imported by name: ``tests/conftest.py`` puts this folder on ``sys.path`` for the tests, and
``bench/decide_latency.py`` does the same for itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.model import CONTEXT_INPUT_NAME, CONTEXT_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME, model_metadata
from rlscale.policy.spec import N_FEATURES


def random_mlp_onnx(
    *,
    hidden: int = 64,
    seed: int = 0,
    n_features: int = N_FEATURES,
    n_actions: int = N_ACTIONS,
    metadata: Mapping[str, str] | None = None,
    training: Mapping[str, Any] | None = None,
) -> bytes:
    """A two-hidden-layer tanh MLP with random weights, serialised as ONNX bytes.

    ``metadata`` replaces the contract metadata (to build deliberately wrong models);
    by default the model carries this spec's metadata and so loads cleanly.
    """
    rng = np.random.default_rng(seed)
    dims = [n_features, hidden, hidden, n_actions]
    inits, nodes = [], []
    x = INPUT_NAME
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)
        b = np.zeros(d_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(dims) - 2
        out = OUTPUT_NAME if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Tanh", [f"z{i}"], [out]))
        x = out
    graph = helper.make_graph(
        nodes,
        "rlscale_random_mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_actions])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = dict(metadata) if metadata is not None else model_metadata(training or {"kind": "random", "seed": seed})
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_recurrent_onnx(
    *,
    context: int = 16,
    hidden: int = 32,
    seed: int = 0,
    gate_bias: float = -2.0,
    training: Mapping[str, Any] | None = None,
) -> bytes:
    """A model with memory, random weights: the gated context encoder, then a one-hidden-layer tanh MLP on the context.

    ``(obs, context_in) → (logits, context_out)`` with
    ``c = σ(W_g [obs, context_in] + b_g) ⊙ tanh(W_s obs + b_s) + (1 − σ(…)) ⊙ context_in``,
    the graph :mod:`rlscale.training.export` writes for a PPO model with an encoder, with its
    initializer names and weight layout (``(out, in)``, ``transB=1``), so fine-tuning can read it back.
    ``gate_bias`` < 0 makes the gate mostly closed, so the context remembers for many steps
    (with random weights the gate may otherwise saturate open and forget at once).
    """
    rng = np.random.default_rng(seed)

    def dense(name: str, d_in: int, d_out: int, bias: float = 0.0) -> list[onnx.TensorProto]:
        w = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(np.float32)
        b = (bias + 0.1 * rng.standard_normal(d_out)).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]

    def gemm(x: str, name: str, out: str) -> onnx.NodeProto:
        return helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [out], transB=1)

    inits = [
        *dense("encoder.input", N_FEATURES, context),
        *dense("encoder.gate", N_FEATURES + context, context, gate_bias),
        *dense("actor.0", context, hidden),
        *dense("actor.2", hidden, N_ACTIONS),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        gemm(INPUT_NAME, "encoder.input", "zs"),
        helper.make_node("Tanh", ["zs"], ["hs"]),
        helper.make_node("Concat", [INPUT_NAME, CONTEXT_INPUT_NAME], ["cat"], axis=-1),
        gemm("cat", "encoder.gate", "zg"),
        helper.make_node("Sigmoid", ["zg"], ["g"]),
        helper.make_node("Mul", ["g", "hs"], ["take"]),
        helper.make_node("Sub", ["one", "g"], ["keep_g"]),
        helper.make_node("Mul", ["keep_g", CONTEXT_INPUT_NAME], ["keep"]),
        helper.make_node("Add", ["take", "keep"], [CONTEXT_OUTPUT_NAME]),
        gemm(CONTEXT_OUTPUT_NAME, "actor.0", "zh"),
        helper.make_node("Tanh", ["zh"], ["hh"]),
        gemm("hh", "actor.2", OUTPUT_NAME),
    ]
    graph = helper.make_graph(
        nodes,
        "rlscale_random_recurrent",
        [
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_FEATURES]),
            helper.make_tensor_value_info(CONTEXT_INPUT_NAME, TensorProto.FLOAT, ["batch", context]),
        ],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", N_ACTIONS]),
            helper.make_tensor_value_info(CONTEXT_OUTPUT_NAME, TensorProto.FLOAT, ["batch", context]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, model_metadata(training or {"kind": "random recurrent", "seed": seed}))
    onnx.checker.check_model(model)
    return model.SerializeToString()
