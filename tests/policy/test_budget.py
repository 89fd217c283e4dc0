"""The budget arbitration (policy/budget.py): examples of each rule and properties over random members.

Properties: the grants never exceed the budget (nor take held capacity away), the result
is a pure function of the members (the fair rule does not depend on their order), nobody
gets more than it proposed, a shrink is always granted, and a budget that does not bind
leaves every proposal exactly as it was (a policy outside a budget behaves as today).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlscale.policy.budget import (
    BudgetConfig,
    MemberRequest,
    arbitrate,
    budget_limits,
    jain_index,
    slo_pressure,
)
from rlscale.policy.limits import ScalingLimits


def member(
    name: str, replicas: int, proposed: int, *, cpu: int = 1000, pressure: float = 1.0, **kw: int
) -> MemberRequest:
    return MemberRequest(
        name=name,
        replicas=replicas,
        cpu_limit_m=cpu,
        memory_limit_mib=512,
        proposed_replicas=proposed,
        proposed_cpu_limit_m=int(kw.get("proposed_cpu", cpu)),
        proposed_memory_limit_mib=512,
        pressure=pressure,
        max_reclaim=int(kw.get("max_reclaim", 0)),
        min_replicas=int(kw.get("min_replicas", 0)),
    )


def test_a_budget_with_room_grants_every_proposal() -> None:
    result = arbitrate(BudgetConfig(cpu_m=20_000), [member("a", 4, 8), member("b", 4, 6)])
    assert not result.binding
    assert [(g.replicas, g.refused) for g in result.grants] == [(8, False), (6, False)]


def test_fair_gives_the_scarce_pods_to_the_more_pressed_member() -> None:
    # 10 cores, 8 held: 2 pods to hand out; b is three times as pressed per pod.
    result = arbitrate(
        BudgetConfig(cpu_m=10_000), [member("a", 4, 8, pressure=1.0), member("b", 4, 8, pressure=3.0)]
    ).by_name()
    assert (result["a"].replicas, result["b"].replicas) == (4, 6)
    assert result["a"].refused_pods == 4 and result["b"].refused_pods == 2
    assert "refused" in result["a"].reason and "pressure 1.00" in result["a"].reason


def test_fair_levels_pressure_per_pod() -> None:
    # Equal pressure per pod at the start (1 x 8/8 and 1 x 4/4): the tie goes by name to a (8/9 after),
    # then b (4/5 after), then a again: 3 pods -> a 2, b 1.
    result = arbitrate(BudgetConfig(cpu_m=15_000), [member("a", 8, 12), member("b", 4, 8)]).by_name()
    assert result["a"].replicas + result["b"].replicas == 15
    assert (result["a"].replicas, result["b"].replicas) == (10, 5)


def test_fcfs_serves_in_arrival_order() -> None:
    members = [member("a", 4, 8), member("b", 4, 8)]
    first_b = arbitrate(BudgetConfig(cpu_m=10_000, rule="fcfs"), members, order=["b", "a"]).by_name()
    assert (first_b["a"].replicas, first_b["b"].replicas) == (4, 6)
    first_a = arbitrate(BudgetConfig(cpu_m=10_000, rule="fcfs"), members).by_name()
    assert (first_a["a"].replicas, first_a["b"].replicas) == (6, 4)
    assert "first come, first served" in first_a["b"].reason


def test_shrinks_free_capacity_for_growth_in_the_same_interval() -> None:
    result = arbitrate(BudgetConfig(cpu_m=10_000), [member("a", 6, 2), member("b", 4, 8)]).by_name()
    assert (result["a"].replicas, result["b"].replicas) == (2, 8)


def test_a_limit_raise_is_refused_first_when_the_budget_binds() -> None:
    result = arbitrate(BudgetConfig(cpu_m=10_000), [member("a", 4, 5, proposed_cpu=2000), member("b", 4, 4)]).by_name()
    a = result["a"]
    assert a.limit_refused and a.cpu_limit_m == 1000 and a.replicas == 5
    assert "limit raise refused" in a.reason


def test_a_budget_lowered_below_use_takes_nothing_away_and_grants_no_growth() -> None:
    result = arbitrate(BudgetConfig(cpu_m=4_000), [member("a", 4, 6), member("b", 4, 4)]).by_name()
    assert (result["a"].replicas, result["b"].replicas) == (4, 4)


def test_fair_reclaims_pods_from_a_member_under_its_target_for_a_pressed_one() -> None:
    # Full budget: a (pressure 0.4 on 6 pods: needs 3) holds; b (pressure 2 on 4 pods) wants 8.
    members = [member("a", 6, 6, pressure=0.4, max_reclaim=2), member("b", 4, 8, pressure=2.0)]
    fair = arbitrate(BudgetConfig(cpu_m=10_000), members).by_name()
    assert (fair["a"].replicas, fair["b"].replicas) == (4, 6)  # the step limit: at most 2 back
    assert fair["a"].reclaimed_pods == 2 and "reclaimed" in fair["a"].reason
    fcfs = arbitrate(BudgetConfig(cpu_m=10_000, rule="fcfs"), members).by_name()
    assert (fcfs["a"].replicas, fcfs["b"].replicas) == (6, 4)  # independent autoscalers never give back


def test_fair_reclaims_nothing_from_a_member_at_its_target_or_its_floor() -> None:
    busy = [member("a", 6, 6, pressure=1.0, max_reclaim=3), member("b", 4, 8, pressure=2.0)]
    assert arbitrate(BudgetConfig(cpu_m=10_000), busy).by_name()["a"].replicas == 6
    floored = [member("a", 6, 6, pressure=0.1, max_reclaim=3, min_replicas=5), member("b", 4, 8, pressure=2.0)]
    assert arbitrate(BudgetConfig(cpu_m=10_000), floored).by_name()["a"].replicas == 5
    calm = [member("a", 6, 6, pressure=0.1, max_reclaim=3), member("b", 4, 8, pressure=0.9)]
    assert arbitrate(BudgetConfig(cpu_m=10_000), calm).by_name()["a"].replicas == 6  # b is not past its target


def test_an_hpa_decided_member_races_first_come_first_served_inside_a_fair_budget() -> None:
    # 10 cores, 8 held, 2 pods to hand out; b is more pressed. Fair alone gives b both; when the
    # baseline decided a's interval, a races as an HPA under a quota does and takes them first.
    a, b = member("a", 4, 8, pressure=1.0), member("b", 4, 8, pressure=3.0)
    fair = arbitrate(BudgetConfig(cpu_m=10_000), [a, b]).by_name()
    assert (fair["a"].replicas, fair["b"].replicas) == (4, 6)
    a_hpa = dataclasses.replace(a, independent=True)
    mixed = arbitrate(BudgetConfig(cpu_m=10_000), [a_hpa, b], order=["b", "a"]).by_name()
    assert (mixed["a"].replicas, mixed["b"].replicas) == (6, 4)
    assert "independent HPA under a quota" in mixed["a"].reason
    assert "fair" in mixed["b"].reason
    # Among HPA-decided members, arrival order decides.
    b_hpa = dataclasses.replace(b, independent=True)
    both = arbitrate(BudgetConfig(cpu_m=10_000), [a_hpa, b_hpa], order=["b", "a"]).by_name()
    assert (both["a"].replicas, both["b"].replicas) == (4, 6)


def test_an_hpa_decided_member_neither_gives_nor_gets_reclaimed_pods() -> None:
    a, b = member("a", 6, 6, pressure=0.4, max_reclaim=2), member("b", 4, 8, pressure=2.0)
    budget = BudgetConfig(cpu_m=10_000)
    assert arbitrate(budget, [a, b]).by_name()["a"].replicas == 4  # fair: 2 pods go from a to b
    donor_hpa = arbitrate(budget, [dataclasses.replace(a, independent=True), b]).by_name()
    assert (donor_hpa["a"].replicas, donor_hpa["b"].replicas) == (6, 4)
    taker_hpa = arbitrate(budget, [a, dataclasses.replace(b, independent=True)]).by_name()
    assert (taker_hpa["a"].replicas, taker_hpa["b"].replicas) == (6, 4)
    assert taker_hpa["a"].reclaimed_pods == 0


def test_bad_members_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        arbitrate(BudgetConfig(cpu_m=1000), [member("a", 1, 1), member("a", 1, 1)])
    with pytest.raises(ValueError, match="pressure"):
        arbitrate(BudgetConfig(cpu_m=1000), [member("a", 1, 1, pressure=float("nan"))])
    with pytest.raises(ValueError, match="order"):
        arbitrate(BudgetConfig(cpu_m=1000, rule="fcfs"), [member("a", 1, 2)], order=["b"])


def test_slo_pressure_and_jain() -> None:
    assert slo_pressure(0.7, 100.0, 250.0) == pytest.approx(1.0)
    assert slo_pressure(0.35, 500.0, 250.0) == pytest.approx(2.0)
    assert slo_pressure(None, None, 250.0) == 1.0
    assert slo_pressure(float("nan"), 1e9, 250.0) == 10.0
    assert jain_index([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0]) == pytest.approx(0.5)
    assert jain_index([0.0, 0.0]) == 1.0


def test_budget_limits_puts_the_share_in_the_mask_budget() -> None:
    limits = ScalingLimits()
    assert budget_limits(limits, 6000).max_total_cpu_m == 6000
    assert budget_limits(limits.model_copy(update={"max_total_cpu_m": 3000}), 6000).max_total_cpu_m == 3000
    assert budget_limits(limits, 6000, 2048).max_total_memory_mib == 2048


# ----------------------------------------------------------------------------- properties


@st.composite
def members_and_budget(draw: st.DrawFn) -> tuple[BudgetConfig, list[MemberRequest]]:
    n = draw(st.integers(1, 5))
    out = []
    for i in range(n):
        cpu = draw(st.sampled_from([250, 500, 1000, 1500]))
        mem = draw(st.sampled_from([256, 512, 1024]))
        out.append(
            MemberRequest(
                name=f"m{i}",
                replicas=draw(st.integers(0, 30)),
                cpu_limit_m=cpu,
                memory_limit_mib=mem,
                proposed_replicas=draw(st.integers(0, 40)),
                proposed_cpu_limit_m=draw(st.sampled_from([cpu, cpu + 250, max(cpu - 250, 1)])),
                proposed_memory_limit_mib=draw(st.sampled_from([mem, mem * 2])),
                pressure=draw(st.floats(0.0, 10.0)),
                weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
                max_reclaim=draw(st.sampled_from([0, 0, 1, 3])),
                min_replicas=draw(st.integers(0, 5)),
                independent=draw(st.sampled_from([False, False, False, True])),
            )
        )
    budget = BudgetConfig(
        cpu_m=draw(st.integers(1, 60_000)),
        memory_mib=draw(st.one_of(st.none(), st.integers(1, 40_000))),
        rule=draw(st.sampled_from(["fair", "fcfs"])),
        reclaim_below=draw(st.sampled_from([0.0, 0.5, 0.8, 1.0])),
    )
    return budget, out


@settings(max_examples=1500, deadline=None)
@given(members_and_budget(), st.randoms(use_true_random=False))
def test_grants_stay_within_the_budget_and_the_proposals(
    case: tuple[BudgetConfig, list[MemberRequest]], rnd: object
) -> None:
    budget, members = case
    order = [m.name for m in members]
    rnd.shuffle(order)  # type: ignore[attr-defined]
    result = arbitrate(budget, members, order=order)
    held_cpu = sum(m.cpu_m for m in members)
    held_mem = sum(m.memory_mib for m in members)
    # Never past the budget, unless already past it (then never past what was held).
    assert result.used_cpu_m <= max(budget.cpu_m, held_cpu)
    if budget.memory_mib is not None:
        assert result.used_memory_mib <= max(budget.memory_mib, held_mem)
    if held_cpu <= budget.cpu_m and (budget.memory_mib is None or held_mem <= budget.memory_mib):
        assert result.used_cpu_m <= budget.cpu_m
    for m, g in zip(members, result.grants, strict=True):
        assert g.name == m.name
        # Never more than proposed; a shrink or hold always granted; growth refused only by fewer pods/limits.
        assert g.replicas <= max(m.proposed_replicas, 0)
        assert g.cpu_limit_m <= max(m.cpu_limit_m, m.proposed_cpu_limit_m)
        if not m.grows and (m.max_reclaim == 0 or budget.rule == "fcfs"):
            assert (g.replicas, g.cpu_limit_m, g.memory_limit_mib, g.refused) == (
                m.proposed_replicas,
                m.proposed_cpu_limit_m,
                m.proposed_memory_limit_mib,
                False,
            )
        elif not m.grows:
            # Reclaimed: never more than max_reclaim, never below the floor, never past the target.
            assert g.replicas >= min(m.proposed_replicas, max(m.proposed_replicas - m.max_reclaim, m.min_replicas))
            if g.reclaimed_pods:
                assert m.weight * m.pressure * max(m.replicas, 1) / g.replicas <= budget.reclaim_below + 1e-9
        else:
            assert g.replicas >= min(m.replicas, m.proposed_replicas)
        assert g.refused_pods == m.proposed_replicas - g.replicas or g.refused_pods == 0


@settings(max_examples=800, deadline=None)
@given(members_and_budget(), st.randoms(use_true_random=False))
def test_fair_is_deterministic_and_order_independent(
    case: tuple[BudgetConfig, list[MemberRequest]], rnd: object
) -> None:
    budget, members = case
    budget = budget.model_copy(update={"rule": "fair"})
    members = [dataclasses.replace(m, independent=False) for m in members]  # their arrival order counts
    shuffled = list(members)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = arbitrate(budget, members).by_name()
    b = arbitrate(budget, shuffled).by_name()
    assert a == b
    assert arbitrate(budget, members).by_name() == a


@settings(max_examples=800, deadline=None)
@given(members_and_budget())
def test_a_budget_that_does_not_bind_changes_nothing(case: tuple[BudgetConfig, list[MemberRequest]]) -> None:
    _, members = case
    roomy = BudgetConfig(  # reclaim or not: a budget with room takes nothing back
        cpu_m=max(sum(m.demand_cpu_m for m in members), 1),
        memory_mib=max(sum(m.demand_memory_mib for m in members), 1),
    )
    for rule in ("fair", "fcfs"):
        result = arbitrate(roomy.model_copy(update={"rule": rule}), members)
        assert not result.binding
        for m, g in zip(members, result.grants, strict=True):
            assert (g.replicas, g.cpu_limit_m, g.memory_limit_mib) == (
                m.proposed_replicas,
                m.proposed_cpu_limit_m,
                m.proposed_memory_limit_mib,
            )
            assert not g.refused


@settings(max_examples=500, deadline=None)
@given(members_and_budget())
def test_fair_never_refuses_a_pod_that_would_still_fit(case: tuple[BudgetConfig, list[MemberRequest]]) -> None:
    """Work-conserving: after a binding fair arbitration, no refused member's next pod fits in what is left."""
    budget, members = case
    budget = budget.model_copy(update={"rule": "fair"})
    result = arbitrate(budget, members)
    if not result.binding:
        return
    free_cpu = budget.cpu_m - result.used_cpu_m
    free_mem = None if budget.memory_mib is None else budget.memory_mib - result.used_memory_mib
    for g in result.grants:
        if g.refused_pods > 0:
            fits = g.cpu_limit_m <= free_cpu and (free_mem is None or g.memory_limit_mib <= free_mem)
            assert not fits, dataclasses.asdict(g)


@settings(max_examples=500, deadline=None)
@given(members_and_budget(), st.randoms(use_true_random=False))
def test_a_fair_budget_whose_members_the_hpa_all_decided_is_first_come_first_served(
    case: tuple[BudgetConfig, list[MemberRequest]], rnd: object
) -> None:
    """A fair budget in which the baseline decided for every member grants exactly what fcfs grants."""
    budget, members = case
    members = [dataclasses.replace(m, independent=True) for m in members]
    order = [m.name for m in members]
    rnd.shuffle(order)  # type: ignore[attr-defined]
    fair = arbitrate(budget.model_copy(update={"rule": "fair"}), members, order=order)
    fcfs = arbitrate(budget.model_copy(update={"rule": "fcfs"}), members, order=order)
    assert [(g.replicas, g.cpu_limit_m, g.memory_limit_mib) for g in fair.grants] == [
        (g.replicas, g.cpu_limit_m, g.memory_limit_mib) for g in fcfs.grants
    ]
