"""A Prometheus that (re)started less than a rate window ago is not read as a quiet service.

After a restart (and after losing its data) a ``rate()`` window reaches back past the first
sample; ``rate()`` extrapolates only half a scrape interval beyond the data, so every rate
reads low in proportion to the missing part, for one whole window. The fault suite saw the
threshold model scale a steady service down right after Prometheus came back
(tests/faults/test_prometheus_faults.py). The operator asks Prometheus when it started
(``/api/v1/status/runtimeinfo``) and treats the signals as unknown until one window has
passed: the mask then holds, and the gate scores nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, api_client, steady_service
from kmock_ext import OperatorEmulator, deployment, policy

from rlscale.operator.handlers import Runtime
from rlscale.operator.prometheus import duration_s, parse_rfc3339
from rlscale.operator.reconcile import PolicyRef
from rlscale.operator.settings import OperatorSettings

NOW = 1_800_000_000.0


def test_parse_rfc3339_and_durations() -> None:
    assert parse_rfc3339("2027-01-15T08:00:00.123456789Z") == pytest.approx(1_800_000_000.123456789)
    assert parse_rfc3339("2027-01-15T09:00:00+01:00") == 1_800_000_000.0
    assert [duration_s(d) for d in ("500ms", "10s", "2m", "1h")] == [0.5, 10.0, 120.0, 3600.0]
    with pytest.raises(ValueError, match="not a duration"):
        duration_s("1d")


@pytest.mark.asyncio
async def test_rates_inside_the_first_window_after_a_restart_are_unknown(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    started = {"at": NOW - 20.0}  # 20 s before the decision; the policy's window is 1 m

    def runtimeinfo(_: kmock.Request) -> Any:
        stamp = datetime.fromtimestamp(started["at"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")
        return {"status": "success", "data": {"startTime": stamp}}

    fake_prometheus.handler["get /api/v1/status/runtimeinfo"] << runtimeinfo
    emulator.objects[kmock.resource("apps", "v1", "deployments"), "shop", "web"] = deployment("web", "shop", replicas=4)
    fake_prometheus.values = steady_service(0.05, request_rate=5.0)  # a quiet service: what a partly empty window shows
    body = policy("web", "shop", "web", fake_prometheus.url, rollout={"mode": "shadow"}, limits={"minReplicas": 1})
    emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "web"] = body
    runtime = Runtime.build(OperatorSettings(metrics_port=0, status_heartbeat_s=0), api_client(str(emulator.url)))
    runtime.reconciler.clock = lambda: NOW
    ref = PolicyRef("shop", "web", 1)
    try:
        young = (await runtime.reconciler.reconcile(ref, body["spec"], None)).status
        started["at"] = NOW - 3600.0
        await asyncio.sleep(1.1)  # the start time is cached for a second
        old = (await runtime.reconciler.reconcile(ref, body["spec"], young)).status
    finally:
        runtime.close()

    conditions = {c["type"]: c for c in young["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "False", conditions
    assert "within the rate window (1m)" in conditions["MetricsAvailable"]["message"]
    assert young["lastDecision"]["replicas"] == 4, young["lastDecision"]  # held
    assert "cpu_utilization" in young["observed"]["unknown"]
    # An hour-old Prometheus is believed.
    assert {c["type"]: c for c in old["conditions"]}["MetricsAvailable"]["status"] == "True"
    assert old["observed"]["cpuUtilization"] is not None, old["observed"]
