"""A decision's status leaves nothing of the previous decision behind.

Status is written with a JSON merge patch, which keeps every key the patch does not mention.
A field that is unset (``None``) in the new decision — the reward of a blind interval, the
observed values while Prometheus is down, the rule that clamped the last decision — must be
written as ``null`` (delete), or the stored status shows the previous decision's value as if
it were this one's. Found by the fault suite (tests/faults): during a Prometheus outage
``lastDecision.reward`` kept showing the last scored interval's reward.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FakePrometheus, api_client, steady_service
from kmock_ext import OperatorEmulator, deployment, policy

from rlscale.operator.handlers import Runtime
from rlscale.operator.reconcile import PolicyRef
from rlscale.operator.settings import OperatorSettings

pytestmark = pytest.mark.asyncio


def _stored(emulator: OperatorEmulator) -> dict[str, Any]:
    import kmock

    asp = kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies")
    status: dict[str, Any] = json.loads(json.dumps(emulator.objects[asp, "shop", "web"].raw["status"]))
    return status


async def test_unknown_values_of_a_blind_decision_replace_the_previous_ones(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    import kmock

    emulator.objects[kmock.resource("apps", "v1", "deployments"), "shop", "web"] = deployment("web", "shop", replicas=2)
    fake_prometheus.values = steady_service(0.6)
    body = policy("web", "shop", "web", fake_prometheus.url, rollout={"mode": "shadow"})
    emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "web"] = body
    runtime = Runtime.build(OperatorSettings(metrics_port=0, status_heartbeat_s=0), api_client(str(emulator.url)))
    clock = iter(1_800_000_000.0 + 15 * i for i in range(10))
    runtime.reconciler.clock = lambda: next(clock)
    ref = PolicyRef("shop", "web", 1)
    status: dict[str, Any] | None = None
    try:
        for _ in range(2):
            status = (await runtime.reconciler.reconcile(ref, body["spec"], status)).status
        seen = _stored(emulator)
        assert seen["lastDecision"]["reward"] is not None
        assert seen["observed"]["cpuUtilization"] is not None

        fake_prometheus.down = True
        status = (await runtime.reconciler.reconcile(ref, body["spec"], status)).status
    finally:
        runtime.close()
    blind = _stored(emulator)
    assert blind["lastDecision"]["number"] == 3
    assert blind["lastDecision"].get("reward") is None, blind["lastDecision"]
    assert blind["lastDecision"].get("sloViolated") is None, blind["lastDecision"]
    assert blind["observed"].get("cpuUtilization") is None, blind["observed"]
    assert blind["observed"].get("requestRate") is None, blind["observed"]
    assert "cpu_utilization" in blind["observed"]["unknown"]
