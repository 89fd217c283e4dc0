"""The rollout gate: who acts, how trust grows and shrinks, and exact restore."""

from __future__ import annotations

import json

import pytest

from rlscale.policy.gate import GateConfig, GateState, choose, credited, note_decision, record_outcome


def test_shadow_never_lets_learned_act_and_full_always_does():
    shadow, full = GateConfig(mode="shadow"), GateConfig(mode="full")
    s, f = GateState.initial(shadow), GateState.initial(full)
    assert {choose(shadow, s) for _ in range(200)} == {"baseline"}
    assert {choose(full, f) for _ in range(200)} == {"learned"}


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_gradual_share_matches_ratio(ratio: float):
    cfg = GateConfig(mode="gradual", initial_ratio=ratio, seed=3)
    state = GateState.initial(cfg)
    share = sum(choose(cfg, state) == "learned" for _ in range(5000)) / 5000
    assert share == pytest.approx(ratio, abs=0.03)


def test_draws_are_seeded():
    a = GateConfig(mode="gradual", initial_ratio=0.5, seed=1)
    b = GateConfig(mode="gradual", initial_ratio=0.5, seed=2)
    sa, sa2, sb = GateState.initial(a), GateState.initial(a), GateState.initial(b)
    run_a = [choose(a, sa) for _ in range(100)]
    assert run_a == [choose(a, sa2) for _ in range(100)]
    assert run_a != [choose(b, sb) for _ in range(100)]


def window(
    cfg: GateConfig,
    state: GateState,
    learned: float,
    baseline: float,
    violation: bool = False,
    baseline_violation: bool = False,
) -> None:
    for i in range(cfg.window_decisions):
        if i % 2:
            record_outcome(cfg, state, "learned", learned, violation and i == 1)
        else:
            record_outcome(cfg, state, "baseline", baseline, baseline_violation and i == 0)


def test_promotes_slowly_and_demotes_fast():
    cfg = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=10)
    state = GateState.initial(cfg)
    window(cfg, state, learned=1.0, baseline=0.5)
    assert state.ratio == pytest.approx(0.6) and state.promotions == 1
    window(cfg, state, learned=0.4, baseline=0.5)
    assert state.ratio == pytest.approx(0.4) and state.demotions == 1
    window(cfg, state, learned=2.0, baseline=0.5, violation=True)
    assert state.ratio == pytest.approx(0.2), "an SLO violation demotes even with a better score"
    assert "SLO broken" in state.last_verdict


def test_a_violation_the_baseline_shared_is_judged_by_the_scores():
    """A surge that breaks the SLO whoever decides does not demote by itself; the scores decide."""
    cfg = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=10)
    state = GateState.initial(cfg)
    window(cfg, state, learned=1.0, baseline=0.5, violation=True, baseline_violation=True)
    assert state.ratio == pytest.approx(0.6) and "promoted" in state.last_verdict
    window(cfg, state, learned=0.4, baseline=0.5, violation=True, baseline_violation=True)
    assert state.ratio == pytest.approx(0.4) and "demoted: learned" in state.last_verdict
    # Without enough baseline outcomes in the window, a learned violation is not excused.
    few = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=10, min_samples=6)
    state = GateState.initial(few)
    window(few, state, learned=1.0, baseline=0.5, violation=True, baseline_violation=True)
    assert state.ratio == pytest.approx(0.3) and "SLO broken" in state.last_verdict


def test_ratio_stays_within_bounds():
    cfg = GateConfig(mode="gradual", initial_ratio=0.9, min_ratio=0.05, max_ratio=0.95, window_decisions=8)
    state = GateState.initial(cfg)
    for _ in range(5):
        window(cfg, state, 1.0, 0.0)
    assert state.ratio == pytest.approx(0.95)
    for _ in range(10):
        window(cfg, state, 0.0, 1.0)
    assert state.ratio == pytest.approx(0.05)


def test_holds_without_enough_samples():
    cfg = GateConfig(mode="gradual", initial_ratio=0.3, window_decisions=5, min_samples=3)
    state = GateState.initial(cfg)
    for _ in range(5):
        record_outcome(cfg, state, "baseline", 0.5, False)
    assert state.ratio == pytest.approx(0.3) and "too few" in state.last_verdict


def test_state_serialises_and_restores_exactly():
    cfg = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=7, seed=11)
    state = GateState.initial(cfg)
    for i in range(23):
        src = choose(cfg, state)
        record_outcome(cfg, state, src, 0.1 * i - 0.7, i == 5)
    restored = GateState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert [choose(cfg, restored) for _ in range(50)] == [choose(cfg, state) for _ in range(50)]


def test_config_validation():
    with pytest.raises(ValueError, match="min_ratio"):
        GateConfig(min_ratio=0.8, max_ratio=0.2)
    with pytest.raises(ValueError):
        GateConfig(mode="yolo")  # type: ignore[arg-type]


def test_a_state_stored_before_a_field_existed_still_restores():
    """Statuses written by an older operator lack newer counters (e.g. baseline_violations): they start at 0."""
    old = {"ratio": 0.4, "counter": 12, "learned_violations": 1, "retired_field": 3}
    state = GateState.from_dict(old)
    assert state.ratio == 0.4 and state.counter == 12 and state.baseline_violations == 0


def test_a_reduction_is_billed_the_intervals_after_it_whoever_holds_in_between():
    """An always-down model's damage arrives after its cut: the next ``credit_intervals`` are its own."""
    cfg = GateConfig(mode="gradual", credit_intervals=3)
    state = GateState.initial(cfg)
    note_decision(cfg, state, "learned", reduced=True, increased=False, blocked=False)
    assert [credited(state, "baseline") for _ in range(4)] == ["learned", "learned", "learned", "baseline"]


def test_an_increase_is_billed_one_interval_and_a_newer_change_takes_over():
    cfg = GateConfig(mode="gradual", credit_intervals=3)
    state = GateState.initial(cfg)
    note_decision(cfg, state, "learned", reduced=False, increased=True, blocked=False)
    assert [credited(state, "baseline") for _ in range(2)] == ["learned", "baseline"]
    note_decision(cfg, state, "learned", reduced=True, increased=False, blocked=False)
    assert credited(state, "baseline") == "learned"
    note_decision(cfg, state, "baseline", reduced=True, increased=False, blocked=False)  # a newer cut
    assert [credited(state, "learned") for _ in range(4)] == ["baseline", "baseline", "baseline", "learned"]


def test_a_hold_forced_by_the_other_policys_cooldown_is_billed_to_that_policy():
    """The HPA kept from scaling down by the cooldown a model's jump to the maximum started: the model pays."""
    cfg = GateConfig(mode="gradual", credit_intervals=3)
    state = GateState.initial(cfg)
    note_decision(cfg, state, "learned", reduced=False, increased=True, blocked=False)
    assert credited(state, "learned") == "learned"
    note_decision(cfg, state, "baseline", reduced=False, increased=False, blocked=True)
    assert credited(state, "baseline") == "learned"
    note_decision(cfg, state, "baseline", reduced=False, increased=False, blocked=False)
    assert credited(state, "baseline") == "baseline"
    # Blocked by a cooldown of its own change: its own interval.
    note_decision(cfg, state, "baseline", reduced=False, increased=True, blocked=False)
    credited(state, "baseline")
    note_decision(cfg, state, "baseline", reduced=False, increased=False, blocked=True)
    assert credited(state, "learned") == "learned" and state.holder_left == 0


def test_a_demotion_distrusts_the_model_until_a_promotion():
    cfg = GateConfig(mode="gradual", initial_ratio=0.5, window_decisions=10)
    state = GateState.initial(cfg)
    assert not state.distrusted
    window(cfg, state, learned=0.4, baseline=0.5)
    assert state.distrusted and state.ratio == pytest.approx(0.3)
    for _ in range(cfg.window_decisions):
        record_outcome(cfg, state, "baseline", 0.5, False)  # held: no learned samples
    assert state.distrusted
    window(cfg, state, learned=1.0, baseline=0.5)
    assert not state.distrusted and state.ratio == pytest.approx(0.4)


def test_the_baselines_repair_of_a_models_cut_does_not_take_over_the_cuts_bill():
    """Seen on the local stack: the HPA's scale-up after an always-down cut was billed the cut's violations."""
    cfg = GateConfig(mode="gradual", credit_intervals=3)
    state = GateState.initial(cfg)
    note_decision(cfg, state, "learned", reduced=True, increased=False, blocked=False)
    assert credited(state, "baseline") == "learned"
    note_decision(cfg, state, "baseline", reduced=False, increased=True, blocked=False)  # the repair
    assert [credited(state, "baseline") for _ in range(3)] == ["learned", "learned", "baseline"]
    # A model's increase always takes over: its cost is its own, whatever the baseline cut before.
    note_decision(cfg, state, "baseline", reduced=True, increased=False, blocked=False)
    note_decision(cfg, state, "learned", reduced=False, increased=True, blocked=False)
    assert [credited(state, "baseline") for _ in range(2)] == ["learned", "baseline"]
