"""run_controllers (one decide_batch per interval) gives exactly the logs of run_episodes with decide callbacks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from random_model import random_mlp_onnx

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.model import PolicyModel
from rlscale.training.episodes import LOG_KEYS, Controller, EpisodeLog, run_controllers, run_episodes
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import generate


def callback(c: Controller) -> Callable[[Observation], Decision]:
    """What evaluation passes today: decide with the controller's state threaded through."""
    state = c.state if c.state is not None else ControllerState.initial(c.config)

    def fn(obs: Observation) -> Decision:
        nonlocal state
        decision, state = decide(obs, c.config, state, c.model, model_error=c.model_error)
        return decision

    return fn


def assert_same_logs(batch: list[EpisodeLog], loop: list[EpisodeLog]) -> None:
    assert len(batch) == len(loop)
    for b, lp in zip(batch, loop, strict=True):
        assert (b.seed, b.load_name, b.step_s) == (lp.seed, lp.load_name, lp.step_s)
        assert set(b.steps) == set(LOG_KEYS)
        for key in LOG_KEYS:
            np.testing.assert_array_equal(b.steps[key], lp.steps[key], err_msg=key)
        assert b.decisions == lp.decisions
        for db, dl in zip(b.decisions, lp.decisions, strict=True):
            assert np.array_equal(db.reasons, dl.reasons)


def test_run_controllers_equals_run_episodes_with_decide_callbacks() -> None:
    """Baselines of every kind, learned models in every gate mode, shared and own limits, seeds per controller."""
    cfg = SimConfig(metrics_missing_prob=0.05, initial_memory_limit_mib=512, load_scale_range=(0.8, 1.2))
    load = generate("flash_crowd", 240, seed=3)
    small = ScalingLimits(max_replicas=12, max_scale_down_percent=20.0, scale_down_cooldown_s=120.0)
    model_a = PolicyModel.from_bytes(random_mlp_onnx(hidden=16, seed=5))
    model_b = PolicyModel.from_bytes(random_mlp_onnx(hidden=32, seed=6))

    def dc(baseline: BaselineConfig | None = None, gate: GateConfig | None = None, **kw: object) -> DecisionConfig:
        limits = kw.get("limits", cfg.limits)
        return DecisionConfig(
            limits=limits,  # type: ignore[arg-type]
            objective=cfg.objective,
            baseline=baseline or BaselineConfig(),
            gate=gate or GateConfig(),
        )

    base = [
        Controller(dc(BaselineConfig(kind="hpa", hpa=HpaConfig(target_utilization=t)))) for t in (0.5, 0.7, 0.9)
    ] + [
        Controller(dc(BaselineConfig(kind="static", static_replicas=6))),
        Controller(dc(BaselineConfig(kind="proportional", rate_per_replica=40.0), limits=small)),
        Controller(dc(gate=GateConfig(mode="full")), model_a),
        Controller(dc(gate=GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=5)), model_a),
        Controller(dc(gate=GateConfig(mode="shadow"), limits=small), model_b),
        Controller(dc(), None, model_error="model built for spec abc"),
    ]
    controllers = base * 2
    seeds = [1] * len(base) + [2] * len(base)

    batch = run_controllers(cfg, load, controllers, seeds, keep_decisions=True)
    loop = run_episodes(cfg, load, [callback(c) for c in controllers], seeds, keep_decisions=True)
    assert_same_logs(batch, loop)
    # The run exercised what it claims to: learned decisions, missing metrics, different outcomes.
    sources = {d.source for log in batch for d in log.decisions}
    assert sources == {"learned", "baseline"}
    assert any("metric unavailable" in d.baseline_why for log in batch for d in log.decisions)
    assert len({log.summary()["total_reward"] for log in batch}) > len(base)


def test_run_controllers_with_one_shared_seed_and_a_start_state() -> None:
    cfg = SimConfig()
    load = generate("ramp", 120, seed=1)
    hpa = DecisionConfig(limits=cfg.limits, objective=cfg.objective)
    started = ControllerState.initial(hpa)
    started.last_scale_down_at = load.start_s - 30.0  # a scale-down just before: the cooldown holds
    controllers = [Controller(hpa), Controller(hpa, state=started)]
    batch = run_controllers(cfg, load, controllers, seed=7, keep_decisions=True)
    assert_same_logs(batch, run_episodes(cfg, load, [callback(c) for c in controllers], seed=7, keep_decisions=True))
    assert batch[1].decisions[0].reasons.any() and started.decisions == 0
    with pytest.raises(ValueError, match="one seed per controller"):
        run_controllers(cfg, load, controllers, seed=[1])
    with pytest.raises(ValueError, match="at least one controller"):
        run_controllers(cfg, load, [], seed=1)
