"""Two operator replicas share the policies on the real API server; SIGKILL one, the other takes its share.

Both replicas run ``rlscale run`` with ``--shard-identity`` (a Lease each in the test's
namespace, 4 s lease) against the session's control plane, for 8 policies at a 10 s
interval. Prometheus is unreachable on purpose (connection refused): every reconcile still
decides (hold, MetricsAvailable False) and writes its status, so each decision is visible.
Checked on the policies' status, polled every 0.3 s:

* both replicas decide (each replica's own ``rlscale_decisions_total``), and no policy is
  decided twice in one interval: the replicas' decisions add up to at most one per policy
  and interval (plus the window's edges), and each policy's consecutive decisions are at
  least half an interval apart, before and after the kill;
* after one replica is SIGKILLed, every policy is decided again within two intervals of
  the kill, by the survivor;
* every policy's decision numbers run on without a gap or a repeat across the handover.

The chart is installed for its CRD. Its sharding part (``replicaCount`` > 1: identity from the
pod name, a Role for Leases in the release namespace) is rendered and checked in
tests/install/test_rbac.py; the devstack installs with ``replicaCount: 0`` (no kubelet runs the
operator's pod), so here the replicas run as processes with the admin kubeconfig.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

import itertools

from e2e_helpers import (
    create_policy,
    custom,
    deployment_manifest,
    installed_chart,
    metric_sum,
    parse_metrics,
    policy_manifest,
)

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess
from rlscale.devstack.procs import free_port
from rlscale.operator.models import API_GROUP, API_VERSION, PLURAL

pytestmark = pytest.mark.e2e

INTERVAL = 10.0
POLICIES = 8


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _poll(api: client.ApiClient, ns: str, seen: dict[str, dict[int, float]]) -> None:
    """Record each policy's newest decision: number → when it was made."""
    items = custom(api).list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["items"]
    for p in items:
        last = (p.get("status") or {}).get("lastDecision")
        if last:
            seen.setdefault(p["metadata"]["name"], {})[int(last["number"])] = _seconds(last["time"])


def _watch(api: client.ApiClient, ns: str, seen: dict[str, dict[int, float]], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _poll(api, ns, seen)
        time.sleep(0.3)


def _decided(op: OperatorProcess) -> float:
    return metric_sum(parse_metrics(op.metrics_text()), "rlscale_decisions_total")


def test_two_replicas_share_the_policies_and_survive_the_loss_of_one(
    local_cluster: LocalCluster,
    kubeconfig: Path,
    admin_api: client.ApiClient,
    helm_binary: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    ns = namespace
    with installed_chart(local_cluster, admin_api, helm_binary, tmp_path, {"watchNamespaces": [ns]}):  # the CRD
        _run(kubeconfig, admin_api, ns, tmp_path)


def _run(kubeconfig: Path, admin_api: client.ApiClient, ns: str, tmp_path: Path) -> None:
    apps = client.AppsV1Api(admin_api)
    for i in range(POLICIES):
        apps.create_namespaced_deployment(ns, deployment_manifest(f"w{i}", replicas=1, cpu="250m", memory="128Mi"))
        spec = {"intervalSeconds": int(INTERVAL), "prometheus": {"timeoutSeconds": 1}}
        create_policy(admin_api, ns, policy_manifest(f"p{i}", f"w{i}", spec))
    nowhere = f"http://127.0.0.1:{free_port()}"

    def replica(identity: str) -> OperatorProcess:
        env = {
            "RLSCALE_SHARD_IDENTITY": identity,
            "RLSCALE_SHARD_NAMESPACE": ns,
            "RLSCALE_SHARD_LEASE_S": "4",
        }
        return OperatorProcess(kubeconfig, tmp_path, namespaces=(ns,), prometheus_url=nowhere, env=env, name=identity)

    a, b = replica("replica-a"), replica("replica-b")
    try:
        a.start()
        b.start()
        seen: dict[str, dict[int, float]] = {}
        _watch(admin_api, ns, seen, INTERVAL)  # the Leases settle, the first ticks happen
        before = _decided(a) + _decided(b)
        _watch(admin_api, ns, seen, 2 * INTERVAL)
        made = _decided(a) + _decided(b) - before
        assert len(seen) == POLICIES, f"not every policy was decided: {sorted(seen)}"
        assert _decided(a) > 0 and _decided(b) > 0, "one replica did all the work"
        # Two replicas deciding one policy at the same tick would write the same number twice, unseen in
        # status: count the decisions both replicas made instead (2 intervals, +1 per policy for the edges).
        assert POLICIES <= made <= 3 * POLICIES, f"{made} decisions for {POLICIES} policies in two intervals"

        a.kill()
        killed_at = time.time()
        before = _decided(b)
        _watch(admin_api, ns, seen, 3 * INTERVAL)
        made = _decided(b) - before
        assert POLICIES <= made <= 4 * POLICIES, f"{made} decisions for {POLICIES} policies in three intervals"

        for name, by_number in seen.items():
            numbers = sorted(by_number)
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), f"{name}: a decision was lost: {numbers}"
            times = [by_number[n] for n in numbers]
            gaps = [t1 - t0 for t0, t1 in itertools.pairwise(times)]
            assert all(g >= INTERVAL / 2 for g in gaps), f"{name}: decided twice in one interval: {gaps}"
            after = [t for t in times if t > killed_at]
            assert after, f"{name}: never decided after the kill"
            assert after[0] - killed_at <= 2 * INTERVAL, f"{name}: taken over {after[0] - killed_at:.1f} s after"
    finally:
        for op in (a, b):
            op.stop()
        _stop_policies(admin_api, ns)


def _stop_policies(api: client.ApiClient, ns: str) -> None:
    """Delete the policies while an operator may still remove finalizers; strip any left so the namespace goes."""
    items: list[dict[str, Any]] = custom(api).list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["items"]
    for p in items:
        name = p["metadata"]["name"]
        custom(api).patch_namespaced_custom_object(
            API_GROUP, API_VERSION, ns, PLURAL, name, {"metadata": {"finalizers": None}}
        )
        custom(api).delete_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
