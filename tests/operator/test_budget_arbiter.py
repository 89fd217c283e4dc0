"""The operator's budget arbiter (operator/budget_arbiter.py) and how a policy finds its budget (handlers).

A fake Kubernetes API records the budget's status writes; the arbiter must answer members
that ask together with one arbitration, count a member that did not ask at what it was last
granted, read a budget from a ResourceQuota, and keep everything held when the budget
cannot be known.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from rlscale.operator.budget_arbiter import BudgetArbiter, Membership, quota_totals, selects
from rlscale.operator.budget_models import CapacityBudgetSpec
from rlscale.operator.handlers import find_budget
from rlscale.operator.reconcile import races_as_independent_hpa
from rlscale.policy.budget import MemberRequest
from rlscale.policy.decide import ControllerState, DecisionConfig, decide
from rlscale.policy.observation import Observation

SEL = {"matchLabels": {"budget": "shop"}}


class FakeKube:
    def __init__(self, quota: dict[str, Any] | None = None, deployments: dict[str, Any] | None = None) -> None:
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.quota = quota
        self.deployments = deployments or {}

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.deployments.get(name)

    async def patch_budget_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append((namespace, name, status))

    async def get_resource_quota(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.quota


def _membership(spec: dict[str, Any], members: tuple[str, ...] = ("a", "b")) -> Membership:
    return Membership("shop", CapacityBudgetSpec.model_validate({"policySelector": SEL, **spec}), members, 3)


def _ask(name: str, replicas: int, proposed: int, pressure: float = 1.0) -> MemberRequest:
    return MemberRequest(name, replicas, 1000, 256, proposed, 1000, 256, pressure=pressure)


@pytest.mark.asyncio
async def test_members_asking_together_share_one_arbitration() -> None:
    kube = FakeKube()
    arbiter = BudgetArbiter(kube, window_s=5.0)  # type: ignore[arg-type]
    m = _membership({"cpuMillicores": 6000})
    a, b = await asyncio.gather(
        arbiter.grant("ns", m, _ask("a", 1, 6, pressure=1.0)), arbiter.grant("ns", m, _ask("b", 1, 6, pressure=3.0))
    )
    assert a.replicas + b.replicas == 6 and b.replicas > a.replicas
    await asyncio.sleep(0)  # the status write runs after the answers
    await asyncio.sleep(0)
    (ns, name, status) = kube.statuses[-1]
    assert (ns, name, status["binding"], status["usedMillicores"], status["observedGeneration"]) == (
        "ns",
        "shop",
        True,
        6000,
        3,
    )
    assert [m["policy"] for m in status["members"]] == ["a", "b"]
    assert all(m["refusedPods"] > 0 for m in status["members"])


@pytest.mark.asyncio
async def test_a_member_that_does_not_ask_is_counted_at_what_it_was_granted() -> None:
    kube = FakeKube()
    arbiter = BudgetArbiter(kube, window_s=0.05)  # type: ignore[arg-type]
    m = _membership({"cpuMillicores": 6000})
    await asyncio.gather(arbiter.grant("ns", m, _ask("a", 1, 3)), arbiter.grant("ns", m, _ask("b", 1, 3)))
    # b is late this round: a may not take b's 3 cores.
    alone = await arbiter.grant("ns", m, _ask("a", 3, 6))
    assert alone.replicas == 3 and alone.refused_pods == 3


@pytest.mark.asyncio
async def test_a_member_never_seen_is_counted_at_what_its_deployment_holds() -> None:
    b = {
        "metadata": {"name": "db"},
        "spec": {"replicas": 4, "template": {"spec": {"containers": [
            {"name": "app", "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}}
        ]}}},
        "status": {"readyReplicas": 4},
    }  # fmt: skip
    kube = FakeKube(deployments={"db": b})
    arbiter = BudgetArbiter(kube, window_s=0.05)  # type: ignore[arg-type]
    m = Membership(
        "shop",
        CapacityBudgetSpec.model_validate({"policySelector": SEL, "cpuMillicores": 6000}),
        ("a", "b"),
        1,
        (("a", "da", "app"), ("b", "db", "app")),
    )
    grant = await arbiter.grant("ns", m, _ask("a", 1, 6))  # b holds 4 cores: a may have 2
    assert grant.replicas == 2


@pytest.mark.asyncio
async def test_a_budget_from_a_resource_quota() -> None:
    kube = FakeKube({"status": {"hard": {"limits.cpu": "4", "limits.memory": "8Gi"}}})
    arbiter = BudgetArbiter(kube, window_s=0.05)  # type: ignore[arg-type]
    grant = await arbiter.grant("ns", _membership({"fromResourceQuota": {"name": "q"}}, ("a",)), _ask("a", 1, 9))
    assert grant.replicas == 4


@pytest.mark.asyncio
async def test_an_unknown_budget_lets_nobody_grow() -> None:
    kube = FakeKube(None)
    arbiter = BudgetArbiter(kube, window_s=0.05)  # type: ignore[arg-type]
    m = _membership({"fromResourceQuota": {"name": "q"}}, ("a",))
    grow = await arbiter.grant("ns", m, _ask("a", 2, 9))
    assert grow.replicas == 2 and "not found" in grow.reason
    shrink = await arbiter.grant("ns", m, _ask("a", 2, 1))
    assert shrink.replicas == 1
    assert "not found" in kube.statuses[-1][2]["message"]


def test_quota_totals() -> None:
    assert quota_totals({"spec": {"hard": {"limits.cpu": "1500m", "limits.memory": "1Gi"}}}) == (1500, 1024)
    assert quota_totals({"spec": {"hard": {"pods": "10"}}}) == (None, None)


def test_find_budget_selects_by_labels_first_budget_by_name() -> None:
    budgets = [
        ("zz", {"policySelector": SEL, "cpuMillicores": 1000}, 1),
        ("aa", {"policySelector": SEL, "cpuMillicores": 2000}, 2),
        ("bad", {"policySelector": {"matchLabels": {}}, "cpuMillicores": 1}, 1),
    ]
    policies = [
        ("p", {"budget": "shop"}, "dp", "app"),
        ("q", {"budget": "shop", "x": "y"}, "dq", "app"),
        ("r", {"budget": "other"}, "dr", "app"),
    ]
    found = find_budget("ns", "p", {"budget": "shop"}, budgets, policies)
    assert found is not None and found.budget == "aa" and found.members == ("p", "q")
    assert found.targets == (("p", "dp", "app"), ("q", "dq", "app"))
    assert find_budget("ns", "r", {"budget": "other"}, budgets, policies) is None
    assert not selects({}, {"a": "b"})


@pytest.mark.asyncio
async def test_the_ceiling_for_the_mask_is_what_could_be_granted() -> None:
    arbiter = BudgetArbiter(FakeKube(), window_s=5.0)  # type: ignore[arg-type]
    m = _membership({"cpuMillicores": 8000})
    assert arbiter.ceiling("ns", m, _ask("a", 2, 2)) is None  # nothing known before the first round
    await asyncio.gather(arbiter.grant("ns", m, _ask("a", 2, 2)), arbiter.grant("ns", m, _ask("b", 2, 4)))
    # a holds 2 cores, b 4: a could have its own 2 and the 2 free, not b's (b is not under its target).
    assert arbiter.ceiling("ns", m, _ask("a", 2, 2)) == 4000


def test_only_the_gradual_gates_hpa_intervals_race_as_independent_hpas() -> None:
    """The intervals the gate scores as the HPA's are granted as an HPA in a quota is; nothing else."""
    obs = Observation(
        timestamp=1_800_000_000.0, replicas=3, ready_replicas=3, cpu_limit_m=500, memory_limit_mib=512,
        cpu_utilization=1.4,
    )  # fmt: skip
    d, _ = decide(obs, DecisionConfig(), ControllerState.initial(DecisionConfig()), None)
    gated_hpa = dataclasses.replace(d, source="baseline", gate_mode="gradual", learned_action="replicas+1")
    assert races_as_independent_hpa(gated_hpa)
    assert not races_as_independent_hpa(dataclasses.replace(gated_hpa, source="learned"))
    assert not races_as_independent_hpa(dataclasses.replace(gated_hpa, gate_mode="shadow"))
    assert not races_as_independent_hpa(dataclasses.replace(gated_hpa, learned_action=None))  # no model to compare
    assert not races_as_independent_hpa(d)  # no model, gate off: the budget's rule


@pytest.mark.asyncio
async def test_an_hpa_decided_member_takes_free_pods_first_come_first_served_in_a_fair_round() -> None:
    arbiter = BudgetArbiter(FakeKube(), window_s=5.0)  # type: ignore[arg-type]
    m = _membership({"cpuMillicores": 6000})
    hpa = dataclasses.replace(_ask("a", 1, 6, pressure=1.0), independent=True)
    a, b = await asyncio.gather(arbiter.grant("ns", m, hpa), arbiter.grant("ns", m, _ask("b", 1, 6, pressure=3.0)))
    # Fair alone would favour b (three times as pressed); the HPA's interval races and wins the free pods.
    assert (a.replicas, b.replicas) == (5, 1)
    assert "independent HPA under a quota" in a.reason
