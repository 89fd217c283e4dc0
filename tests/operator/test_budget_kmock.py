"""A CapacityBudget against kmock's Kubernetes emulator: the real Kopf operator arbitrates, and survives a restart.

Two Deployments (2 pods of 500m each) whose policies each ask for 8 pods (static baseline,
shadow rollout) share a fair budget of 5 cores: the operator grants 5 + 5 pods (equal
pressure, equal pods), never more than 10 together, writes the budget's status and posts
BudgetRefused Events. Then it is stopped and started again (a restart: nothing in memory):
the Deployments stay within the budget, decisions go on from the stored counters, and the
budget's status is written again by the new process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, eventually, running_operator, steady_service
from kmock_ext import OperatorEmulator, deployment, policy

pytestmark = pytest.mark.asyncio

ASP = kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies")
CAPB = kmock.resource("rlscale.io", "v1alpha1", "capacitybudgets")
DEPLOY = kmock.resource("apps", "v1", "deployments")
EVENTS = kmock.resource("", "v1", "events")
MEMBERS = ("api", "web")


def _replicas(emu: OperatorEmulator) -> tuple[int, ...]:
    return tuple(int(emu.objects[DEPLOY, "shop", n].raw["spec"]["replicas"]) for n in MEMBERS)


def _budget_status(emu: OperatorEmulator) -> dict[str, Any]:
    return dict(emu.objects[CAPB, "shop", "shop"].raw.get("status") or {})


def _decisions(emu: OperatorEmulator, name: str) -> int:
    return int(((emu.objects[ASP, "shop", name].raw.get("status") or {}).get("lastDecision") or {}).get("number", 0))


def _refusals(emu: OperatorEmulator) -> int:
    return sum(
        1
        for (res, _, _), obj in emu.objects.items()
        if res == EVENTS and not obj.deleted and obj.raw.get("reason") == "BudgetRefused"
    )


async def test_budget_members_are_arbitrated_and_a_restart_keeps_them_within_it(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    fake_prometheus.values = steady_service(0.35)
    fake_prometheus.workloads = MEMBERS
    for name in MEMBERS:
        emulator.objects[DEPLOY, "shop", name] = deployment(name, "shop", replicas=2)
        body = policy(
            name,
            "shop",
            name,
            fake_prometheus.url,
            baseline={"kind": "static", "staticReplicas": 8},
            rollout={"mode": "shadow"},
            limits={"maxReplicas": 10, "cpuLimitMaxMillicores": 500, "scaleUpCooldownSeconds": 0},
        )
        body["metadata"]["labels"] = {"budget": "shop"}
        emulator.objects[ASP, "shop", name] = body
    emulator.objects[CAPB, "shop", "shop"] = {
        "apiVersion": "rlscale.io/v1alpha1",
        "kind": "CapacityBudget",
        "metadata": {"name": "shop", "namespace": "shop", "generation": 1, "resourceVersion": "1"},
        "spec": {"policySelector": {"matchLabels": {"budget": "shop"}}, "cpuMillicores": 5000, "rule": "fair"},
    }
    seen: list[tuple[int, ...]] = []

    def settled() -> bool:
        seen.append(_replicas(emulator))
        return seen[-1] == (5, 5)

    async with running_operator(emulator):
        await eventually(settled, timeout=40, interval=0.05)
        await eventually(lambda: _refusals(emulator) >= 2, timeout=20)
        status = await eventually(lambda: _budget_status(emulator).get("members") and _budget_status(emulator))
    assert all(sum(pair) <= 10 for pair in seen), max(seen, key=sum)
    assert status["usedMillicores"] == 5000 and status["cpuMillicores"] == 5000
    assert {m["policy"]: m["cpuMillicores"] for m in status["members"]} == {"api": 2500, "web": 2500}
    before = {n: _decisions(emulator, n) for n in MEMBERS}
    first_round = status["lastArbitration"]

    # A restart: a new process, nothing in memory but what is stored in the objects.
    async with running_operator(emulator):
        await eventually(lambda: all(_decisions(emulator, n) > before[n] for n in MEMBERS), timeout=30)
        await eventually(lambda: _budget_status(emulator).get("lastArbitration") != first_round, timeout=20)
        for _ in range(30):  # three seconds more of the restarted operator
            seen.append(_replicas(emulator))
            await asyncio.sleep(0.1)
    assert all(sum(pair) <= 10 for pair in seen), max(seen, key=sum)
    assert _replicas(emulator) == (5, 5)
