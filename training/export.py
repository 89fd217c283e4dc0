"""Export a trained actor to ONNX: logits only, with the contract metadata, checked for parity.

The exported graph is just the actor MLP (``obs`` → ``logits``). The mask and the argmax
stay in ``policy/``, so the operator applies exactly the rules it enforces to whatever
model it is given, and a model never needs retraining when a user changes a limit.

Before the bytes are returned, two checks run: onnxruntime's logits must match torch's
on random observations spread over every feature's declared range (max abs diff ≤
``tolerance``), and :meth:`rlscale.policy.model.PolicyModel.from_bytes` — the operator's
loader — must accept the model. An export that fails either is an error, never a file.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import nn

from rlscale.policy.model import INPUT_NAME, OUTPUT_NAME, PolicyModel, model_metadata
from rlscale.policy.spec import FEATURES, N_FEATURES

#: The largest |torch − onnxruntime| logit difference an export may have.
PARITY_TOLERANCE = 1e-4
OPSET = 18


class ExportError(RuntimeError):
    """The exported model disagrees with torch or is refused by the policy loader."""


def random_observations(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Observations drawn uniformly over each feature's declared ``[lo, hi]`` range."""
    rng = np.random.default_rng(seed)
    lo = np.array([f.lo for f in FEATURES])
    hi = np.array([f.hi for f in FEATURES])
    return rng.uniform(lo, hi, size=(n, N_FEATURES)).astype(np.float32)


def _to_onnx(actor: nn.Module) -> onnx.ModelProto:
    """Trace the actor with the torch.export-based exporter, batch dimension dynamic."""
    actor = actor.eval()
    example = (torch.zeros(1, N_FEATURES),)
    batch = torch.export.Dim("batch")
    # The exporter logs every pass and warns about optional vision ops; neither helps a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            actor,
            example,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            optimize=True,
        )
    assert program is not None
    return program.model_proto


def check_parity(actor: nn.Module, policy: PolicyModel, n: int = 1024, seed: int = 0) -> float:
    """Max abs difference between torch and onnxruntime logits on random observations."""
    obs = random_observations(n, seed)
    with torch.no_grad():
        expected = actor(torch.from_numpy(obs)).numpy()
    got = policy.logits(obs)
    return float(np.max(np.abs(expected - got)))


def export_actor(
    actor: nn.Module, training: Mapping[str, Any], *, tolerance: float = PARITY_TOLERANCE
) -> tuple[bytes, float]:
    """ONNX bytes of ``actor`` with ``model_metadata(training)``; returns ``(bytes, parity)``.

    Raises :class:`ExportError` if parity exceeds ``tolerance`` or the loader refuses it.
    """
    proto = _to_onnx(actor)
    onnx.helper.set_model_props(proto, model_metadata(training))
    proto.doc_string = "rlscale PPO actor: observation features -> action logits (mask and argmax in rlscale.policy)"
    onnx.checker.check_model(proto)
    buf = io.BytesIO()
    onnx.save_model(proto, buf)
    data = buf.getvalue()
    try:
        policy = PolicyModel.from_bytes(data, source="<export>")
    except ValueError as exc:
        raise ExportError(f"the policy loader refused the exported model: {exc}") from exc
    parity = check_parity(actor, policy)
    if not parity <= tolerance:
        raise ExportError(f"ONNX logits differ from torch by {parity:.3g} (> {tolerance:g})")
    return data, parity


def write_model(path: Path, data: bytes) -> None:
    """Write atomically, so a reader (or an interrupted export) never sees half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


__all__ = ["PARITY_TOLERANCE", "ExportError", "check_parity", "export_actor", "random_observations", "write_model"]
