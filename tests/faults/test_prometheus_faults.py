"""Fault 2: Prometheus is killed, stays down three intervals and comes back with its data lost.

The Deployment sits where both deciders hold (2 pods at about 60 % CPU: the HPA baseline's
target ± tolerance, inside the threshold model's hold band), in ``gradual`` rollout with short
windows so the gate scores every few decisions. A build that read missing metrics as 0 would
see an idle service and scale it down (``FAULTS_BROKEN_BUILD=unknown_as_zero`` does, and this
test fails). Promised (docs/operator.md, "Faults"):

* while metrics are missing: no replica or CPU-limit decrease; decisions keep coming (holds);
  ``MetricsAvailable=False`` names the cause, with one Warning Event for the transition;
* the gate scores no blind interval (no reward, window counters unchanged);
* when Prometheus is back its ``rate()`` windows are partly empty and read low: the operator
  keeps treating the signals as unknown until one window (10 s here) has passed since
  Prometheus started, then ``MetricsAvailable`` turns True — within one window and two
  intervals of Prometheus being ready — and nothing is scaled down then either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import wait_for_events
from faults_helpers import INTERVAL_S, FaultStack, Recorder, Seen, counters, decreases, fault_stack
from kubernetes import client

from rlscale.devstack.cluster import LocalCluster

pytestmark = pytest.mark.faults

LOAD = [55.0] * 400  # requests/s: 2 pods of 500m at ~60 % CPU
WINDOW_S = 10.0  # the scenario's spec.prometheus.window


@pytest.fixture
def stack(
    local_cluster: LocalCluster, admin_api: client.ApiClient, helm_binary: Path, tmp_path: Path
) -> Iterator[FaultStack]:
    with fault_stack(local_cluster, admin_api, helm_binary, tmp_path, load=LOAD, replicas=2) as s:
        yield s


def _blind(s: Seen) -> bool:
    return s.condition("MetricsAvailable").get("status") == "False"


def _scored(s: Seen) -> tuple[int, int]:
    gate = s.state["gate"]
    return int(gate["windows"]), int(gate["window_count"])


def test_prometheus_restart_with_data_loss_holds_and_resumes(stack: FaultStack) -> None:
    op = stack.operator().start()
    spec = stack.spec(mode="gradual")
    spec["rollout"] = {"mode": "gradual", "initialRatio": 0.5, "windowDecisions": 2, "minSamples": 1, "seed": 3}
    stack.create_policy(spec)
    with Recorder(stack.api, stack.namespace) as rec:
        rec.wait(
            lambda r: (last := r.last()) is not None and not _blind(last) and _scored(last) != (0, 0),
            timeout=8 * INTERVAL_S,
            what="decisions on live metrics that the gate has scored",
        )
        before = rec.count()
        c0 = counters(op)
        t_down = time.monotonic()
        stack.prometheus.stop(kill=True)
        time.sleep(3 * INTERVAL_S)
        c1 = counters(op)
        ready_s = stack.prometheus.restart(keep_data=False)  # already down: this starts it on the same port
        t_ready = time.monotonic()
        back = rec.wait(
            lambda r: next((s for s in r.after(before) if s.first_seen > t_ready and not _blind(s)), None),
            timeout=4 * INTERVAL_S,
            what="MetricsAvailable=True after Prometheus returned",
        )
        resumed_after = back.first_seen - t_ready
        time.sleep(2 * INTERVAL_S)  # two more decisions on the returned data
        history = rec.replica_history(since=t_down)
        seen = rec.after(before)

    why = f"Prometheus ready after {ready_s:.1f}s, metrics back {resumed_after:.1f}s later\n" + stack.diagnostics(rec)
    print(f"faults: Prometheus ready {ready_s:.1f}s after its start, metrics back {resumed_after:.1f}s after ready")
    # Decisions kept coming while blind (holding); nothing shrank, then or on the returned data.
    assert c1["decisions"] - c0["decisions"] >= 2, (c0, c1, why)
    assert not decreases(history), (decreases(history), why)
    blind = [s for s in seen if _blind(s) and s.number < back.number]
    assert blind, why
    for s in blind:
        d = s.decision
        assert d["replicas"] >= d["previousReplicas"] and d["cpuLimitMillicores"] >= d["previousCpuLimitMillicores"], (
            s.number,
            why,
        )
        assert d.get("reward") is None, f"decision #{s.number} scored a blind interval\n{why}"
    # The gate scored nothing between the first and the last blind decision it wrote down.
    assert _scored(blind[0]) == _scored(blind[-1]), ([(s.number, _scored(s)) for s in blind], why)
    assert blind[0].condition("MetricsAvailable").get("reason") == "PrometheusUnavailable", why
    # Back within one rate window and two intervals of Prometheus being ready.
    assert resumed_after <= WINDOW_S + 2 * INTERVAL_S, why
    assert resumed_after >= WINDOW_S - 1, f"trusted a partly empty rate window\n{why}"
    assert back.condition("MetricsAvailable").get("status") == "True"
    warnings = wait_for_events(
        stack.api,
        stack.namespace,
        "web",
        lambda evs: [e for e in evs if e.reason == "PrometheusUnavailable" and e.type == "Warning"],
        what="the PrometheusUnavailable Warning Event",
    )
    assert sum(int(e.count or 1) for e in warnings) == 1, stack.events()
