"""ONNX export: parity with torch, the contract metadata, and a smoke training run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.model import PolicyModel
from rlscale.policy.spec import N_FEATURES, SPEC_HASH
from rlscale.training.cli import export_cmd, train_cmd
from rlscale.training.export import ExportError, export_actor, random_observations
from rlscale.training.ppo import ActorCritic
from rlscale.training.ppo_config import TrainConfig
from rlscale.training.train import train

#: A few thousand steps on two short generated series: seconds, not minutes.
TINY = {
    "seed": 3,
    "ppo": {"total_steps": 2048, "n_envs": 8, "n_steps": 64, "hidden": [16, 16], "checkpoint_every": 2},
    "data": {"n_generated": 2, "n_steps": 600},
    "sim": {"episode_steps": 120},
}


def _actor() -> ActorCritic:
    torch.manual_seed(0)
    return ActorCritic(N_FEATURES, N_ACTIONS, (32, 32))


def test_export_matches_torch_and_loads_with_the_operator_loader() -> None:
    model = _actor()
    data, parity = export_actor(model.actor, {"seed": 0, "note": "test"})
    assert parity <= 1e-4
    loaded = PolicyModel.from_bytes(data)
    obs = random_observations(256, seed=9)
    with torch.no_grad():
        expected = model.actor(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(loaded.logits(obs), expected, atol=1e-4, rtol=0)
    assert loaded.metadata["rlscale.spec_hash"] == SPEC_HASH
    assert loaded.training == {"seed": 0, "note": "test"}


def test_export_handles_any_batch_size() -> None:
    data, _ = export_actor(_actor().actor, {})
    loaded = PolicyModel.from_bytes(data)
    for n in (1, 7, 1000):
        assert loaded.logits(random_observations(n)).shape == (n, N_ACTIONS)


def test_export_refuses_a_model_that_fails_the_parity_check() -> None:
    with pytest.raises(ExportError, match="differ from torch"):
        export_actor(_actor().actor, {}, tolerance=-1.0)


def test_export_refuses_a_network_with_the_wrong_output_width() -> None:
    wrong = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, N_ACTIONS - 1))
    with pytest.raises(ExportError, match="refused"):
        export_actor(wrong, {})


@pytest.mark.slow
def test_smoke_training_produces_a_loadable_model_whose_logits_match_torch(tmp_path: Path) -> None:
    config = TrainConfig.model_validate(TINY)
    outcome = train(config, tmp_path / "run", progress=False, tensorboard=True)
    assert outcome.ppo.global_step == 2048
    loaded = PolicyModel.from_bytes(outcome.onnx_bytes)
    obs = random_observations(512, seed=1)
    with torch.no_grad():
        expected = outcome.ppo.model.actor(torch.from_numpy(obs)).numpy()
    assert float(np.max(np.abs(loaded.logits(obs) - expected))) <= 1e-4
    # The model says how it was made and what it saw.
    info = loaded.training
    assert info["seed"] == 3
    assert TrainConfig.model_validate(info["config"]) == config
    assert [s["kind"] for s in info["data"]["series"]] == ["generated", "generated"]
    assert info["versions"]["torch"] == torch.__version__
    # Logs and checkpoints.
    rows = (tmp_path / "run" / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("update,global_step") and len(rows) == 1 + 4  # 2048 steps / (8 envs × 64)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["update_00002.pt", "update_00004.pt"]
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    # Small: tens of KB.
    assert len(outcome.onnx_bytes) < 100_000


@pytest.mark.slow
def test_train_and_export_commands(tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "model.onnx"
    runner = CliRunner()
    result = runner.invoke(
        train_cmd, ["--config", str(config), "--out", str(out), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert PolicyModel.load(out).training["seed"] == 3
    ckpt = tmp_path / "run" / "checkpoints" / "update_00004.pt"  # the last update: the exported model
    again = tmp_path / "again.onnx"
    result = runner.invoke(export_cmd, ["--checkpoint", str(ckpt), "--out", str(again)])
    assert result.exit_code == 0, result.output
    a, b = PolicyModel.load(out), PolicyModel.load(again)
    obs = random_observations(64)
    np.testing.assert_allclose(a.logits(obs), b.logits(obs), atol=1e-6)
    assert b.training["exported_from"] == str(ckpt) and b.training["config"]["seed"] == 3


def test_a_config_file_with_a_wrong_field_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("ppo:\n  n_envs: 0\n  lerning_rate: 0.1\n")
    result = CliRunner().invoke(train_cmd, ["--config", str(config), "--print-config"])
    assert result.exit_code != 0
    assert "ppo.n_envs" in result.output and "ppo.lerning_rate" in result.output


def test_print_config_resolves_overrides() -> None:
    result = CliRunner().invoke(train_cmd, ["--print-config", "--seed", "5", "--steps", "1000"])
    assert result.exit_code == 0, result.output
    resolved = TrainConfig.model_validate_json(result.output)
    assert resolved.seed == 5 and resolved.ppo.total_steps == 1000


def test_the_memory_config_is_the_default_with_a_context_encoder() -> None:
    result = CliRunner().invoke(train_cmd, ["--config", "memory", "--print-config"])
    assert result.exit_code == 0, result.output
    memory = TrainConfig.model_validate_json(result.output)
    assert memory.ppo.context_size == 64
    default = TrainConfig()
    assert memory.ppo.model_copy(update={"context_size": 0}) == default.ppo
    assert memory.model_copy(update={"ppo": default.ppo}) == default
