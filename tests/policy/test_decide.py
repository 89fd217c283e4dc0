"""The one decision function: who acts, what it sets, what it says, and what it never does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from random_model import random_mlp_onnx

from rlscale.policy.actions import ACTION_BY_NAME, N_ACTIONS
from rlscale.policy.decide import ControllerState, DecisionConfig, decide
from rlscale.policy.gate import GateConfig, GateState, choose
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.model import PolicyModel
from rlscale.policy.reward import Objective, RewardWeights, reward

from .conftest import T0, LogitsModel, make_obs


def prefer(action: str) -> LogitsModel:
    logits = np.zeros(N_ACTIONS)
    logits[ACTION_BY_NAME[action].index] = 10.0
    return LogitsModel(logits)


FULL = DecisionConfig(gate=GateConfig(mode="full"))


def test_baseline_acts_without_a_model_and_says_why():
    d, _ = decide(make_obs(cpu_utilization=1.4), DecisionConfig(), ControllerState.initial(DecisionConfig()),
                  None, model_error="model built for spec abc")  # fmt: skip
    assert d.source == "baseline" and d.replicas == 10
    assert "learned policy unavailable: model built for spec abc" in d.explanation
    assert "replicas 5→10" in d.explanation


def test_learned_acts_in_full_mode_through_the_mask():
    d, state = decide(make_obs(), FULL, ControllerState.initial(FULL), prefer("replicas+50%"))  # type: ignore[arg-type]
    assert (d.source, d.action, d.replicas) == ("learned", "replicas+50%", 8)
    assert state.last_scale_up_at == T0 and state.last_source == "learned"


def test_shadow_records_the_learned_choice_but_baseline_acts():
    cfg = DecisionConfig(gate=GateConfig(mode="shadow"))
    d, _ = decide(make_obs(), cfg, ControllerState.initial(cfg), prefer("replicas+100%"))  # type: ignore[arg-type]
    assert d.source == "baseline" and d.learned_action == "replicas+100%" and d.replicas == 5
    assert "learned would have chosen replicas+100%" in d.explanation


def test_never_scales_down_on_missing_metrics():
    for missing in ({"cpu_utilization": None}, {"latency_p99_ms": None}, {"request_rate": float("nan")}):
        obs = make_obs(cpu_utilization=0.01, **missing) if "cpu_utilization" not in missing else make_obs(**missing)
        for model in (prefer("replicas-50%"), prefer("cpu-1"), None):
            d, _ = decide(obs, FULL, ControllerState.initial(FULL), model)  # type: ignore[arg-type]
            assert d.replicas >= obs.replicas and not d.limits_changed, (missing, d.explanation)


def test_masked_actions_are_listed_with_rules():
    limits = ScalingLimits(min_replicas=5, max_replicas=5)
    cfg = DecisionConfig(limits=limits, gate=GateConfig(mode="full"))
    d, _ = decide(make_obs(), cfg, ControllerState.initial(cfg), prefer("replicas+1"))  # type: ignore[arg-type]
    masked = dict(d.masked)
    assert masked["replicas+1"] == "max_replicas" and masked["replicas-1"] == "min_replicas"
    assert d.replicas == 5 and d.action != "replicas+1"
    assert "max_replicas" in d.explanation


def test_deployment_outside_bounds_is_brought_back():
    cfg = DecisionConfig(limits=ScalingLimits(min_replicas=8, max_replicas=20))
    d, _ = decide(make_obs(replicas=3, ready_replicas=3), cfg, ControllerState.initial(cfg))
    assert d.replicas == 8


def test_input_state_is_not_modified_and_state_round_trips():
    cfg = DecisionConfig(gate=GateConfig(mode="gradual", initial_ratio=0.5))
    state = ControllerState.initial(cfg)
    before = json.dumps(state.to_dict(), sort_keys=True)
    model = PolicyModel.from_bytes(random_mlp_onnx(seed=3))
    t = T0
    for i in range(40):
        _, new = decide(make_obs(timestamp=t, cpu_utilization=0.3 + 0.05 * (i % 20)), cfg, state, model)
        assert json.dumps(state.to_dict(), sort_keys=True) == before or i > 0
        state, t = new, t + 15
    restored = ControllerState.from_dict(json.loads(json.dumps(state.to_dict())))
    obs = make_obs(timestamp=t)
    a, sa = decide(obs, cfg, state, model)
    b, sb = decide(obs, cfg, restored, model)
    assert a == b and sa.to_dict() == sb.to_dict()


def test_reward_is_credited_to_the_previous_decider():
    cfg = DecisionConfig(gate=GateConfig(mode="gradual", initial_ratio=1.0, window_decisions=1000))
    state = ControllerState.initial(cfg)
    d1, state = decide(make_obs(), cfg, state, prefer("noop"))  # type: ignore[arg-type]
    assert d1.source == "learned"
    d2, state = decide(make_obs(timestamp=T0 + 15, latency_p99_ms=900.0), cfg, state, prefer("noop"))  # type: ignore[arg-type]
    assert d2.slo_violated is True and state.gate.learned_violations == 1 and state.gate.learned_n == 1


def test_switching_mode_resets_the_gate():
    shadow = DecisionConfig(gate=GateConfig(mode="shadow"))
    _, state = decide(make_obs(), shadow, ControllerState.initial(shadow))
    gradual = DecisionConfig(gate=GateConfig(mode="gradual", initial_ratio=0.3))
    _, state = decide(make_obs(), gradual, state)
    assert state.gate_mode == "gradual" and state.gate.ratio == pytest.approx(0.3)


def test_reward_terms_point_the_right_way():
    obj = Objective(weights=RewardWeights())

    def r(**kw: float) -> float:
        base = {"latency_p99_ms": 100.0, "error_rate": 0.0, "allocated_cpu_m": 2000.0, "max_cpu_m": 200_000.0,
                "replicas_changed": 0.0, "limits_changed": 0.0}  # fmt: skip
        base.update(kw)
        return float(reward(obj, **base))  # type: ignore[arg-type]

    assert r(latency_p99_ms=400) < r()  # slower and violating the 250 ms SLO
    assert r(latency_p99_ms=240) > r(latency_p99_ms=260) + obj.weights.sla_violation * 0.9
    assert r(error_rate=0.2) < r()
    assert r(allocated_cpu_m=20_000) < r()
    assert r(limits_changed=1) < r(replicas_changed=1) < r()


def _gradual_seed(draws: list[str]) -> GateConfig:
    """A gradual gate (ratio 0.5) whose first draws are ``draws``: found by search, not hoped for."""
    for seed in range(1000):
        cfg = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=1000, seed=seed)
        state = GateState.initial(cfg)
        if [choose(cfg, state) for _ in draws] == draws:
            return cfg
    raise AssertionError(f"no seed below 1000 draws {draws}")


def test_a_cuts_late_damage_is_billed_to_the_cut_not_to_the_baseline_holding_after_it():
    cfg = DecisionConfig(gate=_gradual_seed(["learned", "baseline", "baseline"]))
    model = prefer("replicas-50%")
    d1, state = decide(make_obs(), cfg, ControllerState.initial(cfg), model)  # type: ignore[arg-type]
    assert (d1.source, d1.replicas) == ("learned", 3)
    slow = {"replicas": 3, "ready_replicas": 3, "latency_p99_ms": 900.0, "cpu_utilization": 0.7}
    d2, state = decide(make_obs(timestamp=T0 + 15, **slow), cfg, state, model)  # type: ignore[arg-type]
    d3, state = decide(make_obs(timestamp=T0 + 30, **slow), cfg, state, model)  # type: ignore[arg-type]
    assert (d2.source, d3.source) == ("baseline", "baseline") and d2.replicas == 3  # the HPA holds at 0.7
    # Both violating intervals are the cut's: the second followed a baseline hold.
    assert (state.gate.learned_violations, state.gate.learned_n, state.gate.baseline_n) == (2, 2, 0)


def test_a_distrusted_models_limit_cut_is_put_back_by_the_baseline():
    cfg = DecisionConfig(gate=_gradual_seed(["learned", "baseline", "baseline"]))
    d1, state = decide(make_obs(), cfg, ControllerState.initial(cfg), prefer("cpu-1"))  # type: ignore[arg-type]
    assert (d1.source, d1.cpu_limit_m) == ("learned", 250) and state.reference_limits == (500, 512)
    state.gate.distrusted = True  # as a demotion leaves it (the gate's own tests show when)
    cut = {"cpu_limit_m": 250, "cpu_utilization": 0.7}
    # Within the limit cooldown the baseline keeps the limits and still scales as the HPA does.
    d2, state = decide(make_obs(timestamp=T0 + 15, **cut, latency_p99_ms=100.0), cfg, state, prefer("cpu-1"))  # type: ignore[arg-type]
    assert (d2.source, d2.cpu_limit_m) == ("baseline", 250)
    d3, state = decide(make_obs(timestamp=T0 + 900, **cut), cfg, state, prefer("cpu-1"))  # type: ignore[arg-type]
    assert (d3.source, d3.cpu_limit_m, d3.memory_limit_mib) == ("baseline", 500, 512)
    assert "limits back to the workload's own (500m CPU, 512Mi memory)" in d3.explanation


def test_a_trusted_model_keeps_its_limits_and_a_users_edit_becomes_the_reference():
    cfg = DecisionConfig(gate=_gradual_seed(["learned", "baseline", "baseline"]))
    _, state = decide(make_obs(), cfg, ControllerState.initial(cfg), prefer("cpu-1"))  # type: ignore[arg-type]
    d2, state = decide(make_obs(timestamp=T0 + 900, cpu_limit_m=250), cfg, state, prefer("cpu-1"))  # type: ignore[arg-type]
    assert (d2.source, d2.cpu_limit_m) == ("baseline", 250)  # not distrusted: the model's limits stand
    _, state = decide(make_obs(timestamp=T0 + 915, cpu_limit_m=750), cfg, state, prefer("cpu-1"))  # type: ignore[arg-type]
    assert state.reference_limits == (750, 512)  # neither seen nor set by rlscale: a user's edit
    restored = ControllerState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert (restored.reference_limits, restored.seen_limits, restored.set_limits) == (
        state.reference_limits, state.seen_limits, state.set_limits,
    )  # fmt: skip
    assert ControllerState.from_dict({"gate": state.gate.to_dict()}).reference_limits is None  # an older status
