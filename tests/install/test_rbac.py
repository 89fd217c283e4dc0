"""The chart grants exactly the API calls operator/rbac.py lists, in the right places, and nothing more."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from install_helpers import NAMESPACE, ROOT, by_kind, render_chart

from rlscale.operator import rbac

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def _grants(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys (resourceNames?): {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


def _calls(*, peering_only: bool | None = None) -> set[Grant]:
    """The calls of the list; with ``peering_only`` set, those of one replica (no peering, no sharding) or peering's."""
    return {
        (c.group, c.rbac_resource, v)
        for c in rbac.API_CALLS
        if peering_only is None or (c.peering_only == peering_only and not c.sharding_only)
        for v in c.verbs
    }


NAMESPACE_LIST_WATCH = {("", "namespaces", "list"), ("", "namespaces", "watch")}
CRD_LIST_WATCH = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
CLUSTER_PEERING = {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")}
NS_PEERING = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")}
SHARD_LEASES = {("coordination.k8s.io", "leases", v) for v in ("list", "create", "patch")}


def test_sync_script_rules_equal_rbac_module() -> None:
    """Every call in operator/rbac.py lands in exactly one bucket; the union is the module's own ClusterRole."""
    spec = importlib.util.spec_from_file_location("sync_manifests", ROOT / "scripts" / "sync-manifests.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    buckets = sync.rbac_buckets()
    union = set().union(*(_grants(rules) for rules in buckets.values()))
    assert union == _grants(rbac.cluster_role_rules(peering=True))
    assert union == _calls()
    seen: set[tuple[str, str]] = set()
    for rules in buckets.values():
        keys = {(r["apiGroups"][0], r["resources"][0]) for r in rules}
        assert not keys & seen, "a resource in two buckets"
        seen |= keys


def test_sync_refuses_a_resource_of_unknown_scope() -> None:
    spec = importlib.util.spec_from_file_location("sync_manifests", ROOT / "scripts" / "sync-manifests.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    new = rbac.ApiCall("", "pods", ("get",), "hypothetical new call")
    with pytest.raises(sync.SyncError, match="core/pods"):
        sync.rbac_buckets([*rbac.API_CALLS, new])


@pytest.mark.parametrize("peering", [False, True])
def test_all_namespaces_mode(helm: Path, tmp_path: Path, peering: bool) -> None:
    docs = render_chart(helm, tmp_path, {"peering": {"enabled": peering}})
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    (role,) = by_kind(docs, "ClusterRole")
    granted = _grants(role["rules"])
    # Kopf never lists namespaces when it serves all of them, and uses the cluster-wide peering object.
    expected = _calls(peering_only=False) - NAMESPACE_LIST_WATCH
    if peering:
        expected |= CLUSTER_PEERING
    assert granted == expected
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rlscale"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rlscale", "namespace": NAMESPACE}]


@pytest.mark.parametrize("peering", [False, True])
def test_listed_namespaces_mode(helm: Path, tmp_path: Path, peering: bool) -> None:
    docs = render_chart(helm, tmp_path, {"watchNamespaces": ["apps", "batch"], "peering": {"enabled": peering}})
    (cluster_role,) = by_kind(docs, "ClusterRole")
    # Cluster-wide, only the reads Kopf makes at cluster scope: nothing namespaced, no secrets anywhere.
    assert _grants(cluster_role["rules"]) == CRD_LIST_WATCH | NAMESPACE_LIST_WATCH
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["apps", "batch"]
    expected = _calls(peering_only=False) - CRD_LIST_WATCH - NAMESPACE_LIST_WATCH
    if peering:
        expected |= NS_PEERING
    for role in roles:
        assert _grants(role["rules"]) == expected


def test_every_granted_call_is_one_the_operator_makes(helm: Path, tmp_path: Path) -> None:
    for values in ({}, {"peering": {"enabled": True}}, {"watchNamespaces": ["x"], "peering": {"enabled": True}}):
        docs = render_chart(helm, tmp_path, values)
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
            for group, resource, verb in _grants(role["rules"]):
                name, _, sub = resource.partition("/")
                assert rbac.allowed(group, name, sub, verb), (group, resource, verb)


@pytest.mark.parametrize("replicas", [1, 3])
def test_replicas_sharing_policies_get_leases_in_the_release_namespace_only(
    helm: Path, tmp_path: Path, replicas: int
) -> None:
    docs = render_chart(helm, tmp_path, {"replicaCount": replicas})
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "rlscale-shards"]
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert not _grants(cluster_role["rules"]) & SHARD_LEASES  # never cluster-wide: other controllers' Leases
    if replicas == 1:
        assert not roles
        return
    (role,) = roles
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _grants(role["rules"]) == SHARD_LEASES
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == "rlscale-shards"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rlscale", "namespace": NAMESPACE}]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RLSCALE_SHARD_IDENTITY"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RLSCALE_SHARD_NAMESPACE"]["value"] == NAMESPACE


def test_rbac_can_be_left_to_the_admin(helm: Path, tmp_path: Path) -> None:
    docs = render_chart(helm, tmp_path, {"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)
