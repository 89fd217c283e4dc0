"""The ONNX runner loads real ONNX files and refuses any built for another contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from random_model import random_mlp_onnx

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.model import (
    META_ACTIONS,
    META_SPEC_HASH,
    ModelMismatchError,
    PolicyModel,
    masked_argmax,
    model_metadata,
)
from rlscale.policy.spec import N_FEATURES


def test_loads_a_valid_model_and_returns_logits(tmp_path: Path):
    path = tmp_path / "m.onnx"
    path.write_bytes(random_mlp_onnx(seed=1, training={"who": "test"}))
    model = PolicyModel.load(path)
    out = model.logits(np.zeros((3, N_FEATURES), dtype=np.float32))
    assert out.shape == (3, N_ACTIONS) and np.isfinite(out).all()
    assert model.training == {"who": "test"}
    # Deterministic: same input, same logits.
    x = np.random.default_rng(0).normal(size=(5, N_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(model.logits(x), model.logits(x))


def test_refuses_another_spec():
    meta = model_metadata({}) | {META_SPEC_HASH: "0123456789abcdef"}
    with pytest.raises(ModelMismatchError, match="built for spec 0123456789abcdef"):
        PolicyModel.from_bytes(random_mlp_onnx(metadata=meta))


def test_refuses_missing_metadata():
    with pytest.raises(ModelMismatchError, match=r"no rlscale\.spec_hash"):
        PolicyModel.from_bytes(random_mlp_onnx(metadata={}))


def test_refuses_another_action_table():
    table = json.loads(model_metadata({})[META_ACTIONS])[:-1]
    meta = model_metadata({}) | {META_ACTIONS: json.dumps(table)}
    with pytest.raises(ModelMismatchError, match="action table"):
        PolicyModel.from_bytes(random_mlp_onnx(metadata=meta))


def test_refuses_wrong_shapes():
    with pytest.raises(ModelMismatchError, match="logits"):
        PolicyModel.from_bytes(random_mlp_onnx(n_actions=N_ACTIONS - 1))
    with pytest.raises(ModelMismatchError, match="features"):
        PolicyModel.from_bytes(random_mlp_onnx(n_features=N_FEATURES + 2))


def test_refuses_garbage_and_missing_files(tmp_path: Path):
    with pytest.raises(ModelMismatchError, match="not a valid ONNX model"):
        PolicyModel.from_bytes(b"definitely not onnx", source="junk")
    with pytest.raises(ModelMismatchError, match="cannot read model file"):
        PolicyModel.load(tmp_path / "absent.onnx")


def test_masked_argmax_never_picks_a_masked_action_and_breaks_ties_low():
    logits = np.array([[0.0, 5.0, 5.0, 9.0]], dtype=np.float32)
    allowed = np.array([[True, True, True, False]])
    assert masked_argmax(logits, allowed)[0] == 1
    only_noop = np.array([[True, False, False, False]])
    assert masked_argmax(logits, only_noop)[0] == 0
