"""The operator scales a Deployment up and back down through the real API server, in a closed loop.

Load rises, the twin exporter (the simulator's service model, reading the Deployment's
live replicas and limits) reports saturation to a real Prometheus, the operator (the
chart's ServiceAccount, its own process) reads it, decides with an ONNX policy from a
ConfigMap, patches replicas and limits; the twin sees the new shape, utilisation falls;
load falls, the operator scales back down. The tests then judge the run: the
Deployment's history, the policy's status, Events, the operator's /metrics, and — from
the API server's audit log — whether the chart's default (cluster-wide) RBAC was
sufficient and minimal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import condition, metric_sum, parse_metrics, rbac_diff
from scenario import POLICY, ScalingRun, run_scenario

from rlscale.devstack.cluster import LocalCluster

pytestmark = pytest.mark.e2e

#: requests/s per trace minute: 15 minutes of saturation for one pod, then a long quiet period.
LOAD = [150.0] * 15 + [15.0] * 400
SPEED = 10.0  # simulated seconds per wall second: the busy period lasts 90 s of wall time

#: Grants of the default (cluster-wide) install that one run cannot exercise, with the reason.
DOCUMENTED_UNUSED: dict[tuple[str, str, str, str], str] = {
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
        tmp_path_factory.mktemp("scaling"),
        chart_values={},
        watch_own_namespace=False,
        load=LOAD,
        speed=SPEED,
        until="up-down",
        timeout_s=240,
    )
    print(f"\nscaling scenario: {result.outcome} in {result.wall_s:.0f}s")
    yield result


def test_scales_up_then_back_down(run: ScalingRun) -> None:
    replicas = [int(h["replicas"]) for h in run.history]
    assert run.outcome.startswith("reached"), run.diagnostics()
    peak_at = replicas.index(max(replicas))
    assert max(replicas) >= 3, run.diagnostics()
    assert replicas[0] == 1 and replicas[-1] == 1, run.diagnostics()
    assert min(replicas[peak_at:]) < max(replicas), run.diagnostics()
    # The loop is closed: the twin simulated the replicas the operator set through the API.
    assert max(s.replicas for s in run.twin) == max(replicas)


def test_container_limits_changed(run: ScalingRun) -> None:
    cpus = [h["cpu"] for h in run.history]
    assert len(set(cpus)) > 1, run.diagnostics()
    assert run.history[-1]["generation"] > run.history[0]["generation"]
    assert len({s.cpu_limit_m for s in run.twin}) > 1  # the simulated pods were rolled to the new limit


def test_decisions_came_from_the_onnx_policy_in_the_configmap(run: ScalingRun) -> None:
    assert run.decision_log, run.diagnostics()
    assert {d["source"] for d in run.decision_log} == {"learned"}
    actions = {d["action"] for d in run.decision_log}
    assert any(a.startswith("replicas+100%") for a in actions), actions
    assert any(a.startswith("replicas-1") for a in actions), actions
    model = run.policy["status"]["model"]
    assert model["loaded"] is True and model["source"].startswith("configMap:"), model


def test_status_reports_conditions_decision_and_rollout(run: ScalingRun) -> None:
    status = run.policy["status"]
    for ctype in ("Ready", "MetricsAvailable", "ModelLoaded"):
        c = condition(run.policy, ctype)
        assert c is not None and c["status"] == "True", (ctype, status.get("conditions"))
    assert condition(run.policy, "ScalingActive") is not None
    last = status["lastDecision"]
    assert last["number"] == status["controllerState"]["decisions"] >= len(run.decision_log)
    changed = (last["replicas"], last["cpuLimitMillicores"], last["memoryLimitMiB"]) != (
        last["previousReplicas"],
        last["previousCpuLimitMillicores"],
        last["previousMemoryLimitMiB"],
    )
    assert last["applied"] is changed and last["explanation"].startswith("learned acted")
    assert status["rollout"]["mode"] == "full" and status["rollout"]["ratio"] == 1.0
    assert status["replicas"] == run.history[-1]["replicas"]
    observed = status["observed"]
    assert observed["cpuUtilization"] is not None and observed["latencyP99Ms"] is not None
    # What the operator read from Prometheus is what the twin simulated (same order of magnitude).
    rate = observed["requestRate"]
    recent = [s.load_rps for s in run.twin[-60:]]
    assert min(recent) * 0.5 <= rate <= max(recent) * 1.5, (rate, min(recent), max(recent))


def test_events_announce_each_kind_of_change(run: ScalingRun) -> None:
    reasons = {e.reason for e in run.events}
    assert {"Scaled", "LimitsChanged"} <= reasons, reasons
    scaled = [e.message for e in run.events if e.reason == "Scaled"]
    assert any("replicas 1→2" in m for m in scaled), scaled
    assert all(e.type == "Normal" for e in run.events if e.reason in ("Scaled", "LimitsChanged"))


def test_operator_metrics_count_what_happened(run: ScalingRun) -> None:
    m = parse_metrics(run.metrics_text)
    total = run.policy["status"]["controllerState"]["decisions"]
    assert metric_sum(m, "rlscale_decisions_total") == total
    assert metric_sum(m, "rlscale_decisions_total", source="learned") == total
    replica_changes = len([d for d in run.decision_log if d["replicas"] != d["previousReplicas"]])
    assert metric_sum(m, "rlscale_actions_applied_total", kind="replicas") >= replica_changes >= 2
    assert metric_sum(m, "rlscale_actions_applied_total", kind="limits") >= 1
    assert metric_sum(m, "rlscale_rollout_ratio", namespace=run.namespace, policy=POLICY) == 1.0
    assert metric_sum(m, "rlscale_policies") == 1
    assert metric_sum(m, "rlscale_prometheus_query_seconds_count") > 0


def test_chart_rbac_is_sufficient(run: ScalingRun) -> None:
    """No request of the operator was denied: not in the audit log, not in its own log."""
    assert run.audit.events > 0, "the audit log recorded nothing for the operator's ServiceAccount"
    denied = [(e["verb"], e.get("requestURI")) for e in run.audit.denied]
    assert not denied, denied
    assert "403" not in run.operator_log and "Forbidden" not in run.operator_log
    missing, _ = rbac_diff(run.granted, run.audit)
    assert not missing, missing


def test_chart_rbac_is_minimal(run: ScalingRun) -> None:
    """Every grant of the cluster-wide ClusterRole was used (or is documented as unused, with the reason)."""
    _, unused = rbac_diff(run.granted, run.audit)
    undocumented = unused - set(DOCUMENTED_UNUSED)
    print("\nused:", sorted(run.audit.used), "\nnon-resource:", sorted(run.audit.non_resource))
    assert not undocumented, f"granted but never used: {sorted(undocumented)}"
