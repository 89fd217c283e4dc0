"""The closed-loop scaling scenario shared by the scaling and RBAC e2e modules.

One run: the chart installed as admin, the operator running under the chart's
ServiceAccount token, a Deployment with fake pods, the twin exporter simulating its
service under a load trace, a real Prometheus scraping the twin, and an AutoscalePolicy
whose (ConfigMap) model and Prometheus credentials (Secret) make the operator use every
kind of call its RBAC grants. The run records what happened for the tests to judge.
"""

from __future__ import annotations

import base64
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
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
    metric_sum,
    parse_metrics,
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
    settled: str = ""
    wall_s: float = 0.0

    def diagnostics(self) -> str:
        lines = [f"outcome: {self.outcome}", f"final picture: {self.settled}", "deployment history (t, replicas, cpu):"]
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
            _settle(run, admin_api, operator.metrics_text, t0)
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


def _settle(
    run: ScalingRun, api: client.ApiClient, metrics_text: Callable[[], str], t0: float, timeout: float = 60.0
) -> None:
    """Take the run's final picture (policy, Deployment, Events, the operator's /metrics) once its parts agree.

    The operator is still running when the goal is reached, and its work on one decision is
    not one atomic write: it counts the decision in /metrics before writing the status,
    writes the change's intent (``pending``, ``applied: false``) before patching the
    Deployment and the outcome after, and Kopf posts the Events in the background after the
    status patch. Read once right after the goal, the picture can catch any of that half
    done (a missing Event, a counter one ahead of the status). So everything is read between
    two reads of the policy, and the picture is kept when no decision completed in between,
    none is half written (no pending change, ``lastDecision`` is the latest decision),
    /metrics counted exactly the decisions the status reports, and every change in the
    Deployment's history has its ``Scaled``/``LimitsChanged`` Event. If that does not happen
    within ``timeout`` the last picture is kept anyway, ``settled`` says what was missing,
    and the tests fail on it with their own messages.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = get_policy(api, run.namespace, POLICY)
        state = deployment_state(api, run.namespace, DEPLOYMENT)
        state["t"] = time.monotonic() - t0
        events = events_of(api, run.namespace, POLICY)
        unreadable: list[str] = []
        try:
            text = metrics_text()
        except OSError as exc:  # a busy machine can time a scrape out; the next round retries
            text, unreadable = "", [f"/metrics unreadable: {exc}"]
        policy = get_policy(api, run.namespace, POLICY)
        missing = unreadable + _unsettled(before, policy, [*run.history, state], events, text)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    run.history.append(state)
    last = (policy.get("status") or {}).get("lastDecision") or {}
    logged = int(run.decision_log[-1]["number"]) if run.decision_log else 0
    if last and int(last.get("number", 0)) > logged and decisions(policy) >= int(last["number"]):
        run.decision_log.append(dict(last))
    run.policy, run.events, run.metrics_text = policy, events, text
    run.settled = "consistent" if not missing else f"not consistent after {timeout:.0f}s: {'; '.join(missing)}"


def _unsettled(
    before: Mapping[str, Any],
    policy: Mapping[str, Any],
    history: list[dict[str, Any]],
    events: list[client.CoreV1Event],
    metrics_text: str,
) -> list[str]:
    """What keeps this picture from being a consistent one (nothing: it is)."""
    out: list[str] = []
    n = decisions(policy)
    status = policy.get("status") or {}
    if decisions(before) != n:
        out.append(f"decision {decisions(before)} → {n} completed while reading")
    if status.get("pending") is not None:
        out.append(f"a change is pending: {status['pending']}")
    last = status.get("lastDecision") or {}
    if int(last.get("number", -1)) != n:
        out.append(f"lastDecision is #{last.get('number')}, the counter says {n}")
    counted = metric_sum(parse_metrics(metrics_text), "rlscale_decisions_total")
    if counted != n:
        out.append(f"/metrics counted {counted:.0f} decisions, the status {n}")
    announced = {
        reason: sum(int(e.count or 1) for e in events if e.reason == reason) for reason in ("Scaled", "LimitsChanged")
    }
    steps = list(itertools.pairwise(history))
    moves = {
        "Scaled": sum(1 for a, b in steps if a["replicas"] != b["replicas"]),
        "LimitsChanged": sum(1 for a, b in steps if (a["cpu"], a["memory"]) != (b["cpu"], b["memory"])),
    }
    for reason, seen in moves.items():
        if announced[reason] < seen:
            out.append(f"{announced[reason]} {reason} Event(s) for {seen} change(s) seen in the Deployment")
    return out
