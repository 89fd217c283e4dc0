"""Building blocks of the operator e2e tests: install, run, observe, and read the audit log.

Test modules import this by name (``sys.path`` gets this folder, as tests/install does).
Everything here talks to the real API server, the real Prometheus and the real ``helm``;
the only stand-ins are what a cluster without a kubelet cannot have: pods (kwok) and the
workload's metrics (the twin exporter, :mod:`rlscale.devstack.twin`).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from onnx import TensorProto, helper, numpy_helper

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.manifests import guaranteed_deployment
from rlscale.devstack.operator_stack import ChartRelease, OperatorProcess, helm_install, service_account_kubeconfig
from rlscale.operator.kube import merge_patch
from rlscale.policy.actions import ACTION_BY_NAME, N_ACTIONS
from rlscale.policy.model import INPUT_NAME, OUTPUT_NAME, model_metadata
from rlscale.policy.spec import FEATURE_NAMES, N_FEATURES

GROUP, VERSION, PLURAL = "rlscale.io", "v1alpha1", "autoscalepolicies"
CONTAINER = "app"


# --- waiting ------------------------------------------------------------------------------------------------------


def eventually(
    pred: Callable[[], Any],
    *,
    timeout: float = 60.0,
    what: str = "condition",
    state: Callable[[], object] | None = None,
    interval: float = 0.5,
) -> Any:
    """Poll ``pred`` until it returns something truthy (returned); on timeout fail showing ``state()``."""
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() >= deadline:
            seen = f"; last state: {state()!r}" if state is not None else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{seen}")
        time.sleep(interval)


# --- the test model -----------------------------------------------------------------------------------------------


def threshold_policy_onnx(up_at: float = 0.8, down_at: float = 0.3, steepness: float = 10.0) -> bytes:
    """A linear ONNX policy with this spec's contract whose choices are predictable from CPU utilisation.

    The e2e tier proves plumbing (ONNX → mask → gate → API), not model quality, so its
    model must behave knowably: above ``up_at`` it doubles the replicas and raises the CPU
    limit one step (falling back to doubling alone when the limit is masked), below
    ``down_at`` it removes a pod and lowers the CPU limit (falling back to removing a pod),
    otherwise it holds. Every other action has a logit of -100. With unknown metrics the
    utilisation feature is 0, which prefers a scale-down that the mask forbids, so it holds.
    """
    u = FEATURE_NAMES.index("cpu_utilization")
    w = np.zeros((N_FEATURES, N_ACTIONS), dtype=np.float32)
    b = np.full(N_ACTIONS, -100.0, dtype=np.float32)
    b[0] = 0.0  # noop
    for name, sign, at, bonus in (
        ("replicas+100%,cpu+1", 1.0, up_at, 0.0),
        ("replicas+100%", 1.0, up_at, -0.1),
        ("replicas-1,cpu-1", -1.0, down_at, 0.0),
        ("replicas-1", -1.0, down_at, -0.1),
    ):
        i = ACTION_BY_NAME[name].index
        w[u, i] = sign * steepness
        b[i] = -sign * steepness * at + bonus
    graph = helper.make_graph(
        [helper.make_node("Gemm", [INPUT_NAME, "w", "b"], [OUTPUT_NAME])],
        "rlscale_e2e_threshold_policy",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", N_ACTIONS])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, model_metadata({"kind": "e2e-threshold", "up_at": up_at, "down_at": down_at}))
    onnx.checker.check_model(model)
    return model.SerializeToString()


# --- manifests ----------------------------------------------------------------------------------------------------


def deployment_manifest(name: str, *, replicas: int, cpu: str, memory: str) -> dict[str, Any]:
    """A Deployment with one Guaranteed container (requests = limits); kwok runs its pods."""
    return guaranteed_deployment(
        name,
        replicas=replicas,
        cpu=cpu,
        memory=memory,
        container=CONTAINER,
        image="registry.k8s.io/pause:3.10",
        labels={"app": name},
    )


def policy_manifest(name: str, target: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An AutoscalePolicy for ``target`` (container ``app``), ``spec`` merged over a minimal valid one."""
    base: dict[str, Any] = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}}
    base["containers"] = [CONTAINER]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AutoscalePolicy",
        "metadata": {"name": name},
        "spec": merge_patch(base, spec or {}),
    }


# --- reading the cluster ------------------------------------------------------------------------------------------


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def get_policy(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return obj


def create_policy(api: client.ApiClient, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(body))
    return obj


def condition(policy: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (policy.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def decisions(policy: Mapping[str, Any]) -> int:
    return int(((policy.get("status") or {}).get("controllerState") or {}).get("decisions", 0))


def deployment_state(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Replicas, the container's limits, generation and resourceVersion."""
    dep = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    res = dep.spec.template.spec.containers[0].resources
    return {
        "replicas": dep.spec.replicas,
        "cpu": (res.limits or {}).get("cpu"),
        "memory": (res.limits or {}).get("memory"),
        "generation": dep.metadata.generation,
        "resourceVersion": dep.metadata.resource_version,
    }


def events_of(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    """Events whose involved object is the policy ``name``."""
    items = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [e for e in items if e.involved_object is not None and e.involved_object.name == name]


def event_summary(events: list[client.CoreV1Event]) -> list[tuple[str, str, str]]:
    """(type, reason, message) of each Event: what an assertion message shows."""
    return [(e.type, e.reason, e.message) for e in events]


def wait_for_events(
    api: client.ApiClient,
    namespace: str,
    name: str,
    pred: Callable[[list[client.CoreV1Event]], Any],
    *,
    what: str,
    timeout: float = 30.0,
) -> Any:
    """Poll the Events of ``name`` until ``pred(events)`` is truthy (returned); on timeout fail listing them.

    The operator's Events are queued during a reconcile and posted by Kopf in the background,
    so the status patch that reports the same thing (a condition, an applied decision) can be
    visible before the Event exists. Read Events through this, never once right after a status.
    """
    return eventually(
        lambda: pred(events_of(api, namespace, name)),
        timeout=timeout,
        what=what,
        state=lambda: event_summary(events_of(api, namespace, name)),
    )


def cleanup_policies(api: client.ApiClient, namespace: str) -> None:
    """Delete the namespace's policies, dropping Kopf's finalizer first (their operator is gone)."""
    api_ = custom(api)
    with contextlib.suppress(ApiException):
        for item in api_.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
            name = item["metadata"]["name"]
            with contextlib.suppress(ApiException):
                api_.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"finalizers": None}}
                )
                api_.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus text exposition as {(name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    pattern = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = pattern.match(line)
        if not m:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(metrics: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


# --- RBAC: what the chart grants vs what the audit log shows ------------------------------------------------------

#: (verb, apiGroup, resource, subresource)
Permission = tuple[str, str, str, str]


def _expand(rules: list[Any] | None) -> set[Permission]:
    out: set[Permission] = set()
    for rule in rules or []:
        for group in rule.api_groups or [""]:
            for res in rule.resources or []:
                resource, _, sub = res.partition("/")
                for verb in rule.verbs or []:
                    out.add((verb, group, resource, sub))
    return out


def granted_permissions(api: client.ApiClient, release: ChartRelease) -> dict[str, set[Permission]]:
    """What the release's ServiceAccount may do: ``{"cluster": …, "<namespace>": …}`` from live RBAC objects."""
    rbac = client.RbacAuthorizationV1Api(api)

    def bound(subjects: list[Any] | None) -> bool:
        return any(
            s.kind == "ServiceAccount" and s.name == release.service_account and s.namespace == release.namespace
            for s in subjects or []
        )

    out: dict[str, set[Permission]] = {"cluster": set()}
    for crb in rbac.list_cluster_role_binding().items:
        if bound(crb.subjects):
            out["cluster"] |= _expand(rbac.read_cluster_role(crb.role_ref.name).rules)
    for rb in rbac.list_role_binding_for_all_namespaces().items:
        if bound(rb.subjects):
            ns = rb.metadata.namespace
            if rb.role_ref.kind == "Role":
                rules = rbac.read_namespaced_role(rb.role_ref.name, ns).rules
            else:
                rules = rbac.read_cluster_role(rb.role_ref.name).rules
            out.setdefault(ns, set()).update(_expand(rules))
    return out


@dataclass
class AuditSummary:
    """One ServiceAccount's requests, from the API server's audit log."""

    used: dict[Permission, set[str]] = field(default_factory=dict)  # permission → namespaces ("" = cluster)
    non_resource: set[tuple[str, str]] = field(default_factory=set)  # (verb, path)
    denied: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0


def audit_summary(cluster: LocalCluster, username: str) -> AuditSummary:
    """Group the user's audited requests by permission; collect every 403."""
    out = AuditSummary()
    for ev in cluster.audit_events(user=username):
        out.events += 1
        code = int((ev.get("responseStatus") or {}).get("code") or 0)
        if code == 403:
            out.denied.append(ev)
        ref = ev.get("objectRef")
        if not ref:
            out.non_resource.add((ev.get("verb", ""), ev.get("requestURI", "").split("?")[0]))
            continue
        perm = (ev["verb"], ref.get("apiGroup", ""), ref.get("resource", ""), ref.get("subresource", ""))
        out.used.setdefault(perm, set()).add(ref.get("namespace", ""))
    return out


def rbac_diff(granted: Mapping[str, set[Permission]], audit: AuditSummary) -> tuple[set[Permission], set[Permission]]:
    """(used but not granted in the scope it was used, granted but never used)."""
    all_granted = set().union(*granted.values())
    missing: set[Permission] = set()
    for perm, namespaces in audit.used.items():
        for ns in namespaces:
            if perm not in granted.get("cluster", set()) and perm not in granted.get(ns, set()):
                missing.add(perm)
    unused = all_granted - set(audit.used)
    return missing, unused


# --- one operator installation per test ---------------------------------------------------------------------------


@dataclass
class Installed:
    """The chart installed for one test, and what is needed to run its operator."""

    release: ChartRelease
    kubeconfig: Path
    work_dir: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    def operator(
        self, *, namespaces: tuple[str, ...] = (), prometheus_url: str | None = None, **kw: Any
    ) -> OperatorProcess:
        proc = OperatorProcess(
            self.kubeconfig,
            self.work_dir,
            namespaces=namespaces,
            prometheus_url=prometheus_url,
            name=f"operator-{len(self.operators)}",
            **kw,
        )
        self.operators.append(proc)
        return proc


@contextlib.contextmanager
def installed_chart(
    cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm: Path,
    work_dir: Path,
    values: Mapping[str, Any],
) -> Iterator[Installed]:
    """Install the chart as admin into a fresh ``rlscale-<id>`` namespace; stop its operators afterwards."""
    suffix = uuid.uuid4().hex[:6]
    release_name = f"rlscale-{suffix}"
    release = helm_install(helm, cluster.kubeconfig, release_name, release_name, values, work_dir)
    kubeconfig = service_account_kubeconfig(
        admin_api,
        cluster.server,
        cluster.ca_file,
        release.namespace,
        release.service_account,
        work_dir / f"{release_name}-sa.kubeconfig",
    )
    inst = Installed(release, kubeconfig, work_dir)
    try:
        yield inst
    finally:
        for proc in inst.operators:
            proc.stop()


def dump_on_failure(inst: Installed) -> str:
    """The tail of each operator's log (for assertion messages)."""
    return "\n".join(f"--- {p.name} ---\n{p.log_text()[-4000:]}" for p in inst.operators)
