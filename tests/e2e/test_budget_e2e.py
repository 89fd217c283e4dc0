"""Two Deployments in one CapacityBudget, arbitrated by the operator on the real API server.

Two AutoscalePolicies (static baseline: 6 replicas each, 1 CPU per pod) share a
CapacityBudget of 6 cores, fair rule. Together they ask for 12 cores; the operator (its
own process, admin kubeconfig; Prometheus unreachable on purpose, so both read as equally
pressed) must grant them within the budget, polled every 0.2 s: the two Deployments never
hold more than 6 cores together, they end at 3 replicas each (equal pressure, equal pods),
the budget's status names each member's share, each policy's Events say ``BudgetRefused``
(the first round refuses what the two ask beyond the budget; afterwards each member's mask
holds what it could be granted) and its ``lastDecision`` explanation names the budget. Then
the budget is raised to 12 cores and both reach 6: the budget, not something else, held
them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import (
    GROUP,
    VERSION,
    cleanup_policies,
    create_policy,
    custom,
    deployment_manifest,
    events_of,
    get_policy,
    installed_chart,
    policy_manifest,
)

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess
from rlscale.devstack.procs import free_port

pytestmark = pytest.mark.e2e

BUDGETS = "capacitybudgets"
INTERVAL = 5


def _replicas(api: client.ApiClient, ns: str, name: str) -> int:
    return int(client.AppsV1Api(api).read_namespaced_deployment(name, ns).spec.replicas)


def _budget(api: client.ApiClient, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(api).get_namespaced_custom_object(GROUP, VERSION, ns, BUDGETS, "shop")
    return obj


def _watch(api: client.ApiClient, ns: str, seconds: float, until: Any = None) -> list[tuple[int, int]]:
    """(replicas of a, replicas of b) every 0.2 s, for ``seconds`` or until ``until(a, b)``."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pair = (_replicas(api, ns, "a"), _replicas(api, ns, "b"))
        seen.append(pair)
        if until is not None and until(*pair):
            break
        time.sleep(0.2)
    return seen


def test_two_deployments_in_one_budget_are_arbitrated(
    local_cluster: LocalCluster,
    kubeconfig: Path,
    admin_api: client.ApiClient,
    helm_binary: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    ns = namespace
    with installed_chart(local_cluster, admin_api, helm_binary, tmp_path, {"watchNamespaces": [ns]}):  # the CRDs
        apps = client.AppsV1Api(admin_api)
        spec = {
            "intervalSeconds": INTERVAL,
            "baseline": {"kind": "static", "staticReplicas": 6},
            "rollout": {"mode": "shadow"},
            "limits": {"maxReplicas": 10, "cpuLimitMaxMillicores": 1000},
            "prometheus": {"timeoutSeconds": 1},
        }
        for name in ("a", "b"):
            apps.create_namespaced_deployment(ns, deployment_manifest(name, replicas=1, cpu="1", memory="128Mi"))
            body = policy_manifest(name, name, spec)
            body["metadata"]["labels"] = {"budget": "shop"}
            create_policy(admin_api, ns, body)
        budget = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CapacityBudget",
            "metadata": {"name": "shop"},
            "spec": {"policySelector": {"matchLabels": {"budget": "shop"}}, "cpuMillicores": 6000},
        }
        custom(admin_api).create_namespaced_custom_object(GROUP, VERSION, ns, BUDGETS, budget)
        op = OperatorProcess(kubeconfig, tmp_path, namespaces=(ns,), prometheus_url=f"http://127.0.0.1:{free_port()}")
        try:
            op.start()
            seen = _watch(admin_api, ns, 4 * INTERVAL, until=lambda a, b: a == 3 and b == 3)
            seen += _watch(admin_api, ns, INTERVAL + 1)  # and they stay there
            log = op.log_text()[-3000:]
            assert all(a + b <= 6 for a, b in seen), f"past the budget: {max(seen, key=sum)}\n{log}"
            assert seen[-1] == (3, 3), f"{seen[-5:]}\n{log}"

            status = _budget(admin_api, ns).get("status") or {}
            assert status.get("cpuMillicores") == 6000 and status.get("usedMillicores") == 6000, status
            members = {m["policy"]: m for m in status["members"]}
            assert set(members) == {"a", "b"}
            for m in members.values():
                # After the first round each member's mask holds what it could be granted, so it proposes no more.
                assert m["cpuMillicores"] == 3000 and m["replicas"] == 3, m
            for name in ("a", "b"):
                reasons = {e.reason for e in events_of(admin_api, ns, name)}
                assert "BudgetRefused" in reasons, reasons
                explanation = get_policy(admin_api, ns, name)["status"]["lastDecision"]["explanation"]
                assert "CapacityBudget shop" in explanation, explanation

            # Raise the budget: the same policies now reach what they asked for.
            custom(admin_api).patch_namespaced_custom_object(
                GROUP, VERSION, ns, BUDGETS, "shop", {"spec": {"cpuMillicores": 12000}}
            )
            raised = _watch(admin_api, ns, 3 * INTERVAL, until=lambda a, b: a == 6 and b == 6)
            assert raised[-1] == (6, 6), f"{raised[-5:]}\n{op.log_text()[-3000:]}"
        finally:
            op.stop()
            cleanup_policies(admin_api, ns)
