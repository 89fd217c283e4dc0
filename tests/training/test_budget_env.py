"""Multi-agent training in one budget (training/budget_env.py, training/budget_train.py).

The environment's slots are agents (budget k, member j at k * members + j); its masks keep
every agent within what it could be granted; its arbitration keeps every budget within its
total; its reward adds the fairness term; a short training run exports an ordinary model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.budget import BudgetConfig
from rlscale.policy.model import META_SPEC_HASH, PolicyModel
from rlscale.policy.spec import N_FEATURES, SPEC_HASH
from rlscale.training.budget_cli import train_budget_cmd
from rlscale.training.budget_env import BudgetVecEnv
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import generate

SIM = SimConfig(episode_steps=60)


def _env(fairness_weight: float, cores: int = 16) -> BudgetVecEnv:
    loads = [[generate("flash_crowd", 400, j).values] for j in range(2)]
    return BudgetVecEnv(SIM, loads, BudgetConfig(cpu_m=cores * 1000), groups=3, seed=1, fairness_weight=fairness_weight)


def test_slots_masks_and_budget() -> None:
    env = _env(0.5)
    obs = env.reset()
    assert obs.shape == (6, N_FEATURES) and env.n_envs == 6
    start = np.sum([s.replicas * s.cpu_limit_m for s in env._sims], axis=0)  # per budget, as sized at reset
    rng = np.random.default_rng(0)
    for _ in range(40):
        masks = env.action_masks()
        assert masks.shape == (6, N_ACTIONS) and masks[:, 0].all()
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        obs, reward, _, _, info = env.step(actions)
        assert obs.shape == (6, N_FEATURES) and reward.shape == (6,) and info["slo_violated"].shape == (6,)
        held = info["cpu_allocated_m"].reshape(3, 2).sum(axis=1)  # per budget
        assert np.all(held <= np.maximum(16_000, start)), held
        assert 0 < info["fairness"].min() <= info["fairness"].max() <= 1


def test_the_fairness_term_is_added_to_every_member() -> None:
    a, b = _env(0.0), _env(2.0)
    a.reset()
    b.reset()
    actions = np.zeros(6, dtype=np.int64)  # hold: the same trajectory in both
    for _ in range(5):
        _, ra, _, _, _ = a.step(actions)
        _, rb, _, _, info = b.step(actions)
    np.testing.assert_allclose(rb - ra, 2.0 * np.repeat(info["fairness"], 2))


def _write(path: Path, values: np.ndarray) -> Path:
    path.write_text("t_seconds,value\n" + "".join(f"{60 * i},{v:.3f}\n" for i, v in enumerate(values)))
    return path


def test_train_budget_writes_an_ordinary_model(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", generate("flash_crowd", 900, 2).values)
    b = _write(tmp_path / "b.csv", generate("diurnal", 900, 3).values)
    out = tmp_path / "coordinated.onnx"
    args = ["--trace", str(a), "--trace", str(b), "--budget-cores", "14", "--minutes", "0.05", "--groups", "2"]
    result = CliRunner().invoke(train_budget_cmd, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = PolicyModel.load(out)
    assert model.metadata[META_SPEC_HASH] == SPEC_HASH
    assert model.training["algorithm"].startswith("multi-agent ppo")
    assert model.training["data"]["kind"] == "budget" and model.training["budget"]["steps_done"] > 0
