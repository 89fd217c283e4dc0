"""The chart's namespaced RBAC (``watchNamespaces``) is sufficient and minimal, proven on the audit log.

test_scaling_e2e.py proves the default, cluster-wide install. Here the chart is installed
the multi-tenant way — a Role in each watched namespace and a small ClusterRole for the
cluster-scoped reads — and the operator runs with ``--namespace``. One short closed-loop
run makes it use every kind of call (scale, limit patch, status, Kopf's annotations,
model ConfigMap, Prometheus-token Secret, Events, HPA and CRD watches); the API server's
audit log (every request of the chart's ServiceAccount at Metadata level) then says what
it really did, which the test compares with what the live RBAC objects grant.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import Permission, rbac_diff
from scenario import ScalingRun, run_scenario

from rlscale.devstack.cluster import LocalCluster

pytestmark = pytest.mark.e2e

#: Grants of the namespaced install that a run with plain (non-glob) namespace names does not use.
DOCUMENTED_UNUSED: dict[Permission, str] = {
    # Only for policies a CapacityBudget selects (none here); tests/e2e/test_budget_e2e.py makes these calls.
    ("patch", "rlscale.io", "capacitybudgets", "status"): "a budget's status: no CapacityBudget in this run",
    ("get", "", "resourcequotas", ""): "a budget read from a ResourceQuota: no CapacityBudget in this run",
}


@pytest.fixture(scope="module")
def run(
    local_cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ScalingRun]:
    result = run_scenario(
        local_cluster,
        admin_api,
        helm_binary,
        tmp_path_factory.mktemp("rbac"),
        chart_values={},
        watch_own_namespace=True,
        load=[150.0] * 400,
        speed=10.0,
        until="up",
        timeout_s=120,
    )
    print(f"\nnamespaced RBAC scenario: {result.outcome} in {result.wall_s:.0f}s")
    yield result


def test_the_run_exercised_the_operator(run: ScalingRun) -> None:
    assert run.outcome.startswith("reached"), run.diagnostics()
    assert {"Scaled", "LimitsChanged"} <= {e.reason for e in run.events}


def test_namespaced_install_grants_namespaced_rules_only_in_the_watched_namespace(run: ScalingRun) -> None:
    namespaced = {ns for ns in run.granted if ns != "cluster"}
    assert namespaced == {run.namespace}, sorted(run.granted)
    cluster_resources = {(g, r) for _, g, r, _ in run.granted["cluster"]}
    assert cluster_resources <= {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def test_namespaced_rbac_is_sufficient(run: ScalingRun) -> None:
    assert run.audit.events > 0
    assert not run.audit.denied, [(e["verb"], e.get("requestURI")) for e in run.audit.denied]
    assert "403" not in run.operator_log and "Forbidden" not in run.operator_log
    missing, _ = rbac_diff(run.granted, run.audit)
    assert not missing, missing
    # Every namespaced request stayed in the watched namespace.
    namespaces = set().union(*run.audit.used.values())
    assert namespaces <= {run.namespace, ""}, namespaces


def test_namespaced_rbac_is_minimal(run: ScalingRun) -> None:
    _, unused = rbac_diff(run.granted, run.audit)
    print("\nused:", sorted(run.audit.used), "\nunused:", sorted(unused))
    undocumented = unused - set(DOCUMENTED_UNUSED)
    assert not undocumented, f"granted but never used: {sorted(undocumented)}"
