"""Fewer status writes: a policy's status is patched when something a user sees changes, or on the heartbeat.

A holding policy (shadow mode, a static baseline already at its target) reconciles every
15 s of a fake clock against the kmock API emulator. Its status must be written on the
first reconcile, then only when the heartbeat (60 s) is due — and the status written then
must count every decision made in between (the counter is carried in memory, not lost
with the skipped writes). A change a user can see (metrics going away, a scaling action)
is written at once, whatever the heartbeat.
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, api_client, steady_service
from kmock_ext import OperatorEmulator, deployment, policy

from rlscale.operator.handlers import Runtime
from rlscale.operator.kube import merge_patch
from rlscale.operator.reconcile import PolicyRef
from rlscale.operator.report import visible
from rlscale.operator.settings import OperatorSettings

ASP = kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies")
DEPLOY = kmock.resource("apps", "v1", "deployments")
T0 = 1_800_000_000.0


def _status_patches(emulator: OperatorEmulator) -> int:
    return sum(1 for c in emulator.calls if c[1] == "autoscalepolicies" and c[2] == "status" and c[3] == "patch")


def _stored(emulator: OperatorEmulator) -> dict[str, Any]:
    return dict(emulator.objects[ASP, "shop", "web"].raw.get("status") or {})


@pytest.mark.asyncio
async def test_holding_policy_writes_on_the_heartbeat_and_counts_every_decision(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    emulator.objects[DEPLOY, "shop", "web"] = deployment("web", "shop", replicas=2)
    fake_prometheus.values = steady_service(0.2)
    body = policy(
        "web",
        "shop",
        "web",
        fake_prometheus.url,
        baseline={"kind": "static", "staticReplicas": 2},
        rollout={"mode": "shadow"},
    )
    emulator.objects[ASP, "shop", "web"] = body
    runtime = Runtime.build(OperatorSettings(metrics_port=0, status_heartbeat_s=60), api_client(str(emulator.url)))
    now = [T0]
    runtime.reconciler.clock = lambda: now[0]
    ref = PolicyRef("shop", "web", 1)
    status: dict[str, Any] = {}

    async def tick() -> Any:
        nonlocal status
        out = await runtime.reconciler.reconcile(ref, body["spec"], status)
        status = merge_patch(status, out.status)  # what the handlers carry into the next reconcile
        now[0] += 15
        return out

    try:
        writes = []
        for _ in range(9):  # t = 0, 15, ..., 120
            out = await tick()
            assert out.decision is not None and not out.decision.changed
            writes.append(_status_patches(emulator))
        # Written at t=0, at t=60 (heartbeat) and t=120; skipped in between.
        assert writes == [1, 1, 1, 1, 2, 2, 2, 2, 3], writes
        stored = _stored(emulator)
        assert stored["controllerState"]["decisions"] == 9  # every decision counted, none lost to skipped writes
        assert stored["lastDecision"]["number"] == 9
        assert status["controllerState"]["decisions"] == 9

        # Prometheus goes away: MetricsAvailable turns False, which a user must see now.
        fake_prometheus.down = True
        await tick()
        assert _status_patches(emulator) == 4
        cond = {c["type"]: c for c in _stored(emulator)["conditions"]}
        assert cond["MetricsAvailable"]["status"] == "False"
        assert _stored(emulator)["controllerState"]["decisions"] == 10
        await tick()  # still down: nothing new to show
        assert _status_patches(emulator) == 4

        # A scaling action is written at once (the pending change first, then the result).
        fake_prometheus.down = False
        body["spec"]["baseline"] = {"kind": "static", "staticReplicas": 3}
        out = await tick()
        assert out.decision is not None and out.decision.replicas == 3 and out.applied
        assert _status_patches(emulator) == 6
        assert _stored(emulator)["controllerState"]["decisions"] == 12
        assert _stored(emulator)["replicas"] == 3
    finally:
        runtime.close()

    counted = runtime.metrics.decisions.collect()[0].samples
    assert sum(s.value for s in counted if s.name.endswith("_total")) == 12  # the metric counts every one


@pytest.mark.asyncio
async def test_heartbeat_zero_writes_every_reconcile(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    emulator.objects[DEPLOY, "shop", "web"] = deployment("web", "shop", replicas=2)
    fake_prometheus.values = {"cpu_usage": 0.2, "request_rate": 50.0, "latency_p99": 0.1, "error_rate": 0.0}
    body = policy("web", "shop", "web", fake_prometheus.url, baseline={"kind": "static", "staticReplicas": 2})
    emulator.objects[ASP, "shop", "web"] = body
    runtime = Runtime.build(OperatorSettings(metrics_port=0, status_heartbeat_s=0), api_client(str(emulator.url)))
    clock = iter(T0 + 15 * i for i in range(10))
    runtime.reconciler.clock = lambda: next(clock)
    status: dict[str, Any] = {}
    try:
        for _ in range(3):
            out = await runtime.reconciler.reconcile(PolicyRef("shop", "web", 1), body["spec"], status)
            status = merge_patch(status, out.status)
    finally:
        runtime.close()
    assert _status_patches(emulator) == 3


def test_visible_ignores_measurements_and_sees_what_users_read() -> None:
    base = {
        "observedGeneration": 1,
        "replicas": 2,
        "lastAction": "hold",
        "lastDecision": {"number": 4, "time": "t1", "source": "baseline", "action": "hold", "explanation": "a"},
        "observed": {"time": "t1", "cpuUtilization": 0.5, "unknown": []},
        "controllerState": {"decisions": 4},
        "conditions": [
            {"type": "ScalingActive", "status": "True", "reason": "Holding", "message": "cpu 0.50"},
            {"type": "Ready", "status": "True", "reason": "Reconciled", "message": ""},
        ],
    }
    later = merge_patch(
        base,
        {
            "lastDecision": {"number": 5, "time": "t2", "explanation": "b"},
            "observed": {"time": "t2", "cpuUtilization": 0.6},
            "controllerState": {"decisions": 5},
            "conditions": [
                {"type": "ScalingActive", "status": "True", "reason": "Holding", "message": "cpu 0.60"},
                {"type": "Ready", "status": "True", "reason": "Reconciled", "message": ""},
            ],
        },
    )
    assert visible(later) == visible(base)
    for change in (
        {"replicas": 3},
        {"observed": {"unknown": ["latency_p99_ms"]}},
        {"lastDecision": {"source": "learned"}},
        {"conditions": [{"type": "Ready", "status": "False", "reason": "TargetNotFound", "message": "x"}]},
        {"conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "other"}]},
    ):
        assert visible(merge_patch(base, change)) != visible(base), change
