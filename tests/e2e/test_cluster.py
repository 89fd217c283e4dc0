"""Smoke tests of the local stack itself: if these fail, no other e2e result means anything.

Each test asserts an observable effect that a broken or faked stack would not produce
(a real version string, pods that kwok turned Running, a 403 from real RBAC, an audit
record, a PromQL answer from a real scrape).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from rlscale.devstack.cluster import ClusterStartError, LocalCluster
from rlscale.devstack.procs import free_port
from rlscale.devstack.prometheus import LocalPrometheus

pytestmark = pytest.mark.e2e


def eventually(
    pred: Callable[[], bool],
    *,
    timeout: float = 60.0,
    what: str = "condition",
    state: Callable[[], object] | None = None,
) -> None:
    """Poll ``pred`` until true; on timeout fail showing ``state()`` (what was seen instead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    seen = f"; state: {state()!r}" if state is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{seen}")


def make_deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app",
                            image="registry.k8s.io/pause:3.10",  # never pulled: kwok fakes the kubelet
                            resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
                        )
                    ]
                ),
            ),
        ),
    )


def running_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    """Pods of ``app`` that are Running, Ready and not being deleted."""
    out = []
    for pod in all_pods(core, namespace, app):
        if pod.status is None or pod.metadata is None:
            continue
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if pod.status.phase == "Running" and ready and pod.metadata.deletion_timestamp is None:
            out.append(pod)
    return out


def all_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def sa_client(cluster: LocalCluster, admin_api: client.ApiClient, namespace: str, sa: str) -> client.ApiClient:
    """An ApiClient authenticated with a fresh TokenRequest token of ServiceAccount ``sa``."""
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa)))
    status = core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status
    assert status is not None and status.token
    token = status.token
    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def test_server_version_is_1_33(admin_api: client.ApiClient) -> None:
    info = client.VersionApi(admin_api).get_code()
    assert info.git_version.startswith("v1.33."), info
    assert (info.major, info.minor) == ("1", "33")
    assert info.git_tree_state == "clean"


def test_nodes_are_fake_ready_and_schedulable(admin_api: client.ApiClient, local_cluster: LocalCluster) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(admin_api).list_node().items if n.metadata is not None}
    assert set(local_cluster.node_names()) <= set(nodes)
    for name in local_cluster.node_names():
        node = nodes[name]
        assert node.metadata is not None and node.spec is not None and node.status is not None
        assert (node.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        assert not node.spec.taints, node.spec.taints
        assert (node.status.allocatable or {}).get("pods") == "110"


def test_deployment_pods_become_running(admin_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    apps.create_namespaced_deployment(namespace, make_deployment("web", 3))
    eventually(
        lambda: len(running_pods(core, namespace, "web")) == 3,
        what="3 Running pods",
        state=lambda: [
            (p.metadata and p.metadata.name, p.status and p.status.phase) for p in all_pods(core, namespace, "web")
        ],
    )
    for pod in running_pods(core, namespace, "web"):
        assert pod.spec is not None and pod.status is not None
        assert (pod.spec.node_name or "").startswith("kwok-node-"), pod.spec.node_name
        assert pod.status.pod_ip, pod.status

    def ready_replicas() -> int | None:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return status.ready_replicas if status is not None else None

    eventually(lambda: ready_replicas() == 3, what="deployment status readyReplicas=3", state=ready_replicas)
    status = apps.read_namespaced_deployment_status("web", namespace).status
    assert status is not None and status.available_replicas == 3


def test_scale_subresource_changes_pods(admin_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    apps.create_namespaced_deployment(namespace, make_deployment("scaled", 1))
    eventually(lambda: len(running_pods(core, namespace, "scaled")) == 1, what="1 Running pod")

    apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 4}})
    spec = apps.read_namespaced_deployment_scale("scaled", namespace).spec
    assert spec is not None and spec.replicas == 4
    eventually(lambda: len(running_pods(core, namespace, "scaled")) == 4, what="4 Running pods")

    apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 2}})
    # Scale-down: the ReplicaSet deletes pods and kwok finalises them, so they vanish.
    eventually(lambda: len(all_pods(core, namespace, "scaled")) == 2, what="pods deleted down to 2")
    assert len(running_pods(core, namespace, "scaled")) == 2

    # The controllers update the ReplicaSet's and then the Deployment's status after the pods go.
    def status_replicas() -> int | None:
        status = apps.read_namespaced_deployment_scale("scaled", namespace).status
        return status.replicas if status is not None else None

    eventually(lambda: status_replicas() == 2, what="scale status.replicas=2", state=status_replicas)
    scale = apps.read_namespaced_deployment_scale("scaled", namespace)
    assert scale.spec is not None and scale.status is not None
    assert (scale.spec.replicas, scale.status.replicas) == (2, 2)


def test_rbac_denies_fresh_service_account(
    local_cluster: LocalCluster, admin_api: client.ApiClient, namespace: str
) -> None:
    sa_api = sa_client(local_cluster, admin_api, namespace, "nobody")
    try:
        with pytest.raises(ApiException) as denied:
            client.AppsV1Api(sa_api).list_namespaced_deployment(namespace)
        assert denied.value.status == 403, denied.value  # authenticated (not 401), not authorised

        # Control: the same token works once RBAC allows it, so the 403 was RBAC's doing.
        rbac = client.RbacAuthorizationV1Api(admin_api)
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="list-deployments"),
                rules=[client.V1PolicyRule(api_groups=["apps"], resources=["deployments"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="list-deployments"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="list-deployments"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
            ),
        )

        def allowed() -> bool:
            try:
                client.AppsV1Api(sa_api).list_namespaced_deployment(namespace)
            except ApiException as exc:
                if exc.status != 403:
                    raise
                return False
            return True

        eventually(allowed, timeout=20, what="RBAC to allow the bound ServiceAccount")
    finally:
        sa_api.close()


def test_audit_log_records_service_account_calls(
    local_cluster: LocalCluster, admin_api: client.ApiClient, namespace: str
) -> None:
    user = f"system:serviceaccount:{namespace}:audited"
    sa_api = sa_client(local_cluster, admin_api, namespace, "audited")
    try:
        with pytest.raises(ApiException):
            client.AppsV1Api(sa_api).list_namespaced_deployment(namespace)
        with pytest.raises(ApiException):
            client.CoreV1Api(sa_api).read_namespaced_config_map("missing", namespace)
    finally:
        sa_api.close()

    eventually(lambda: len(local_cluster.audit_events(user)) >= 2, what=f"audit events of {user}")
    events = local_cluster.audit_events(user)
    seen = {
        (e["verb"], e["objectRef"].get("apiGroup", ""), e["objectRef"]["resource"], e["responseStatus"]["code"])
        for e in events
        if e["stage"] == "ResponseComplete"
    }
    assert ("list", "apps", "deployments", 403) in seen, seen
    assert ("get", "", "configmaps", 403) in seen, seen
    # The admin is not a ServiceAccount: the default policy must not record it.
    assert not local_cluster.audit_events("admin")


def test_prometheus_scrapes_exporter(local_prometheus: Callable[..., LocalPrometheus]) -> None:
    registry = CollectorRegistry()
    Gauge("rlscale_e2e_probe", "value served by the test exporter", registry=registry).set(42.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = local_prometheus(static_targets=[f"127.0.0.1:{port}"])
        value = prom.wait_for_value('rlscale_e2e_probe{job="static"}', timeout=30)
        assert value == 42.5
        assert prom.wait_for_value('up{job="static"}') == 1.0
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_failed_start_names_component_and_cleans_up(tools_bin: Path, tmp_path: Path) -> None:
    cluster = LocalCluster(tools_bin, tmp_path / "broken", nodes=1, extra_apiserver_args=["--no-such-flag"])
    with pytest.raises(ClusterStartError) as failed:
        cluster.start()
    assert failed.value.component == "kube-apiserver"
    assert "unknown flag: --no-such-flag" in str(failed.value)  # the log tail is in the message
    assert cluster.processes["etcd"].returncode() is not None  # what had started was stopped
    cluster.stop()  # a second stop is harmless
