"""Install on a real API server (the local control plane from tools/, kwok nodes): what kind would do, minus Docker.

* the chart's CRDs are accepted by kube-apiserver (structural schema, CEL rules, defaults);
* ``helm install --wait`` and the plain manifests bring the operator Deployment up in a
  namespace that *enforces* the restricted Pod Security Standard (so the pod really is admitted);
* the ServiceAccount can make every call operator/rbac.py lists, where the mode needs it,
  and is refused others (SubjectAccessReview, the API server's own authorizer);
* the demo workload, load generator and Prometheus manifests are admitted the same way;
* the example policy is accepted by the CRD's validation, and a broken one refused.

kwok marks pods Running/Ready without running their containers, so nothing here needs the
images. Skipped only with RLSCALE_SKIP_E2E=1; a missing tool is an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from install_helpers import CHART, DEPLOY, load_docs
from kubernetes import client, config

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.tools import locate_tools_bin
from rlscale.operator import rbac

pytestmark = pytest.mark.e2e

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if os.environ.get("RLSCALE_SKIP_E2E") == "1":
        pytest.skip("RLSCALE_SKIP_E2E=1: end-to-end tier disabled")
    bin_dir = locate_tools_bin(("etcd", "k8s", "kwok", "helm"))
    with LocalCluster(bin_dir, tmp_path_factory.mktemp("install-cluster"), nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


def _runner(cluster: LocalCluster, tool: str) -> Run:
    binary = cluster.bin_dir / tool
    flag = "--kubeconfig"

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(binary), flag, str(cluster.kubeconfig), *args], capture_output=True, text=True, input=stdin
        )
        if check:
            assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    return run


@pytest.fixture(scope="module")
def kubectl(cluster: LocalCluster) -> Run:
    return _runner(cluster, "kubectl")


@pytest.fixture(scope="module")
def helm(cluster: LocalCluster) -> Run:
    return _runner(cluster, "helm")


@pytest.fixture(scope="module")
def peering_crds(kubectl: Run) -> None:
    kubectl("apply", "-f", str(CHART / "crds" / "kopf-peering.yaml"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")


def _can(api: client.ApiClient, sa: tuple[str, str], verb: str, group: str, resource: str, **kw: str) -> bool:
    """The API server's answer: may this ServiceAccount do this?"""
    ns, name = sa
    resource, _, sub = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{ns}:{name}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                group=group, resource=resource, subresource=sub or None, verb=verb, **kw
            ),
        )
    )
    result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(result.status.allowed)


def _operator_calls(*, namespaced_only: bool) -> list[tuple[str, str, str]]:
    """The calls a single-replica operator makes (these installs run one; the Lease calls of sharded replicas
    are granted only with replicaCount > 1, which tests/install/test_chart.py checks on the rendered chart)."""
    cluster_scoped = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
    return [
        (c.group, c.rbac_resource, verb)
        for c in rbac.API_CALLS
        if not c.peering_only and not c.sharding_only and (c.resource not in cluster_scoped) == namespaced_only
        for verb in c.verbs
    ]


#: Calls the operator never makes: each must be refused in every mode.
NEVER: list[tuple[str, str, str]] = [
    ("apps", "deployments", "delete"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "update"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "configmaps", "list"),
    ("", "pods", "get"),
    ("", "pods/exec", "create"),
    ("rlscale.io", "autoscalepolicies", "delete"),
    ("rbac.authorization.k8s.io", "clusterroles", "escalate"),
]


def _wait_available(kubectl: Run, ns: str, deployment: str) -> None:
    kubectl("-n", ns, "rollout", "status", f"deployment/{deployment}", "--timeout=120s")


# --- the CRDs ---------------------------------------------------------------------------------------


def test_chart_crds_are_accepted(kubectl: Run) -> None:
    """kube-apiserver validates the CRD as a whole: schema structure, CEL rules compiled and run on defaults."""
    proc = kubectl("apply", "--server-side", "-f", str(CHART / "crds"), check=False)
    assert proc.returncode == 0, proc.stderr
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/autoscalepolicies.rlscale.io")


def test_example_policy_accepted_and_broken_one_refused(kubectl: Run) -> None:
    crd = kubectl("get", "crd", "autoscalepolicies.rlscale.io", check=False)
    if crd.returncode != 0:
        pytest.fail("the AutoscalePolicy CRD is not installed (see test_chart_crds_are_accepted)")
    kubectl("apply", "-f", str(DEPLOY / "demo" / "demo.yaml"))
    kubectl("apply", "--dry-run=server", "-f", str(DEPLOY / "examples" / "autoscalepolicy.yaml"))
    (policy,) = load_docs(DEPLOY / "examples" / "autoscalepolicy.yaml")
    policy["spec"]["limits"]["minReplicas"] = 20  # above maxReplicas: a CEL rule refuses it
    proc = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(policy), check=False)
    assert proc.returncode != 0
    assert "minReplicas" in proc.stderr


# --- the operator install -----------------------------------------------------------------------------


def test_plain_manifests_install(kubectl: Run, api: client.ApiClient, peering_crds: None) -> None:
    """kubectl apply -f deploy/operator/rlscale.yaml: admitted under 'restricted', all-namespaces RBAC."""
    manifest = str(DEPLOY / "operator" / "rlscale.yaml")
    kubectl("apply", "-f", manifest)
    try:
        _wait_available(kubectl, "rlscale-system", "rlscale")
        sa = ("rlscale-system", "rlscale")
        for group, resource, verb in _operator_calls(namespaced_only=True):
            assert _can(api, sa, verb, group, resource, namespace="any-namespace"), (group, resource, verb)
        for group, resource, verb in _operator_calls(namespaced_only=False):
            if resource == "namespaces":
                assert not _can(api, sa, verb, group, resource), "namespaces are not read when serving all"
            else:
                assert _can(api, sa, verb, group, resource), (group, resource, verb)
        for group, resource, verb in NEVER:
            assert not _can(api, sa, verb, group, resource, namespace="any-namespace"), (group, resource, verb)
        assert not _can(api, sa, "patch", "kopf.dev", "clusterkopfpeerings"), "no peering by default"
    finally:
        # Wait until the namespace is gone: the demo script installs into it later.
        kubectl("delete", "-f", manifest, "--wait=true", "--timeout=120s")


def test_helm_install_namespaced_with_peering(
    helm: Run, kubectl: Run, api: client.ApiClient, peering_crds: None
) -> None:
    ns, team, other = (f"ops-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}", "default")
    kubectl("create", "namespace", team)
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    release = "shard"
    proc = helm(
        "install", release, str(CHART), "--namespace", ns, "--skip-crds", "--wait", "--timeout", "120s",
        "--set", f"watchNamespaces={{{team}}}", "--set", "peering.enabled=true", "--set", "peering.name=shard",
    )  # fmt: skip
    try:
        assert f"It serves AutoscalePolicies in {team}" in proc.stdout  # NOTES.txt
        _wait_available(kubectl, ns, "shard-rlscale")
        sa = (ns, "shard-rlscale")
        for group, resource, verb in _operator_calls(namespaced_only=True):
            assert _can(api, sa, verb, group, resource, namespace=team), (group, resource, verb)
            assert not _can(api, sa, verb, group, resource, namespace=other), (group, resource, verb, other)
        for group, resource, verb in _operator_calls(namespaced_only=False):
            assert _can(api, sa, verb, group, resource), (group, resource, verb)
        for verb in ("list", "watch", "patch"):
            assert _can(api, sa, verb, "kopf.dev", "kopfpeerings", namespace=team)
            assert not _can(api, sa, verb, "kopf.dev", "clusterkopfpeerings")
        for group, resource, verb in NEVER:
            assert not _can(api, sa, verb, group, resource, namespace=team), (group, resource, verb)
        peering = kubectl("-n", team, "get", "kopfpeering", "shard", "-o", "json")
        assert json.loads(peering.stdout)["metadata"]["name"] == "shard"
        args = json.loads(kubectl("-n", ns, "get", "deployment", "shard-rlscale", "-o", "json").stdout)
        container = args["spec"]["template"]["spec"]["containers"][0]
        assert f"--namespace={team}" in container["args"] and "--peering=shard" in container["args"]
    finally:
        helm("uninstall", release, "--namespace", ns, "--wait", check=False)


# --- the demo --------------------------------------------------------------------------------------------


def _pods_created(kubectl: Run, ns: str, selector: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
        if pods:
            return list(pods)
        if time.monotonic() > deadline:
            events = kubectl("-n", ns, "get", "events", "-o", "wide").stdout
            raise AssertionError(f"no pods for {selector} in {ns}; events:\n{events}")
        time.sleep(0.5)


def test_restricted_namespaces_do_refuse_bad_pods(kubectl: Run) -> None:
    """PodSecurity admission is on in this control plane (so the admissions below mean something)."""
    ns = f"psa-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    proc = kubectl("apply", "-f", "-", stdin=json.dumps(pod), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr


def test_demo_manifests_are_admitted(kubectl: Run) -> None:
    kubectl("apply", "-f", str(DEPLOY / "demo" / "demo.yaml"))
    _wait_available(kubectl, "rlscale-demo", "demo")
    kubectl("apply", "-f", str(DEPLOY / "prometheus" / "prometheus.yaml"))
    _wait_available(kubectl, "monitoring", "prometheus")
    kubectl("-n", "rlscale-demo", "delete", "job", "loadgen", "--ignore-not-found")
    kubectl("apply", "-f", str(DEPLOY / "demo" / "loadgen.yaml"))
    (pod,) = _pods_created(kubectl, "rlscale-demo", "app.kubernetes.io/name=loadgen")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The demo's Service selects the demo's pods.
    endpoints = json.loads(kubectl("-n", "rlscale-demo", "get", "endpoints", "demo", "-o", "json").stdout)
    assert endpoints["subsets"][0]["ports"][0]["port"] == 8080


def test_rbac_scopes_match_discovery(kubectl: Run, peering_crds: None) -> None:
    """scripts/sync-manifests.py PLACEMENT puts cluster-scoped resources in ClusterRoles only."""
    import importlib.util

    from install_helpers import ROOT

    spec = importlib.util.spec_from_file_location("sync_manifests", ROOT / "scripts" / "sync-manifests.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    listing = kubectl("api-resources", "-o", "wide", "--no-headers").stdout.splitlines()
    namespaced: dict[tuple[str, str], bool] = {}
    for line in listing:
        fields = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...
        idx = next(i for i, f in enumerate(fields) if f in ("true", "false"))
        version = fields[idx - 1]
        group = version.split("/")[0] if "/" in version else ""
        namespaced[(group, fields[0])] = fields[idx] == "true"
    crd_scopes = {
        ("rlscale.io", plural): load_docs(CHART / "crds" / f"{singular}.yaml")[0]["spec"]["scope"] == "Namespaced"
        for plural, singular in (("autoscalepolicies", "autoscalepolicy"), ("capacitybudgets", "capacitybudget"))
    }
    for (group, resource), bucket in sync.PLACEMENT.items():
        base = resource.split("/")[0]
        scope = namespaced.get((group, base), crd_scopes.get((group, base)))
        assert scope is not None, f"{group}/{base} is not served"
        cluster_bucket = bucket in ("cluster", "clusterWhenNamespaced", "peeringClusterwide")
        assert scope is not cluster_bucket, (group, resource, bucket)


def test_kind_demo_script_installs_the_stack(cluster: LocalCluster, kubectl: Run) -> None:
    """scripts/kind-demo.sh's install path (everything but kind and docker) against this API server."""
    from install_helpers import ROOT

    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "KUBE_CONTEXT": "rlscale-devstack",
        "HELM": str(cluster.bin_dir / "helm"),
        "PATH": f"{cluster.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kind-demo.sh"), "install"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snapshot = proc.stdout.strip().splitlines()[-1]
    assert "replicas=1 ready=1 cpu_limit=500m" in snapshot, snapshot
    assert "policy: demo demo" in snapshot, snapshot
    release = json.loads(subprocess.run(
        [str(cluster.bin_dir / "helm"), "--kubeconfig", str(cluster.kubeconfig), "list", "-n", "rlscale-system",
         "-o", "json"], capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    assert [(r["name"], r["status"]) for r in release] == [("rlscale", "deployed")]
    # The demo values serve only the demo namespace: a Role there, no cluster-wide Deployment access.
    kubectl("-n", "rlscale-demo", "get", "role", "rlscale")
    kubectl("-n", "rlscale-demo", "get", "job", "loadgen")
    summary = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kind-demo.sh"), "summary"], env=env, capture_output=True, text=True
    )
    assert summary.returncode == 0, summary.stderr
    assert "deployment now:" in summary.stdout and "Prometheus UI" in summary.stdout


def test_devstack_install_for_sharded_replicas_grants_their_leases_and_runs_no_pod(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Any
) -> None:
    """``helm_install(shard_replicas=2)`` (the scale benchmark's two-replica runs): the chart's Lease rights, no pod."""
    from rlscale.devstack.operator_stack import helm_install

    ns = f"shardrbac-{uuid.uuid4().hex[:6]}"
    release = helm_install(
        cluster.bin_dir / "helm", cluster.kubeconfig, ns, ns, {"watchNamespaces": [ns]}, tmp_path, shard_replicas=2
    )
    sa = (ns, release.service_account)
    for verb in ("list", "create", "patch"):
        assert _can(api, sa, verb, "coordination.k8s.io", "leases", namespace=ns), verb
    assert not _can(api, sa, "patch", "coordination.k8s.io", "leases", namespace="default")
    deployments = client.AppsV1Api(api).list_namespaced_deployment(ns).items
    assert [d.spec.replicas for d in deployments] == [0]
