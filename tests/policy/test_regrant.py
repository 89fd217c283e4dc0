"""regrant: a decision cut down by a capacity budget is remembered as what was done, not as what was asked."""

from __future__ import annotations

import copy

from rlscale.policy.decide import ControllerState, DecisionConfig, decide, regrant
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits

from .conftest import T0, make_obs

HPA = DecisionConfig()  # gate off: the HPA baseline acts


def _remembered(state: ControllerState) -> tuple[object, ...]:
    """The fields decide's stage 4 writes from the change it made."""
    return (
        state.last_scale_up_at,
        state.last_scale_down_at,
        state.last_limit_change_at,
        state.set_limits,
        state.hpa.events,
        state.gate.holder,
        state.gate.holder_left,
        state.last_replicas_changed,
        state.last_limits_changed,
    )


def test_a_refused_scale_up_starts_no_cooldown_and_is_no_hpa_scale_event() -> None:
    obs = make_obs(cpu_utilization=1.4)  # the HPA asks 5 → 10
    state = ControllerState.initial(HPA)
    d, after = decide(obs, HPA, state, None)
    assert d.replicas == 10 and after.last_scale_up_at == T0 and after.hpa.events == [(T0, 5)]
    kept = copy.deepcopy((d, after))

    granted, remembered = regrant(HPA, after, d, 5, d.cpu_limit_m, d.memory_limit_mib)

    assert (granted.replicas, granted.previous_replicas, granted.changed) == (5, 5, False)
    assert granted.source == d.source and granted.action == d.action
    # What a decision that could only hold would have remembered (the mask clamped at 5 pods).
    _, held = decide(obs, HPA.model_copy(update={"limits": ScalingLimits(max_replicas=5)}), state, None)
    assert _remembered(remembered) == _remembered(held)
    assert remembered.last_scale_up_at is None and remembered.hpa.events == []
    assert remembered.decisions == after.decisions and remembered.gate.ratio == after.gate.ratio
    # The inputs are left as they were.
    assert (d, after.to_dict()) == (kept[0], kept[1].to_dict())
    # The next decision is not held by a scale-up cooldown nobody started.
    cooled = HPA.model_copy(update={"limits": ScalingLimits(scale_up_cooldown_s=600)})
    nxt, _ = decide(make_obs(cpu_utilization=1.4, timestamp=T0 + 30), cooled, remembered, None)
    assert nxt.replicas == 10, nxt.explanation
    blocked, _ = decide(make_obs(cpu_utilization=1.4, timestamp=T0 + 30, replicas=6), cooled, after, None)
    assert blocked.replicas == 6 and blocked.enforced_by == "scale_up_cooldown"


def test_a_partial_grant_is_remembered_as_the_change_it_made() -> None:
    d, after = decide(make_obs(cpu_utilization=1.4), HPA, ControllerState.initial(HPA), None)
    granted, remembered = regrant(HPA, after, d, 7, d.cpu_limit_m, d.memory_limit_mib)
    assert granted.replicas == 7 and remembered.last_scale_up_at == T0
    assert remembered.hpa.events == [(T0, 2)] and remembered.last_replicas_changed


def test_the_grant_of_what_was_asked_changes_nothing() -> None:
    d, after = decide(make_obs(cpu_utilization=1.4), HPA, ControllerState.initial(HPA), None)
    same, state = regrant(HPA, after, d, d.replicas, d.cpu_limit_m, d.memory_limit_mib)
    assert same is d and state is after


def test_a_refused_learned_increase_is_billed_as_a_hold_by_the_gate() -> None:
    """The gate bills the interval after an increase to its author; after a refusal nothing changed to bill."""
    cfg = DecisionConfig(gate=GateConfig(mode="shadow"))  # the baseline acts, the gate keeps its books
    d, after = decide(make_obs(cpu_utilization=1.4), cfg, ControllerState.initial(cfg), None)
    assert after.gate.holder == "baseline" and after.gate.holder_left == 1
    _, remembered = regrant(cfg, after, d, 5, d.cpu_limit_m, d.memory_limit_mib)
    assert remembered.gate.holder is None and remembered.gate.holder_left == 0
