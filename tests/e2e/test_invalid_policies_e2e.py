"""Invalid AutoscalePolicies are refused, each with a message naming the field, and nothing is scaled.

Two layers, both real:

* what the schema and its CEL rules can judge, the **API server** refuses on create
  (HTTP 422): the test asserts the refusal and that the message names the field;
* what only the operator can judge — a custom query reaching outside the namespace while
  custom queries are not trusted, a Prometheus URL outside the allowlist, a target or
  container that does not exist, a container without limits, a second policy or an HPA on
  the same Deployment — the **operator** (chart install, ServiceAccount token) reports as
  ``Ready=False`` with a reason and a message naming the field, a Warning Event, and no
  change to the Deployment.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).parent))

from e2e_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Installed,
    cleanup_policies,
    condition,
    create_policy,
    deployment_manifest,
    deployment_state,
    events_of,
    eventually,
    get_policy,
    installed_chart,
    policy_manifest,
    wait_for_events,
)

from rlscale.devstack.cluster import LocalCluster
from rlscale.operator.kube import merge_patch

pytestmark = pytest.mark.e2e

Mutation = Callable[[dict[str, Any]], None]


def _spec(**override: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"] = merge_patch(body["spec"], override)

    return mutate


HUGE = 10**12

#: (id, mutation of a valid policy, the field path the API server's message must name, a fragment it must contain)
API_REJECTED: list[tuple[str, Mutation, str, str]] = [
    ("missing-targetRef", _spec(targetRef=None), "spec.targetRef", "Required"),
    ("missing-containers", _spec(containers=None), "spec.containers", "Required"),
    ("missing-target-name", _spec(targetRef={"name": None}), "spec.targetRef.name", "Required"),
    ("empty-containers", _spec(containers=[]), "spec.containers", "at least 1"),
    ("duplicate-containers", _spec(containers=["app", "app"]), "spec.containers", "must not repeat"),
    ("container-bad-name", _spec(containers=["Bad Name"]), "spec.containers[0]", "should match"),
    ("target-not-a-deployment", _spec(targetRef={"kind": "StatefulSet"}), "spec.targetRef.kind", "Unsupported"),
    ("target-bad-name", _spec(targetRef={"name": "Not_A_Name"}), "spec.targetRef.name", "should match"),
    ("interval-too-short", _spec(intervalSeconds=1), "spec.intervalSeconds", "greater than or equal to 5"),
    ("interval-absurd", _spec(intervalSeconds=HUGE), "spec.intervalSeconds", "less than or equal to 3600"),
    ("interval-wrong-type", _spec(intervalSeconds="fast"), "spec.intervalSeconds", "integer"),
    ("dryrun-wrong-type", _spec(dryRun="yes"), "spec.dryRun", "boolean"),
    ("spec-wrong-type", lambda b: b.__setitem__("spec", ["not", "an", "object"]), "spec", "object"),
    (
        "min-above-max-replicas",
        _spec(limits={"minReplicas": 10, "maxReplicas": 2}),
        "spec.limits.minReplicas",
        "must not exceed",
    ),
    ("max-replicas-zero", _spec(limits={"maxReplicas": 0}), "spec.limits.maxReplicas", "greater than or equal to 1"),
    ("max-replicas-absurd", _spec(limits={"maxReplicas": HUGE}), "spec.limits.maxReplicas", "less than or equal to"),
    ("scale-up-pods-absurd", _spec(limits={"maxScaleUpPods": 10**7}), "spec.limits.maxScaleUpPods", "at most 100000"),
    (
        "scale-down-percent-over-100",
        _spec(limits={"maxScaleDownPercent": 150}),
        "spec.limits.maxScaleDownPercent",
        "less than or equal to 100",
    ),
    (
        "cpu-min-above-max",
        _spec(limits={"cpuLimitMinMillicores": 4000, "cpuLimitMaxMillicores": 500}),
        "spec.limits.cpuLimitMinMillicores",
        "must not exceed",
    ),
    (
        "memory-min-above-max",
        _spec(limits={"memoryLimitMinMiB": 4096, "memoryLimitMaxMiB": 256}),
        "spec.limits.memoryLimitMinMiB",
        "must not exceed",
    ),
    (
        "cpu-budget-infeasible",
        _spec(limits={"minReplicas": 4, "cpuLimitMinMillicores": 500, "maxTotalCpuMillicores": 1000}),
        "spec.limits.maxTotalCpuMillicores",
        "must allow",
    ),
    (
        "negative-cooldown",
        _spec(limits={"scaleDownCooldownSeconds": -5}),
        "spec.limits.scaleDownCooldownSeconds",
        "greater than or equal to 0",
    ),
    (
        "memory-headroom-below-1",
        _spec(limits={"memoryHeadroom": 0.5}),
        "spec.limits.memoryHeadroom",
        "greater than or equal to 1",
    ),
    ("negative-slo", _spec(objective={"latencySloMs": -5}), "spec.objective.latencySloMs", "greater than"),
    (
        "error-budget-over-1",
        _spec(objective={"maxErrorRate": 2}),
        "spec.objective.maxErrorRate",
        "less than or equal to 1",
    ),
    ("unknown-baseline", _spec(baseline={"kind": "magic"}), "spec.baseline.kind", "Unsupported"),
    (
        "no-hpa-scale-up-policy",
        _spec(baseline={"hpa": {"scaleUpPolicies": []}}),
        "spec.baseline.hpa.scaleUpPolicies",
        "at least 1",
    ),
    ("unknown-rollout-mode", _spec(rollout={"mode": "yolo"}), "spec.rollout.mode", "Unsupported"),
    ("ratio-above-1", _spec(rollout={"initialRatio": 1.5}), "spec.rollout.initialRatio", "less than or equal to 1"),
    (
        "min-ratio-above-max",
        _spec(rollout={"minRatio": 0.9, "maxRatio": 0.1}),
        "spec.rollout.minRatio",
        "must not exceed",
    ),
    (
        "configmap-model-without-ref",
        _spec(model={"source": "configMap"}),
        "spec.model.configMapRef",
        "required when source is configMap",
    ),
    ("prometheus-url-not-http", _spec(prometheus={"url": "file:///etc/passwd"}), "spec.prometheus.url", "should match"),
    ("prometheus-window-prose", _spec(prometheus={"window": "1 minute"}), "spec.prometheus.window", "should match"),
    (
        "two-auth-methods",
        _spec(
            prometheus={"auth": {"bearerTokenSecretRef": {"name": "t", "key": "k"}, "basicAuth": {"secretName": "b"}}}
        ),
        "spec.prometheus.auth.basicAuth",
        "at most one",
    ),
    ("empty-query", _spec(prometheus={"queries": {"cpuUsage": ""}}), "spec.prometheus.queries.cpuUsage", "at least 1"),
    (
        "query-too-long",
        _spec(prometheus={"queries": {"requestRate": "sum(" * 600 + "up" + ")" * 600}}),
        "spec.prometheus.queries.requestRate",
        "Too long",
    ),
    ("unknown-field", _spec(limits={"maxReplica": 3}), "spec.limits.maxReplica", "unknown field"),
]


@pytest.fixture(scope="module")
def api_namespace(
    local_cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A namespace, with the chart (and so the CRD) installed by helm; no operator runs for these."""
    name = f"e2e-invalid-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    with installed_chart(local_cluster, admin_api, helm_binary, tmp_path_factory.mktemp("invalid"), {}):
        yield name
    cleanup_policies(admin_api, name)


def _create_strict(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )


def test_a_valid_policy_is_accepted(admin_api: client.ApiClient, api_namespace: str) -> None:
    """The control: the same base policy the rejected cases start from is accepted as is."""
    _create_strict(admin_api, api_namespace, policy_manifest("valid", "web"))
    spec = get_policy(admin_api, api_namespace, "valid")["spec"]
    assert spec["limits"]["maxReplicas"] == 50 and spec["rollout"]["mode"] == "shadow"  # defaults filled in


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"), [c[1:] for c in API_REJECTED], ids=[c[0] for c in API_REJECTED]
)
def test_api_server_rejects_with_the_field_named(
    admin_api: client.ApiClient, api_namespace: str, mutate: Mutation, field: str, fragment: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    body = policy_manifest(name, "web")
    mutate(body)
    with pytest.raises(ApiException) as info:
        _create_strict(admin_api, api_namespace, body)
    assert info.value.status in (400, 422), info.value.body  # 400: strict decoding (unknown field)
    message = json.loads(info.value.body)["message"]
    assert field in message, message
    assert fragment in message, message
    with pytest.raises(ApiException) as gone:
        get_policy(admin_api, api_namespace, name)
    assert gone.value.status == 404


def test_at_least_twenty_invalid_policies() -> None:
    assert len(API_REJECTED) + len(OPERATOR_REFUSED) >= 20


# --- what only the operator can judge -----------------------------------------------------------------------------

#: (policy, target Deployment, spec override, expected Ready reason, field the message must name)
OPERATOR_REFUSED: list[tuple[str, str, dict[str, Any], str, str]] = [
    (
        "query-without-namespace",
        "web-a",
        {"prometheus": {"queries": {"cpuUsage": "avg(rate(container_cpu_usage_seconds_total[1m]))"}}},
        "InvalidQuery",
        "spec.prometheus.queries.cpuUsage",
    ),
    (
        "query-other-namespace",
        "web-b",
        {"prometheus": {"queries": {"requestRate": 'sum(rate(http_requests_total{namespace="kube-system"}[1m]))'}}},
        "InvalidQuery",
        "spec.prometheus.queries.requestRate",
    ),
    (
        "query-or-escape",
        "web-c",
        {
            "prometheus": {
                "queries": {
                    "inFlight": 'sum(http_requests_in_flight{namespace="{namespace}"} or http_requests_in_flight)'
                }
            }
        },
        "InvalidQuery",
        "spec.prometheus.queries.inFlight",
    ),
    (
        "prometheus-not-allowed",
        "web-d",
        {"prometheus": {"url": "http://metrics.attacker.example:9090"}},
        "InvalidPrometheusURL",
        "spec.prometheus.url",
    ),
    ("target-missing", "ghost", {}, "TargetNotFound", "spec.targetRef.name"),
    ("container-missing", "web-e", {"containers": ["sidecar"]}, "ContainerNotFound", "spec.containers"),
    ("no-limits", "web-nolimits", {}, "ContainerLimitsMissing", "limit"),
    ("hpa-owned", "web-hpa", {}, "ConflictingHPA", "HorizontalPodAutoscaler"),
    ("second-policy", "web-shared", {}, "ConflictingPolicy", "already scales"),
]


@pytest.fixture
def operator_env(
    local_cluster: LocalCluster,
    admin_api: client.ApiClient,
    helm_binary: Path,
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[Installed, str]]:
    with installed_chart(local_cluster, admin_api, helm_binary, tmp_path, {"watchNamespaces": [namespace]}) as inst:
        try:
            yield inst, namespace
        finally:
            cleanup_policies(admin_api, namespace)


def test_operator_refuses_what_only_it_can_judge_and_touches_nothing(
    admin_api: client.ApiClient, operator_env: tuple[Installed, str]
) -> None:
    inst, ns = operator_env
    apps = client.AppsV1Api(admin_api)
    targets = sorted({t for _, t, _, _, _ in OPERATOR_REFUSED if t != "ghost"})
    for t in targets:
        body = deployment_manifest(t, replicas=2, cpu="500m", memory="512Mi")
        if t == "web-nolimits":
            body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
        apps.create_namespaced_deployment(ns, body)
    client.AutoscalingV2Api(admin_api).create_namespaced_horizontal_pod_autoscaler(
        ns,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "existing-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-hpa"},
                "minReplicas": 1,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                    }
                ],
            },
        },
    )
    # The older policy on web-shared keeps it (in dryRun, so it decides but never patches).
    create_policy(admin_api, ns, policy_manifest("owner", "web-shared", {"dryRun": True, "intervalSeconds": 5}))
    before = {t: deployment_state(admin_api, ns, t) for t in targets}
    inst.operator(
        namespaces=(ns,),
        prometheus_url="http://127.0.0.1:9",  # nothing listens: no policy here may reach a decision that needs data
        extra_args=("--prometheus-url-allowlist", "http://127.0.0.1:"),
        env={"RLSCALE_START_SPREAD": "0"},
    ).start()
    eventually(lambda: condition(get_policy(admin_api, ns, "owner"), "Ready"), timeout=60, what="the owner reconciled")
    for name, target, override, _, _ in OPERATOR_REFUSED:
        spec = {"intervalSeconds": 5, **override}
        create_policy(admin_api, ns, policy_manifest(name, target, spec))

    for name, _, _, reason, field in OPERATOR_REFUSED:
        ready = eventually(
            lambda n=name: condition(get_policy(admin_api, ns, n), "Ready"),
            timeout=60,
            what=f"{name}: a Ready condition",
            state=lambda n=name: get_policy(admin_api, ns, n).get("status"),
        )
        assert ready["status"] == "False" and ready["reason"] == reason, (name, ready)
        assert field in ready["message"], (name, ready)
        policy = get_policy(admin_api, ns, name)
        assert "lastDecision" not in policy["status"] and "controllerState" not in policy["status"], name
        # The Warning Event is posted in the background, after (or around) the status patch: wait for it.
        wait_for_events(
            admin_api,
            ns,
            name,
            lambda events, r=reason: [e for e in events if e.type == "Warning" and e.reason == r],
            what=f"{name}: a Warning Event {reason}",
        )

    after = {t: deployment_state(admin_api, ns, t) for t in targets}
    for t in targets:
        assert after[t]["generation"] == before[t]["generation"], t
        assert (after[t]["replicas"], after[t]["cpu"], after[t]["memory"]) == (
            before[t]["replicas"],
            before[t]["cpu"],
            before[t]["memory"],
        ), t
    for name, *_ in OPERATOR_REFUSED:
        changes = [e for e in events_of(admin_api, ns, name) if e.reason in ("Scaled", "LimitsChanged")]
        assert not changes, name
    # The dry-run owner decided (and said what it would do) without patching: its decisions are never applied.
    owner = get_policy(admin_api, ns, "owner")["status"]
    assert owner.get("lastDecision", {}).get("applied") in (None, False), owner
