"""Per-workload fine-tuning: ONNX → torch → ONNX, the training window only, the budget, the metadata, the CLI."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from pydantic import ValidationError
from random_model import random_mlp_onnx, random_recurrent_onnx

from rlscale.policy.model import META_SPEC_HASH, ModelMismatchError, PolicyModel, model_metadata
from rlscale.policy.spec import SPEC_HASH
from rlscale.training.cli import train_cmd
from rlscale.training.export import export_actor, random_observations
from rlscale.training.finetune import (
    FineTuneError,
    actor_critic_from_onnx,
    actor_from_onnx,
    fine_tune,
    fine_tune_config,
    training_window,
)
from rlscale.training.ppo_config import FineTuneConfig, SloConstraint, TrainConfig
from rlscale.training.workloads import load_trace, write_trace

#: The init model's own training config: small rollouts and short series, so a fine-tune takes seconds.
TINY_CONFIG = TrainConfig.model_validate(
    {
        "seed": 3,
        "ppo": {"n_envs": 8, "n_steps": 64, "n_minibatches": 2, "hidden": [32, 32]},
        "data": {"n_generated": 2, "n_steps": 600},
        "sim": {"episode_steps": 120},
    }
)
#: The same, trained with the SLO as a constraint (as the shipped model is): a budget to replace.
CONSTRAINED_CONFIG = TINY_CONFIG.model_copy(
    update={"ppo": TINY_CONFIG.ppo.model_copy(update={"slo_constraint": SloConstraint()})}
)
#: Four updates of 8 × 64 steps, the first two critic-only; one generated series beside the trace.
TINY_FT = FineTuneConfig(total_steps=2048, critic_warmup_updates=2, n_generated=1, trace_share=0.5)
N_ROWS = 1000  # the training window is rows 0-700


def _init_model(**kwargs: Any) -> bytes:
    training = {"seed": 3, "config": TINY_CONFIG.model_dump(mode="json")}
    return random_mlp_onnx(hidden=32, seed=7, training=training, **kwargs)


def _trace(path: Path, tail: float | None = None) -> Path:
    """A daily-ish synthetic load; ``tail`` replaces every row after the training window."""
    rng = np.random.default_rng(0)
    minutes = np.arange(N_ROWS)
    values = 100 + 60 * np.sin(2 * np.pi * minutes / 240) + rng.normal(0, 5, N_ROWS)
    if tail is not None:
        values[int(0.7 * N_ROWS) :] = tail
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_trace(path, np.maximum(values, 0).round())


def _logits(data: bytes, obs: np.ndarray) -> np.ndarray:
    return PolicyModel.from_bytes(data).logits(obs)


def test_onnx_to_torch_to_onnx_keeps_the_logits() -> None:
    init = random_mlp_onnx(hidden=32, seed=1)  # weights stored (in, out): Gemm without transB
    model = actor_critic_from_onnx(init)
    assert model.hidden == (32, 32)
    obs = random_observations(512, seed=2)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(torch_logits, _logits(init, obs), atol=1e-5)
    # And back: the exporter writes (out, in) with transB=1; reading that again gives the same network.
    exported, parity = export_actor(model.actor, {"kind": "round trip"})
    assert parity <= 1e-5
    np.testing.assert_allclose(_logits(exported, obs), _logits(init, obs), atol=1e-5)
    again = actor_from_onnx(exported)
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(obs)).numpy(), torch_logits, atol=1e-6)


def test_a_graph_that_is_not_a_gemm_tanh_mlp_is_refused() -> None:
    proto = onnx.load_model_from_string(random_mlp_onnx(seed=1))
    next(n for n in proto.graph.node if n.op_type == "Tanh").op_type = "Relu"
    with pytest.raises(FineTuneError, match="Relu"):
        actor_from_onnx(proto)


def test_a_model_built_for_another_spec_is_refused_before_training(tmp_path: Path) -> None:
    meta = model_metadata({"config": TINY_CONFIG.model_dump(mode="json")})
    meta[META_SPEC_HASH] = "0000000000000000"
    with pytest.raises(ModelMismatchError, match="spec"):
        fine_tune(random_mlp_onnx(hidden=32, metadata=meta), _trace(tmp_path / "t.csv"), config=TINY_FT)


def test_only_a_training_window_is_accepted(tmp_path: Path) -> None:
    split = load_trace(_trace(tmp_path / "t.csv")).split()
    assert training_window(split.all).window == "train"
    assert training_window(split.train) is split.train
    with pytest.raises(FineTuneError, match="test"):
        training_window(split.test)


def test_a_tiny_fine_tune_writes_a_loadable_model_that_names_its_init_model_and_window(tmp_path: Path) -> None:
    init = _init_model()
    trace = _trace(tmp_path / "load.csv")
    data = fine_tune(PolicyModel.from_bytes(init, source="init.onnx"), trace, config=TINY_FT, seed=5)
    model = PolicyModel.from_bytes(data)
    assert model.metadata[META_SPEC_HASH] == SPEC_HASH
    info = model.training
    ft = info["fine_tune"]
    assert ft["init_from"]["source"] == "init.onnx"
    assert ft["init_from"]["sha256"] == hashlib.sha256(init).hexdigest()
    assert ft["init_from"]["spec_hash"] == SPEC_HASH and ft["init_from"]["config_note"] is None
    assert ft["trace"]["name"] == "load" and ft["trace"]["window"] == "train"
    assert ft["trace"]["rows"] == [0, 700] and ft["trace"]["path"] == str(trace)
    assert (ft["steps_done"], ft["updates"], ft["critic_only_updates"], ft["stopped_by"]) == (2048, 4, 2, "steps")
    assert ft["budget_seconds"] == 300.0 and ft["wall_seconds"] > 0
    # The init model's own config, with the fine-tune's knobs and data, and no HPA warm start.
    config = TrainConfig.model_validate(info["config"])
    assert config.ppo.n_envs == 8 and config.sim.episode_steps == 120 and config.seed == 5
    assert config.ppo.learning_rate == TINY_FT.learning_rate and config.ppo.ent_coef_final is None
    assert config.warm_start is None and config.data.extra_traces == (str(trace),)
    assert [(s["kind"], s["window"]) for s in info["data"]["series"]] == [("file", "train"), ("generated", "all")]
    assert info["global_step"] == 2048
    # It learnt something: the actor moved (the critic-only updates alone would leave it as it was).
    obs = random_observations(256)
    assert not np.allclose(model.logits(obs), _logits(init, obs))


def test_the_validation_and_test_windows_do_not_change_the_result(tmp_path: Path) -> None:
    """Absurd (but valid) values after the training window leave the fine-tuned weights bit for bit the same."""
    init = _init_model()
    plain = fine_tune(init, _trace(tmp_path / "a" / "load.csv"), config=TINY_FT)
    absurd = fine_tune(init, _trace(tmp_path / "b" / "load.csv", tail=1e7), config=TINY_FT)
    obs = random_observations(256)
    np.testing.assert_array_equal(_logits(plain, obs), _logits(absurd, obs))
    a, b = (PolicyModel.from_bytes(x).training["fine_tune"]["trace"] for x in (plain, absurd))
    assert a["rows"] == b["rows"] == [0, 700] and a["reference_p95"] == b["reference_p95"]


def test_the_budget_stops_training_between_updates(tmp_path: Path) -> None:
    data = fine_tune(_init_model(), _trace(tmp_path / "t.csv"), config=TINY_FT, minutes=1e-6)
    ft = PolicyModel.from_bytes(data).training["fine_tune"]
    assert (ft["updates"], ft["steps_done"], ft["stopped_by"]) == (1, 512, "budget")
    assert ft["steps_planned"] == 2048 and ft["settings"]["minutes"] == 1e-6


def test_the_init_from_trace_and_minutes_flags(tmp_path: Path) -> None:
    init = tmp_path / "init.onnx"
    init.write_bytes(_init_model())
    trace, out = _trace(tmp_path / "load.csv"), tmp_path / "tuned.onnx"
    args = ["--init-from", str(init), "--trace", str(trace), "--out", str(out), "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(train_cmd, [*args, "--steps", "1024", "--minutes", "2", "--seed", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "rows 0-700 of load" in result.output
    ft = PolicyModel.load(out).training["fine_tune"]
    assert ft["init_from"]["source"] == str(init) and ft["budget_seconds"] == 120.0 and ft["steps_done"] == 1024
    assert (tmp_path / "run" / "progress.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trace", "T"], "--init-from is missing"),
        (["--init-from", "M"], "--trace is missing"),
        (["--init-from", "M", "--trace", "T", "--config", "default"], "--config cannot be combined"),
    ],
)
def test_fine_tuning_flags_are_checked(tmp_path: Path, extra: list[str], message: str) -> None:
    trace = _trace(tmp_path / "t.csv")
    args = [str(trace) if a == "T" else str(tmp_path / "m.onnx") if a == "M" else a for a in extra]
    result = CliRunner().invoke(train_cmd, args)
    assert result.exit_code != 0 and message in result.output


def test_the_cli_refuses_an_init_model_for_another_spec(tmp_path: Path) -> None:
    meta = model_metadata({})
    meta[META_SPEC_HASH] = "0000000000000000"
    init = tmp_path / "old.onnx"
    init.write_bytes(random_mlp_onnx(metadata=meta))
    result = CliRunner().invoke(train_cmd, ["--init-from", str(init), "--trace", str(_trace(tmp_path / "t.csv"))])
    assert result.exit_code != 0 and "--init-from" in result.output and "spec 0000000000000000" in result.output


def test_a_model_with_memory_is_fine_tuned_with_its_encoder(tmp_path: Path) -> None:
    """The encoder is read back from the graph, trained with the actor, and exported again with its context."""
    raw = TINY_CONFIG.model_dump(mode="json")
    raw["ppo"] |= {"hidden": [32], "context_size": 8, "seq_len": 16}
    training = {"seed": 3, "config": raw}
    init = random_recurrent_onnx(context=8, hidden=32, seed=7, training=training)
    wrong = copy.deepcopy(training)
    wrong["config"]["ppo"]["hidden"] = [32, 32]  # the recorded widths must describe the graph
    with pytest.raises(FineTuneError, match=r"actor\.2\.weight"):
        fine_tune(
            random_recurrent_onnx(context=8, hidden=32, training=wrong), _trace(tmp_path / "w.csv"), config=TINY_FT
        )
    data = fine_tune(init, _trace(tmp_path / "t.csv"), config=TINY_FT, seed=5)
    model = PolicyModel.from_bytes(data)
    assert model.context_size == 8
    assert TrainConfig.model_validate(model.training["config"]).ppo.context_size == 8
    obs = random_observations(64)
    context = np.random.default_rng(1).uniform(-1, 1, (64, 8)).astype(np.float32)
    before, after = PolicyModel.from_bytes(init).step(obs, context), model.step(obs, context)
    assert not np.allclose(after[0], before[0])  # the actor learnt
    assert not np.allclose(after[1], before[1])  # … and so did the encoder


def test_a_workload_budget_and_load_range_replace_the_init_models_and_nothing_else(tmp_path: Path) -> None:
    base = CONSTRAINED_CONFIG
    window = training_window(load_trace(_trace(tmp_path / "t.csv")))
    ft = FineTuneConfig(violation_rate=0.004, load_scale_range=(0.9, 1.3))
    cfg = fine_tune_config(base, ft, window, seed=1)
    assert cfg.ppo.slo_constraint is not None
    assert cfg.ppo.slo_constraint.violation_rate == 0.004
    assert cfg.sim.load_scale_range == (0.9, 1.3)
    # Everything else of the constraint and the service is the init model's.
    assert cfg.ppo.slo_constraint.model_dump(exclude={"violation_rate"}) == SloConstraint().model_dump(
        exclude={"violation_rate"}
    )
    assert cfg.sim.model_dump(exclude={"load_scale_range"}) == base.sim.model_dump(exclude={"load_scale_range"})
    # Unset, both stay as the init model trained them.
    plain = fine_tune_config(base, FineTuneConfig(), window, seed=1)
    assert plain.ppo.slo_constraint == base.ppo.slo_constraint
    assert plain.sim.load_scale_range == base.sim.load_scale_range


def test_a_budget_for_a_model_trained_without_one_is_an_error_naming_the_field(tmp_path: Path) -> None:
    assert TINY_CONFIG.ppo.slo_constraint is None
    window = training_window(load_trace(_trace(tmp_path / "t.csv")))
    with pytest.raises(FineTuneError, match="violation_rate"):
        fine_tune_config(TINY_CONFIG, FineTuneConfig(violation_rate=0.01), window, seed=0)


@pytest.mark.parametrize("bad", [(2.0, 1.0), (0.0, 1.0), (-1.0, 1.0)])
def test_a_load_range_out_of_order_or_not_positive_is_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(ValidationError, match="load_scale_range"):
        FineTuneConfig(load_scale_range=bad)


def test_the_violation_rate_flag_reaches_the_models_training_record(tmp_path: Path) -> None:
    init = tmp_path / "init.onnx"
    init.write_bytes(
        random_mlp_onnx(hidden=32, seed=7, training={"seed": 3, "config": CONSTRAINED_CONFIG.model_dump()})
    )
    out = tmp_path / "ft.onnx"
    args = ["--init-from", str(init), "--trace", str(_trace(tmp_path / "t.csv")), "--steps", "1024"]
    result = CliRunner().invoke(train_cmd, [*args, "--violation-rate", "0.003", "--out", str(out)])
    assert result.exit_code == 0, result.output
    training = PolicyModel.load(out).training
    assert training["config"]["ppo"]["slo_constraint"]["violation_rate"] == 0.003
    assert training["fine_tune"]["settings"]["violation_rate"] == 0.003
    refused = CliRunner().invoke(train_cmd, ["--violation-rate", "0.003", "--out", str(tmp_path / "x.onnx")])
    assert refused.exit_code != 0 and "--init-from is missing" in refused.output  # a fine-tuning flag alone
