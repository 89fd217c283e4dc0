"""SIGKILL the operator mid-rollout and start it again: the gradual rollout resumes exactly.

The policy runs in ``gradual`` mode with short evaluation windows, so the learned share
(``ratio``) moves while load rises and the Deployment is being scaled. The operator is
killed with SIGKILL (no shutdown handler runs) a moment after a decision, left dead for a
few seconds, and started again as a new process with the same ServiceAccount token.

What "resumes exactly" means, checked on the real objects:

* nothing acts while the operator is dead (status and Deployment unchanged);
* the decision counter continues (n, n+1, …: none repeated, none skipped) and the first
  decision after the restart starts from the replicas the last one applied;
* the gate's ratio, windows and draw counter continue from the status, not from the spec's
  ``initialRatio``; every decision's source is the draw the stored state predicts
  (``learned`` iff SplitMix64(seed, counter) < ratio), before and after the restart;
* each applied replica change produced exactly one ``Scaled`` Event (no repeated action).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import (
    CONTAINER,
    Installed,
    cleanup_policies,
    create_policy,
    decisions,
    deployment_state,
    events_of,
    eventually,
    get_policy,
    installed_chart,
    policy_manifest,
)
from scenario import create_workload, scaling_spec, service, twin_prometheus

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.twin import TwinExporter, TwinTarget
from rlscale.policy.gate import _uniform

pytestmark = pytest.mark.e2e

SEED = 7
RAMP = list(np.linspace(30.0, 400.0, 15)) + [400.0] * 400  # requests/s per trace minute: steady growth


@pytest.fixture
def stack(
    local_cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm_binary: Path,
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[Installed, str, LocalPrometheus]]:
    core = client.CoreV1Api(admin_api)
    create_workload(admin_api, namespace, replicas=2)
    eventually(
        lambda: (
            len(
                [
                    p
                    for p in core.list_namespaced_pod(namespace, label_selector="app=web").items
                    if p.status and p.status.phase == "Running"
                ]
            )
            >= 2
        ),
        timeout=60,
        what="2 running pods",
    )
    twin = TwinExporter(
        admin_api, TwinTarget(namespace, "web", CONTAINER), np.array(RAMP), service=service(), speed=10.0
    ).start()
    prom = twin_prometheus(tmp_path / "prometheus", twin)
    try:
        prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{namespace}"}}[10s]))', timeout=60)
        with installed_chart(local_cluster, admin_api, helm_binary, tmp_path, {"watchNamespaces": [namespace]}) as inst:
            try:
                yield inst, namespace, prom
            finally:
                for proc in inst.operators:
                    proc.stop()
                cleanup_policies(admin_api, namespace)
    finally:
        prom.stop()
        twin.stop()


def _record(api: client.ApiClient, ns: str, log: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Read the policy; remember each decision number's lastDecision and controller state."""
    policy = get_policy(api, ns, "web")
    status = policy.get("status") or {}
    last = status.get("lastDecision")
    if last and status.get("controllerState", {}).get("decisions") == last["number"]:
        # The latest write wins: a change is written once as intent (applied false), then as applied.
        log[int(last["number"])] = {"decision": last, "state": status["controllerState"]}
    return policy


def _wait_decisions(api: client.ApiClient, ns: str, log: dict[int, dict[str, Any]], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if decisions(_record(api, ns, log)) >= n:
            return
        time.sleep(0.3)
    pytest.fail(f"fewer than {n} decisions after {timeout:.0f}s; seen {sorted(log)}")


def _applied_replica_changes(log: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        log[n]["decision"]
        for n in sorted(log)
        if log[n]["decision"]["replicas"] != log[n]["decision"]["previousReplicas"] and log[n]["decision"]["applied"]
    ]


def _scaled_events(api: client.ApiClient, ns: str) -> list[client.CoreV1Event]:
    return [e for e in events_of(api, ns, "web") if e.reason == "Scaled"]


def _wait_quiet_and_announced(
    admin_api: client.ApiClient, ns: str, log: dict[int, dict[str, Any]]
) -> tuple[dict[str, Any], list[client.CoreV1Event], dict[str, Any]]:
    """Wait (30 s at most) for :func:`_quiet_and_announced`; its picture, or a failure listing Events and changes."""
    return eventually(
        lambda: _quiet_and_announced(admin_api, ns, log),
        timeout=30,
        interval=0.1,
        what="a finished decision whose replica changes all have their Scaled Event",
        state=lambda: (
            [e.message for e in _scaled_events(admin_api, ns)],
            [(d["number"], d["previousReplicas"], d["replicas"]) for d in _applied_replica_changes(log)],
        ),
    )


def _quiet_and_announced(
    api: client.ApiClient, ns: str, log: dict[int, dict[str, Any]]
) -> tuple[dict[str, Any], list[client.CoreV1Event], dict[str, Any]] | None:
    """(policy, its Scaled Events, the Deployment) once no decision is half done and each applied change has its Event.

    The operator posts Events in the background (Kopf's poster) after the status patch, and a
    stopped or killed operator drops what it had not posted yet; so before judging the Events,
    or killing it, wait until every applied replica change recorded so far was announced. The
    picture is taken between two reads of the policy that show the same finished decision.
    """
    before = _record(api, ns, log)
    scaled = _scaled_events(api, ns)
    dep = deployment_state(api, ns, "web")
    policy = _record(api, ns, log)
    status = policy.get("status") or {}
    if decisions(before) != decisions(policy) or status.get("pending") is not None:
        return None
    if sum(int(e.count or 1) for e in scaled) < len(_applied_replica_changes(log)):
        return None
    return policy, scaled, dep


def test_sigkill_mid_rollout_resumes_state_without_repeating_or_losing_actions(
    admin_api: client.ApiClient, stack: tuple[Installed, str, LocalPrometheus]
) -> None:
    inst, ns, prom = stack
    spec = scaling_spec(prom.url, mode="gradual")
    spec["rollout"] = {
        "mode": "gradual",
        "initialRatio": 0.5,
        "windowDecisions": 2,
        "minSamples": 1,
        "stepUp": 0.2,
        "backoff": 0.2,
        "seed": SEED,
    }
    env = {"RLSCALE_START_SPREAD": "0"}
    first = inst.operator(namespaces=(ns,), env=env).start()
    create_policy(admin_api, ns, policy_manifest("web", "web", spec))
    log: dict[int, dict[str, Any]] = {}

    # 1. Run until a few windows have closed, then kill right after a fresh decision was written.
    _wait_decisions(admin_api, ns, log, 5, timeout=90)
    seen = decisions(_record(admin_api, ns, log))
    _wait_decisions(admin_api, ns, log, seen + 1, timeout=30)
    # Kill between reconciles: once the decision is confirmed (no pending change left) and
    # announced (a SIGKILL drops the Events Kopf has not posted yet).
    _wait_quiet_and_announced(admin_api, ns, log)
    first.kill()
    assert not first.alive()
    killed = get_policy(admin_api, ns, "web")
    dep_killed = deployment_state(admin_api, ns, "web")
    n_killed = decisions(killed)
    state_killed = killed["status"]["controllerState"]
    assert killed["status"].get("pending") is None

    # 2. Dead operator: nothing changes.
    time.sleep(6.0)  # longer than the 5 s interval
    assert get_policy(admin_api, ns, "web")["metadata"]["resourceVersion"] == killed["metadata"]["resourceVersion"]
    # The Deployment's spec is untouched (its generation counts every spec write). Its
    # resourceVersion may still move: the deployment controller keeps updating its status while
    # the last scale's pods come up, which is not the operator's doing.
    dep_dead = deployment_state(admin_api, ns, "web")
    assert {k: v for k, v in dep_dead.items() if k != "resourceVersion"} == {
        k: v for k, v in dep_killed.items() if k != "resourceVersion"
    }
    # The last decided change had reached the Deployment before the kill (nothing lost).
    assert killed["status"]["replicas"] == dep_killed["replicas"]

    # 3. A new process, same ServiceAccount.
    inst.operator(namespaces=(ns,), env=env).start()
    _wait_decisions(admin_api, ns, log, n_killed + 3, timeout=90)

    numbers = sorted(log)
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), f"a decision number was skipped: {numbers}"
    after = log[n_killed + 1]
    gate_before, gate_after = state_killed["gate"], after["state"]["gate"]
    # The counter and the rollout continue from the status, not from the spec.
    assert gate_after["counter"] == gate_before["counter"] + 1
    assert gate_after["windows"] >= gate_before["windows"]
    if gate_after["windows"] == gate_before["windows"]:
        assert gate_after["ratio"] == gate_before["ratio"]
    assert after["state"]["decisions"] == n_killed + 1
    # The first decision after the restart starts from what the last one before it applied.
    assert after["decision"]["previousReplicas"] == dep_killed["replicas"]
    # Every decision (before and after the restart) made the draw its stored state predicts.
    for n in numbers:
        gate = log[n]["state"]["gate"]
        predicted = "learned" if _uniform(SEED, int(gate["counter"])) < float(gate["ratio"]) else "baseline"
        assert log[n]["decision"]["source"] == predicted, (n, gate, log[n]["decision"]["source"])
    assert {log[n]["decision"]["source"] for n in numbers} == {"learned", "baseline"}, "the rollout did not mix"
    assert max(int(log[n]["state"]["gate"]["windows"]) for n in numbers) >= 2

    # Each applied replica change was announced exactly once: no action repeated by the restart.
    # Judged on a picture taken while the operator runs (stopping it would drop unposted Events).
    final, scaled, dep_final = _wait_quiet_and_announced(admin_api, ns, log)
    inst.operators[-1].stop()
    numbers = sorted(log)
    assert numbers[0] == 1 and numbers == list(range(1, numbers[-1] + 1)), numbers
    changed = _applied_replica_changes(log)
    assert changed, "no replica change happened during the run"
    assert sum(int(e.count or 1) for e in scaled) == len(changed), ([e.message for e in scaled], changed)
    assert dep_final["replicas"] == final["status"]["replicas"]
