"""Export a trained actor to ONNX: logits only, with the contract metadata, checked for parity.

The exported graph is just the actor MLP (``obs`` → ``logits``), or for a policy with
memory the context encoder and the actor (``(obs, context_in)`` → ``(logits, context_out)``,
:class:`~rlscale.training.ppo.RecurrentActor`). The mask and the argmax
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

from rlscale.policy.model import (
    CONTEXT_INPUT_NAME,
    CONTEXT_OUTPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PolicyModel,
    model_metadata,
)
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


def context_size(actor: nn.Module) -> int:
    """The width of the context a policy module carries (0: feed-forward)."""
    encoder = getattr(actor, "encoder", None)
    return int(encoder.size) if encoder is not None else 0


def _to_onnx(actor: nn.Module) -> onnx.ModelProto:
    """Trace the actor with the torch.export-based exporter, batch dimension dynamic."""
    actor = actor.eval()
    width = context_size(actor)
    batch = torch.export.Dim("batch")
    example: tuple[torch.Tensor, ...] = (torch.zeros(1, N_FEATURES),)
    names_in, names_out = [INPUT_NAME], [OUTPUT_NAME]
    dynamic: tuple[dict[int, Any], ...] = ({0: batch},)
    if width:
        example += (torch.zeros(1, width),)
        names_in.append(CONTEXT_INPUT_NAME)
        names_out.append(CONTEXT_OUTPUT_NAME)
        dynamic += ({0: batch},)
    # The exporter logs every pass and warns about optional vision ops; neither helps a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            actor,
            example,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            optimize=True,
        )
    assert program is not None
    return program.model_proto


def check_parity(actor: nn.Module, policy: PolicyModel, n: int = 1024, seed: int = 0) -> float:
    """Max abs difference between torch and onnxruntime outputs on random observations (and contexts)."""
    obs = random_observations(n, seed)
    width = context_size(actor)
    if policy.context_size != width:
        return float("inf")
    if not width:
        with torch.no_grad():
            expected = actor(torch.from_numpy(obs)).numpy()
        return float(np.max(np.abs(expected - policy.logits(obs))))
    context = np.random.default_rng(seed + 1).uniform(-1.0, 1.0, size=(n, width)).astype(np.float32)
    with torch.no_grad():
        logits, next_context = (t.numpy() for t in actor(torch.from_numpy(obs), torch.from_numpy(context)))
    got_logits, got_context = policy.step(obs, context)
    return float(max(np.max(np.abs(logits - got_logits)), np.max(np.abs(next_context - got_context))))


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
