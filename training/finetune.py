"""Fine-tune a trained policy on one workload's history: PPO continued from the model's own weights.

The shipped model is trained on generated load so that it works anywhere; a user with a
week of one service's history can specialise it to that service. ``rlscale train
--init-from MODEL --trace FILE`` (and :func:`fine_tune`, which the evaluation's ``tuned``
policy calls) does that:

* **Weights.** The ONNX file holds only the actor (``obs → logits``, Gemm/Tanh). Its
  initializers are read back into a torch :class:`~rlscale.training.ppo.ActorCritic` of the
  same widths (:func:`actor_from_onnx`; the widths come from the graph itself and are
  checked against the model's recorded config). The critic is not exported, so it starts
  fresh and is trained alone for the first ``critic_warmup_updates`` updates: advantages
  from an untrained critic are noise, and noise would pull a good policy apart before the
  critic has learnt anything.
* **Data.** Only the trace's chronological *training* window
  (``load_trace(...).split().train``) plus a little of the generated mix; its validation
  and test windows are never played, so evaluating the result on them stays fair.
* **Config.** The init model's own :class:`~rlscale.training.ppo_config.TrainConfig`
  (service, objective, γ, λ, clipping, widths) with the knobs of
  :class:`~rlscale.training.ppo_config.FineTuneConfig` in place of the step count, learning
  rate and entropy schedule, and no HPA warm start (the model *is* the start).
* **Budget.** A wall-clock budget, checked between PPO updates (``run_ppo``'s
  ``on_update``), so a fine-tune never runs away on a slow or busy machine.
* **Provenance.** The output carries the usual training metadata plus a ``fine_tune`` block:
  the init model (source, sha256 of its bytes, spec hash, its own training record), the
  trace and the rows used, the budget, steps done and wall time. It is exported through
  :func:`~rlscale.training.export.export_actor`, so it carries *this* spec's hash and goes
  through the same parity check and loader as any model; an init model built for another
  spec is refused by the loader before anything is trained.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import numpy_helper
from pydantic import ValidationError
from torch import nn

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.model import CONTEXT_INPUT_NAME, INPUT_NAME, META_SPEC_HASH, OUTPUT_NAME, PolicyModel
from rlscale.policy.spec import N_FEATURES
from rlscale.training.ppo import ActorCritic, UpdateStats, seed_everything
from rlscale.training.ppo_config import DataConfig, FineTuneConfig, PpoConfig, TrainConfig
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, load_trace, training_mix

ModelLike = PolicyModel | bytes | str | os.PathLike[str]
TraceLike = Trace | str | os.PathLike[str]


class FineTuneError(ValueError):
    """The init model cannot be fine-tuned (not an MLP this module can read back) or the trace is unusable."""


# --------------------------------------------------------------------------- ONNX → torch


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def actor_from_onnx(model: onnx.ModelProto | bytes) -> nn.Sequential:
    """The actor MLP of an exported policy, as the ``nn.Sequential`` :class:`ActorCritic` builds.

    Reads the chain ``obs → Gemm → Tanh → … → Gemm → logits`` that
    :mod:`rlscale.training.export` writes (and ``tests/random_model.py`` builds), weights
    taken from the initializers; ``transB`` is honoured, any other op or a Gemm with
    ``alpha``/``beta``/``transA`` other than the defaults is refused, since it would not be
    the network PPO trains. Layer indices match ``ActorCritic.actor`` (``0.weight``, ``2.weight``, …)
    so the state dict loads as is.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_model_from_string(model)
    graph = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: list[nn.Module] = []
    tensor, used = INPUT_NAME, 0
    while tensor != OUTPUT_NAME:
        nodes = consumers.get(tensor, [])
        if len(nodes) != 1:
            raise FineTuneError(f"expected one node reading {tensor!r}, found {len(nodes)}: not an rlscale MLP actor")
        node = nodes[0]
        used += 1
        if node.op_type == "Tanh":
            if not layers or not isinstance(layers[-1], nn.Linear):
                raise FineTuneError("a Tanh that does not follow a Gemm: not an rlscale MLP actor")
            layers.append(nn.Tanh())
        elif node.op_type == "Gemm":
            if layers and not isinstance(layers[-1], nn.Tanh):
                raise FineTuneError("two Gemms without a Tanh between them: not an rlscale MLP actor")
            attrs = _attrs(node)
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise FineTuneError(f"Gemm {node.name!r} has alpha/beta/transA {attrs}: not an rlscale MLP actor")
            # The exporter's optimiser drops an all-zero bias (a fresh network's), leaving Gemm(x, W).
            bias_name = node.input[2] if len(node.input) > 2 else ""
            if node.input[1] not in inits or (bias_name and bias_name not in inits):
                raise FineTuneError(f"Gemm {node.name!r} does not take its weight and bias from initializers")
            weight = inits[node.input[1]]
            if weight.ndim != 2:
                raise FineTuneError(f"Gemm {node.name!r} has a weight of shape {weight.shape}")
            if attrs.get("transB", 0) == 0:
                weight = weight.T  # stored (in, out); torch keeps (out, in)
            bias = inits[bias_name] if bias_name else np.zeros(weight.shape[0], dtype=np.float32)
            if bias.shape != (weight.shape[0],):
                raise FineTuneError(f"Gemm {node.name!r} has weight {weight.shape} and bias {bias.shape}")
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
                linear.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
            layers.append(linear)
        else:
            raise FineTuneError(f"unsupported op {node.op_type!r} in the actor graph (only Gemm and Tanh)")
        tensor = node.output[0]
    if used != len(graph.node) or not isinstance(layers[-1], nn.Linear):
        raise FineTuneError("the graph has nodes outside the Gemm/Tanh chain: not an rlscale MLP actor")
    return nn.Sequential(*layers).eval()


def hidden_widths(actor: nn.Sequential) -> tuple[int, ...]:
    """The hidden layer widths of an actor MLP (every Linear's output but the last)."""
    outs = [m.out_features for m in actor if isinstance(m, nn.Linear)]
    return tuple(outs[:-1])


def recurrent_from_onnx(proto: onnx.ModelProto, hidden: Sequence[int], context_size: int, seed: int) -> ActorCritic:
    """An :class:`ActorCritic` with a context encoder, its encoder and actor read back from the ONNX graph.

    Each layer is a Gemm whose weight initializer the exporter names after the traced
    module's parameter (``encoder.gate.weight``, ``actor.0.weight``, …). Biases are taken
    from the Gemm that uses the weight, not by name: the exporter's optimiser merges equal
    initializers (a fresh network's zero biases) under one name, or drops them.
    """
    seed_everything(seed)
    model = ActorCritic(N_FEATURES, N_ACTIONS, hidden, context_size)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    found: dict[str, npt.NDArray[np.float32]] = {}
    for node in proto.graph.node:
        if node.op_type != "Gemm" or not node.input[1].endswith(".weight"):
            continue
        attrs = _attrs(node)
        if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            raise FineTuneError(f"Gemm {node.name!r} has attributes {attrs}: not an rlscale encoder model")
        weight = inits.get(node.input[1])
        if weight is None:
            raise FineTuneError(f"Gemm {node.name!r} does not take its weight from an initializer")
        found[node.input[1]] = weight
        bias_name = node.input[2] if len(node.input) > 2 else ""
        layer = node.input[1].removesuffix(".weight")
        found[layer + ".bias"] = inits[bias_name] if bias_name in inits else np.zeros(weight.shape[0], np.float32)
    state = model.policy_module().state_dict()
    for name, param in state.items():
        value = found.get(name)
        if value is None or tuple(value.shape) != tuple(param.shape):
            got = "missing" if value is None else f"of shape {tuple(value.shape)}"
            raise FineTuneError(f"the model's {name} is {got}, expected {tuple(param.shape)}: not an rlscale encoder")
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    model.policy_module().load_state_dict(state)
    return model.eval()


def actor_critic_from_onnx(data: bytes, seed: int = 0, hidden: Sequence[int] | None = None) -> ActorCritic:
    """An :class:`ActorCritic` whose actor (and encoder) is the ONNX model's and whose critic is freshly initialised.

    The critic's initialisation is seeded (``seed``), so a fine-tune is reproducible. A model
    with memory needs its recorded ``hidden`` widths (its graph is not one MLP chain).
    """
    proto = onnx.load_model_from_string(data)
    context = [i for i in proto.graph.input if i.name == CONTEXT_INPUT_NAME]
    if context:
        width = context[0].type.tensor_type.shape.dim[-1].dim_value
        if hidden is None:
            raise FineTuneError("a model with memory must record its hidden widths in its training config")
        return recurrent_from_onnx(proto, hidden, int(width), seed)
    actor = actor_from_onnx(proto)
    linears = [m for m in actor if isinstance(m, nn.Linear)]
    if linears[0].in_features != N_FEATURES or linears[-1].out_features != N_ACTIONS:
        raise FineTuneError(
            f"the actor maps {linears[0].in_features} features to {linears[-1].out_features} logits; "
            f"this spec has {N_FEATURES} features and {N_ACTIONS} actions"
        )
    seed_everything(seed)
    model = ActorCritic(N_FEATURES, N_ACTIONS, hidden_widths(actor))
    model.actor.load_state_dict(actor.state_dict())
    return model.eval()


# --------------------------------------------------------------------------- inputs


def _load_policy(model: ModelLike) -> PolicyModel:
    """A checked :class:`PolicyModel` (the loader refuses another spec's model, as everywhere)."""
    if isinstance(model, PolicyModel):
        if not model.data:
            raise FineTuneError(f"model {model.source} was built without its bytes; load it with PolicyModel.load")
        return model
    if isinstance(model, bytes):
        return PolicyModel.from_bytes(model)
    return PolicyModel.load(Path(model))


def training_window(trace: TraceLike, split: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Trace:
    """The chronological training window of ``trace``: the only rows a fine-tune plays.

    A whole series (a path, or a :class:`Trace` whose window is ``"all"``) is split here; a
    training window is taken as is; a validation or test window is refused, since
    fine-tuning on it would leak the period the result is evaluated on.
    """
    t = load_trace(trace) if not isinstance(trace, Trace) else trace
    if t.window == "all":
        return t.split(*split).train
    if t.window == "train":
        return t
    raise FineTuneError(f"trace {t.name!r} is its {t.window!r} window; fine-tuning reads only a training window")


def base_config(training: Mapping[str, Any], hidden: Sequence[int]) -> tuple[TrainConfig, str | None]:
    """The init model's own training config, or the default one (with its widths) if it records none.

    Returns ``(config, note)``; ``note`` says why the default was used (``None`` when the
    model's own config was). A recorded config whose widths disagree with the weights is an
    error: the metadata would then not describe the model.
    """
    raw = training.get("config")
    note: str | None = None
    try:
        config = TrainConfig.model_validate(raw) if raw is not None else None
    except ValidationError as exc:
        config, note = None, f"the init model's recorded config is not valid here ({exc.error_count()} errors)"
    if config is None:
        note = note or "the init model records no training config"
        default = TrainConfig()
        ppo = PpoConfig.model_validate({**default.ppo.model_dump(), "hidden": tuple(hidden)})
        return default.model_copy(update={"ppo": ppo}), note + "; the default TrainConfig was used"
    if tuple(config.ppo.hidden) != tuple(hidden):
        raise FineTuneError(f"the init model's config says hidden {config.ppo.hidden}, its weights have {hidden}")
    return config, None


def fine_tune_config(base: TrainConfig, ft: FineTuneConfig, trace: Trace, *, seed: int) -> TrainConfig:
    """``base`` with the fine-tune's steps, learning rate, entropy, data and seed; no warm start.

    ``ft.violation_rate`` and ``ft.load_scale_range``, when set, replace the init model's
    SLO budget and load multipliers: the workload's own objective instead of the mix's.
    """
    slo = base.ppo.slo_constraint
    if ft.violation_rate is not None:
        if slo is None:
            raise FineTuneError(
                "violation_rate: the init model was trained with a weighted SLO penalty, not an SLO budget; "
                "there is no budget to set"
            )
        slo = slo.model_copy(update={"violation_rate": ft.violation_rate})
    ppo = PpoConfig.model_validate(
        {
            **base.ppo.model_dump(),
            "total_steps": ft.total_steps,
            "learning_rate": ft.learning_rate,
            "ent_coef": ft.ent_coef,
            "ent_coef_final": None,
            "slo_constraint": None if slo is None else slo.model_dump(),
        }
    )
    sim = base.sim
    if ft.load_scale_range is not None:
        sim = SimConfig.model_validate({**sim.model_dump(), "load_scale_range": ft.load_scale_range})
    data = DataConfig(
        seed=base.data.seed,
        n_generated=ft.n_generated if ft.trace_share < 1 else 0,
        n_steps=base.data.n_steps,
        patterns=base.data.patterns,
        extra_traces=(trace.source or trace.name,),
    )
    return base.model_copy(update={"seed": seed, "ppo": ppo, "sim": sim, "data": data, "warm_start": None})


def _episode_mix(config: TrainConfig, window: Trace, trace_share: float) -> tuple[list[Trace], dict[str, Any], float]:
    """The load list for :class:`VectorSim` and its provenance.

    The simulator draws an episode's series uniformly over the list, so the training window
    is listed ``r`` times beside the ``n`` generated series, ``r / (r + n)`` ≈ ``trace_share``
    (the copies share one array). Returns ``(loads, provenance, actual share)``.
    """
    d = config.data
    generated = list(training_mix(d.seed, n_generated=d.n_generated, n_steps=d.n_steps, patterns=d.patterns).loads)
    n = len(generated)
    repeats = 1 if n == 0 else max(1, round(trace_share * n / (1.0 - trace_share)))
    share = repeats / (repeats + n)
    provenance = {
        "kind": "fine_tune_mix",
        "seed": d.seed,
        "generated": {"count": n, "n_steps": d.n_steps, "patterns": d.patterns},
        "trace_share": round(share, 4),
        "trace_repeats": repeats,
        "series": [window.provenance()] + [t.provenance() for t in generated],
    }
    return [window] * repeats + generated, provenance, share


# --------------------------------------------------------------------------- fine-tuning


def fine_tune(
    model: ModelLike,
    trace: TraceLike,
    *,
    minutes: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    config: FineTuneConfig | None = None,
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    run_dir: Path | None = None,
    progress: bool = False,
) -> bytes:
    """Fine-tune ``model`` on the training window of ``trace``; returns the checked ONNX bytes.

    ``model``: a :class:`PolicyModel` (loaded with its bytes, as ``PolicyModel.load`` and
    ``from_bytes`` do), ONNX bytes or a path. ``trace``: a whole series (path or
    :class:`Trace`, split chronologically with ``split``) or its training window. ``minutes``
    and ``steps`` override ``config.minutes`` / ``config.total_steps``; ``seed`` seeds the
    critic's initialisation, PPO and the simulator, so a steps-bound fine-tune is
    reproducible (one bound by the clock stops wherever the clock says).
    ``run_dir``: ``progress.csv``, TensorBoard scalars and the final checkpoint, as in training.

    Raises :class:`~rlscale.policy.model.ModelMismatchError` for a model built for another
    spec (or not a policy model at all) and :class:`FineTuneError` for one that is not an
    MLP actor or a trace window that is not a training window.

    Load the result with ``PolicyModel.from_bytes``; its ``training["fine_tune"]`` says what
    was done.
    """
    from rlscale.training.export import export_actor
    from rlscale.training.train import run_training, training_info

    t_start = time.perf_counter()
    ft = config if config is not None else FineTuneConfig()
    ft = ft.model_copy(update={k: v for k, v in (("minutes", minutes), ("total_steps", steps)) if v is not None})
    ft = FineTuneConfig.model_validate(ft.model_dump())  # overrides validated like the rest
    init = _load_policy(model)
    window = training_window(trace, split)
    recorded = init.training.get("config", {}) if isinstance(init.training.get("config"), dict) else {}
    recorded_hidden = recorded.get("ppo", {}).get("hidden")
    ac = actor_critic_from_onnx(init.data, seed, tuple(recorded_hidden) if recorded_hidden else None)
    base, note = base_config(init.training, ac.hidden)
    if base.ppo.context_size != ac.context_size:
        raise FineTuneError(
            f"the init model's config says context {base.ppo.context_size}, its graph has {ac.context_size}"
        )
    cfg = fine_tune_config(base, ft, window, seed=seed)
    loads, data_provenance, share = _episode_mix(cfg, window, ft.trace_share)

    budget_s = ft.minutes * 60.0

    def out_of_time(stats: UpdateStats, _model: ActorCritic) -> bool:
        return time.perf_counter() - t_start >= budget_s

    result = run_training(
        cfg,
        loads,
        data_provenance,
        model=ac,
        critic_only_updates=ft.critic_warmup_updates,
        out_dir=run_dir,
        progress=progress,
        tensorboard=run_dir is not None,
        on_update=out_of_time,
    )
    info = training_info(cfg, data_provenance, result)
    info["algorithm"] = "ppo fine-tuning from an exported actor (critic re-learnt), rlscale.training.finetune"
    updates = len(result.history)
    info["fine_tune"] = {
        "init_from": {
            "source": init.source,
            "sha256": hashlib.sha256(init.data).hexdigest(),
            "spec_hash": init.metadata.get(META_SPEC_HASH),
            "config_note": note,
            "training": init.training,
        },
        "trace": {
            "name": window.name,
            "path": window.source,
            "sha256": window.sha256,
            "window": window.window,
            "rows": [window.first_row, window.first_row + len(window)],
            "split": {"train": split[0], "validation": split[1], "test": split[2]},
            "reference_p95": window.reference_p95,
            "episode_share": round(share, 4),
        },
        "settings": ft.model_dump(mode="json"),
        "budget_seconds": budget_s,
        "steps_planned": cfg.ppo.n_updates * cfg.ppo.batch_size,
        "steps_done": result.global_step,
        "updates": updates,
        "critic_only_updates": min(updates, ft.critic_warmup_updates),
        "stopped_by": "budget" if result.stopped_early else "steps",
        "ppo_seconds": round(result.wall_seconds, 1),
        "wall_seconds": round(time.perf_counter() - t_start, 1),  # up to the export
    }
    data, _parity = export_actor(result.model.policy_module(), info)
    return data


__all__ = [
    "FineTuneError",
    "actor_critic_from_onnx",
    "actor_from_onnx",
    "base_config",
    "fine_tune",
    "fine_tune_config",
    "hidden_widths",
    "training_window",
]
