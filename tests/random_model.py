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
from rlscale.policy.model import INPUT_NAME, OUTPUT_NAME, model_metadata
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
