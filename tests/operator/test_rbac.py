"""operator/rbac.py lists exactly the API calls the operator makes (recorded from a full run against kmock)."""

from __future__ import annotations

import base64

import kmock
import pytest
from conftest import FakePrometheus, eventually, running_operator
from kmock_ext import OperatorEmulator, deployment, policy
from random_model import random_mlp_onnx
from test_operator_kmock import _busy_metrics, _deploy, _events, _status

from rlscale.operator.rbac import API_CALLS, allowed, cluster_role_rules

#: Calls only Kopf's scanning makes; the kmock tests run with scanning off (see conftest).
SCANNING = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}
#: Calls for CapacityBudgets: the emulator here serves no CapacityBudget resource (Kopf leaves the index
#: unserved); tests/e2e/test_budget_e2e.py makes them against the real API server.
BUDGET = {("rlscale.io", "capacitybudgets"), ("", "resourcequotas")}


@pytest.mark.asyncio
async def test_every_call_is_listed_and_every_listed_call_is_made(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    emulator.objects[kmock.resource("apps", "v1", "deployments"), "shop", "web"] = deployment("web", "shop")
    emulator.objects[kmock.resource("", "v1", "configmaps"), "shop", "model"] = {
        "metadata": {"name": "model", "namespace": "shop", "resourceVersion": "2"},
        "binaryData": {"m": base64.b64encode(random_mlp_onnx(seed=5)).decode()},
    }
    emulator.objects[kmock.resource("", "v1", "secrets"), "shop", "prom"] = {
        "metadata": {"name": "prom", "namespace": "shop"},
        "data": {"token": base64.b64encode(b"t").decode()},
    }
    _busy_metrics(fake_prometheus)
    body = policy(
        "web",
        "shop",
        "web",
        fake_prometheus.url,
        limits={"limitChangeCooldownSeconds": 0, "scaleDownCooldownSeconds": 0},
        rollout={"mode": "full"},
        model={"source": "configMap", "configMapRef": {"name": "model", "key": "m"}},
        prometheus={"url": fake_prometheus.url, "auth": {"bearerTokenSecretRef": {"name": "prom", "key": "token"}}},
    )
    # Stored directly (no API call of the test's own in the record); Kopf lists it at start.
    emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "web"] = body
    async with running_operator(emulator):
        await eventually(lambda: _status(emulator, "shop", "web").get("lastDecision"))
        await eventually(lambda: _deploy(emulator, "shop", "web")["spec"]["replicas"] != 2, timeout=30)
        # Wait until both kinds of change happened at least once (the learned policy moves limits too).
        await eventually(
            lambda: (
                any(c == ("apps", "deployments", "", "patch") for c in emulator.calls)
                and any(c == ("apps", "deployments", "scale", "patch") for c in emulator.calls)
            ),
            timeout=40,
        )
        await eventually(lambda: _events(emulator))  # Kopf posts Events in the background

    made = {c for c in emulator.calls if c[1] is not None}  # discovery GETs have no resource
    not_listed = sorted(c for c in made if not allowed(*c))
    assert not not_listed, f"calls missing from operator/rbac.py: {not_listed}"
    listed = {
        (c.group, c.resource, c.subresource, verb)
        for c in API_CALLS
        if not c.peering_only and not c.sharding_only and (c.group, c.resource) not in SCANNING | BUDGET
        for verb in c.verbs
    }
    # Kopf patches the policy itself only to add/remove finalizers or progress; tolerate its absence here.
    optional = {("rlscale.io", "autoscalepolicies", "", "patch")}
    unused = sorted(listed - made - optional)
    assert not unused, f"listed in operator/rbac.py but never called: {unused}"


def test_cluster_role_rules_merge_verbs() -> None:
    rules = cluster_role_rules(peering=False)
    by = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in rules}
    assert by[("apps", "deployments")] == ["get", "patch"]
    assert by[("apps", "deployments/scale")] == ["patch"]
    assert ("kopf.dev", "kopfpeerings") not in by
    assert ("kopf.dev", "kopfpeerings") in {(r["apiGroups"][0], r["resources"][0]) for r in cluster_role_rules()}
    # Never more than needed: no wildcard, no delete, no secrets listing.
    for r in rules:
        assert "*" not in r["verbs"] and "delete" not in r["verbs"]
    assert by[("", "secrets")] == ["get"]
