"""The closed-loop scaling scenario shared by the scaling and RBAC e2e modules.

One run: the chart installed as admin, the operator running under the chart's
ServiceAccount token, a Deployment with fake pods, the twin exporter simulating its
service under a load trace, a real Prometheus scraping the twin, and an AutoscalePolicy
whose (ConfigMap) model and Prometheus credentials (Secret) make the operator use every
kind of call its RBAC grants. The run records what happened for the tests to judge.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from e2e_helpers import (
    CONTAINER,
    AuditSummary,
    Installed,
    Permission,
    audit_summary,
    cleanup_policies,
    create_policy,
    decisions,
    deployment_manifest,
    deployment_state,
    dump_on_failure,
    events_of,
    get_policy,
    granted_permissions,
    installed_chart,
    policy_manifest,
    threshold_policy_onnx,
)
from kubernetes import client

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.twin import TwinExporter, TwinSample, TwinTarget
from rlscale.training.sim_config import SimConfig

POLICY = "web"
DEPLOYMENT = "web"
PROM_TOKEN = "not-checked-by-this-prometheus"


@dataclass
class ScalingRun:
    """Everything the scaling scenario observed."""

    namespace: str
    installed: Installed
    history: list[dict[str, Any]] = field(default_factory=list)  # deployment state over time
    decision_log: list[dict[str, Any]] = field(default_factory=list)  # status.lastDecision, each new one
    policy: dict[str, Any] = field(default_factory=dict)
    events: list[client.CoreV1Event] = field(default_factory=list)
    metrics_text: str = ""
    operator_log: str = ""
    twin: list[TwinSample] = field(default_factory=list)
    audit: AuditSummary = field(default_factory=AuditSummary)
    granted: dict[str, set[Permission]] = field(default_factory=dict)
    outcome: str = ""
    wall_s: float = 0.0

    def diagnostics(self) -> str:
        lines = [f"outcome: {self.outcome}", "deployment history (t, replicas, cpu):"]
        lines += [
            f"  {h['t']:.0f}s {h['replicas']} {h['cpu']}" for h in self.history[:: max(1, len(self.history) // 40)]
        ]
        lines += [f"  #{d['number']} {d['source']} {d['action']} → {d['replicas']}" for d in self.decision_log]
        return "\n".join(lines) + "\n" + dump_on_failure(self.installed)


def scaling_spec(prom_url: str, mode: str = "full") -> dict[str, Any]:
    """The scenario's policy: short interval and cooldowns so a whole up-and-down fits in minutes."""
    return {
        "intervalSeconds": 5,
        "limits": {
            "minReplicas": 1,
            "maxReplicas": 8,
            "maxScaleUpPods": 4,
            "maxScaleDownPods": 1,
            "scaleDownCooldownSeconds": 10,
            "limitChangeCooldownSeconds": 10,
            "cpuLimitMinMillicores": 250,
            "cpuLimitMaxMillicores": 1000,
            "cpuLimitStepMillicores": 250,
            "memoryLimitMinMiB": 512,
            "memoryLimitMaxMiB": 2048,
            "memoryLimitStepMiB": 256,
        },
        "objective": {"latencySloMs": 500},
        "baseline": {"kind": "hpa", "hpa": {"targetUtilization": 0.6, "scaleDownStabilizationSeconds": 10}},
        "rollout": {"mode": mode},
        "model": {"source": "configMap", "configMapRef": {"name": "e2e-model", "key": "model.onnx"}},
        "prometheus": {
            "url": prom_url,
            "window": "10s",
            "auth": {"bearerTokenSecretRef": {"name": "prom-token", "key": "token"}},
        },
    }


def service() -> SimConfig:
    """The simulated service: 10 ms of CPU per request, trace values in requests/s."""
    return SimConfig(absolute_rps_per_unit=1.0, initial_cpu_limit_m=500, initial_memory_limit_mib=1024)


def create_workload(api: client.ApiClient, namespace: str, replicas: int = 1) -> None:
    """The Deployment, the model ConfigMap and the Prometheus-token Secret."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="e2e-model"),
            binary_data={"model.onnx": base64.b64encode(threshold_policy_onnx()).decode()},
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="prom-token"), string_data={"token": PROM_TOKEN}),
    )
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, deployment_manifest(DEPLOYMENT, replicas=replicas, cpu="500m", memory="1Gi")
    )


def twin_prometheus(work_dir: Path, twin: TwinExporter) -> LocalPrometheus:
    """A Prometheus scraping the twin every second, keeping the twin's namespace/pod labels."""
    return LocalPrometheus(
        work_dir,
        scrape_configs=[{"job_name": "twin", "honor_labels": True, "static_configs": [{"targets": [twin.address]}]}],
    ).start()


def run_scenario(
    cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm: Path,
    work_dir: Path,
    *,
    chart_values: Mapping[str, Any],
    watch_own_namespace: bool,
    load: list[float],
    speed: float,
    until: str,
    timeout_s: float,
) -> ScalingRun:
    """Run the closed loop until ``until`` ("up": a scale-up with a limit change; "up-down": and back to 1)."""
    t0 = time.monotonic()
    namespace = f"e2e-scale-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    values = dict(chart_values)
    if watch_own_namespace:
        values["watchNamespaces"] = [namespace]
    with installed_chart(cluster, admin_api, helm, work_dir, values) as inst:
        run = ScalingRun(namespace, inst)
        create_workload(admin_api, namespace)
        twin = TwinExporter(
            admin_api, TwinTarget(namespace, DEPLOYMENT, CONTAINER), np.array(load), service=service(), speed=speed
        )
        prom: LocalPrometheus | None = None
        try:
            _wait_pods(admin_api, namespace, 1)
            twin.start()
            prom = twin_prometheus(work_dir / f"prometheus-{namespace}", twin)
            prom.wait_for_value(f'sum(rate(http_requests_total{{namespace="{namespace}"}}[10s]))', timeout=60)
            operator = inst.operator(
                namespaces=(namespace,) if watch_own_namespace else (),
                prometheus_url=prom.url,
                env={"RLSCALE_START_SPREAD": "0"},
            ).start()
            create_policy(admin_api, namespace, policy_manifest(POLICY, DEPLOYMENT, scaling_spec(prom.url)))
            run.outcome = _observe(run, admin_api, until, timeout_s, t0)
            run.policy = get_policy(admin_api, namespace, POLICY)
            run.events = events_of(admin_api, namespace, POLICY)
            run.metrics_text = operator.metrics_text()
        finally:
            run.twin = twin.samples()
            twin.stop()
            for proc in inst.operators:
                proc.stop()
            run.operator_log = "\n".join(p.log_text() for p in inst.operators)
            if prom is not None:
                prom.stop()
            cleanup_policies(admin_api, namespace)
        run.audit = audit_summary(cluster, inst.release.username)
        run.granted = granted_permissions(admin_api, inst.release)
    run.wall_s = time.monotonic() - t0
    return run


def _wait_pods(api: client.ApiClient, namespace: str, n: int, timeout: float = 60) -> None:
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={DEPLOYMENT}").items
        if sum(1 for p in pods if p.status and p.status.phase == "Running") >= n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{n} pod(s) of {namespace}/{DEPLOYMENT} not Running after {timeout:.0f}s")


def _observe(run: ScalingRun, api: client.ApiClient, until: str, timeout_s: float, t0: float) -> str:
    """Poll the Deployment and the policy until the scenario's goal is reached (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    last_number = 0
    peak = 1
    while time.monotonic() < deadline:
        state = deployment_state(api, run.namespace, DEPLOYMENT)
        state["t"] = time.monotonic() - t0
        run.history.append(state)
        policy = get_policy(api, run.namespace, POLICY)
        last = (policy.get("status") or {}).get("lastDecision") or {}
        if last and int(last.get("number", 0)) > last_number and decisions(policy) >= int(last["number"]):
            last_number = int(last["number"])
            run.decision_log.append(dict(last))
        peak = max(peak, int(state["replicas"]))
        cpus = {h["cpu"] for h in run.history}
        scaled_up, limits_changed = peak > 1, len(cpus) > 1
        if until == "up" and scaled_up and limits_changed:
            return "reached: scaled up with a limit change"
        if until == "up-down" and scaled_up and limits_changed and int(state["replicas"]) == 1 and peak >= 3:
            return f"reached: up to {peak} and back to 1"
        time.sleep(0.5)
    return f"timed out after {timeout_s:.0f}s (peak {peak})"
