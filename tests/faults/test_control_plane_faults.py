"""Fault 1: the API server, then etcd, killed mid-interval and restarted, under a running operator.

The test has a control plane of its own (``own_cluster``: the others must not see it go
down). The Deployment sits where the deciders hold (2 pods at about 60 % CPU, inside the
threshold model's hold band, ``full`` rollout), so any decrease would be the fault's doing. Then, a moment after a
decision: kube-apiserver is SIGKILLed, left down longer than an interval and started again;
later the same for etcd (the API server stays up and answers errors meanwhile). Promised
(docs/operator.md, "Faults"):

* reconciling resumes within two intervals of the component being ready again (a reconcile
  loop that stays stuck after an API error fails this: ``FAULTS_BROKEN_BUILD=stuck_after_api_error``);
* no decision is lost or applied twice: the decision numbers and times the status shows only
  grow, and nothing is scaled (no ``Scaled`` Event, the Deployment unchanged);
* the outage causes no scale-down and no limit decrease.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from faults_helpers import INTERVAL_S, FaultStack, Recorder, counters, decreases, fault_stack
from kubernetes import config

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess

pytestmark = pytest.mark.faults

LOAD = [55.0] * 600  # requests/s: 2 pods of 500m at ~60 % CPU
DOWN_S = 1.5 * INTERVAL_S


@pytest.fixture
def stack(own_cluster: LocalCluster, helm_binary: Path, tmp_path: Path) -> Iterator[FaultStack]:
    api = config.new_client_from_config(config_file=str(own_cluster.kubeconfig))
    try:
        with fault_stack(own_cluster, api, helm_binary, tmp_path, load=LOAD, replicas=2) as s:
            yield s
    finally:
        api.close()


def _outage(stack: FaultStack, op: OperatorProcess, rec: Recorder, component: str) -> dict[str, float]:
    """Kill ``component`` half an interval after a decision, restart it; measure how soon decisions resume."""
    c0 = counters(op)
    rec.wait(lambda r: counters(op)["decisions"] > c0["decisions"], timeout=3 * INTERVAL_S, what="a decision")
    time.sleep(INTERVAL_S / 2)
    t_kill = time.monotonic()
    stack.cluster.stop_component(component, kill=True)
    time.sleep(DOWN_S)
    ready_s = stack.cluster.start_component(component)
    t_ready = time.monotonic()
    during = counters(op)
    resumed = rec.wait(
        lambda r: (now := counters(op))["decisions"] > during["decisions"] and now,
        timeout=4 * INTERVAL_S,
        what=f"a decision after {component} came back",
    )
    return {
        "killed_at": t_kill,
        "ready_at": t_ready,
        "ready_s": ready_s,
        "resumed_after_s": time.monotonic() - t_ready,
        "decisions_during": during["decisions"] - c0["decisions"],
        "refusals_during": during["refusals"] - c0["refusals"],
        "decisions_after": resumed["decisions"],
    }


def test_api_server_and_etcd_restarts_lose_nothing_and_resume(stack: FaultStack) -> None:
    op = stack.operator().start()
    stack.create_policy(stack.spec(mode="full"))
    with Recorder(stack.api, stack.namespace) as rec:
        rec.wait(lambda r: counters(op)["decisions"] >= 2, timeout=6 * INTERVAL_S, what="two decisions")
        t_start = time.monotonic()
        apiserver = _outage(stack, op, rec, "kube-apiserver")
        etcd = _outage(stack, op, rec, "etcd")
        time.sleep(2 * INTERVAL_S)  # two more decisions after the last recovery
        history = rec.replica_history(since=t_start)
        seen = rec.snapshot()

    print(f"faults: kube-apiserver outage {apiserver}; etcd outage {etcd}")
    why = f"kube-apiserver: {apiserver}\netcd: {etcd}\n" + stack.diagnostics(rec)
    for outage in (apiserver, etcd):
        assert outage["resumed_after_s"] <= 2 * INTERVAL_S, why
    # Nothing shrank because of the outages.
    assert not decreases(history), (decreases(history), why)
    # Decision numbers in the written statuses only grow; decision times too (none redone, none reordered).
    numbers = [s.number for s in seen]
    assert numbers == sorted(set(numbers)), (numbers, why)
    times = [datetime.fromisoformat(s.decision["time"].replace("Z", "+00:00")) for s in seen]
    assert times == sorted(times), why
    # Nothing was decided twice into an action: no change at all, no Scaled Event.
    assert all(not s.decision["applied"] for s in seen), why
    assert not [e for e in stack.events() if e[1] == "Scaled"], why
    assert all(r == 2 for _, r, _ in history), why
