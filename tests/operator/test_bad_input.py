"""Bad input: each case is refused with a condition that names the field, an Event, and no action.

Specs reach the operator only after the API server's schema and CEL checks; these cases
are what the operator itself must refuse — because a field is beyond what a schema can
say (a query's scope, a Secret's key, a container name) or because a CRD was installed
without validation (the operator must not trust that it was).
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, api_client
from kmock_ext import OperatorEmulator, deployment, policy

from rlscale.operator.handlers import Runtime
from rlscale.operator.reconcile import PolicyRef
from rlscale.operator.settings import OperatorSettings

pytestmark = pytest.mark.asyncio

DEPLOY = kmock.resource("apps", "v1", "deployments")
SECRETS = kmock.resource("", "v1", "secrets")


def _spec(**over: Any) -> dict[str, Any]:
    spec = copy.deepcopy(policy("p", "shop", "web", "http://127.0.0.1:1")["spec"])
    spec.update(over)
    return spec


# (case id, spec, expected reason, text the message must contain)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("min above max", _spec(limits={"minReplicas": 10, "maxReplicas": 2}), "InvalidSpec", "spec.limits"),
    ("negative min", _spec(limits={"minReplicas": -1}), "InvalidSpec", "spec.limits.minReplicas"),
    ("absurd max replicas", _spec(limits={"maxReplicas": 10**9}), "InvalidSpec", "spec.limits.maxReplicas"),
    ("absurd cpu", _spec(limits={"cpuLimitMaxMillicores": 10**12}), "InvalidSpec", "cpuLimitMaxMillicores"),
    ("zero cpu step", _spec(limits={"cpuLimitStepMillicores": 0}), "InvalidSpec", "cpuLimitStepMillicores"),
    (
        "cpu bounds crossed",
        _spec(limits={"cpuLimitMinMillicores": 900, "cpuLimitMaxMillicores": 100}),
        "InvalidSpec",
        "cpuLimitMinMillicores",
    ),
    (
        "infeasible budget",
        _spec(limits={"maxTotalCpuMillicores": 10, "minReplicas": 2}),
        "InvalidSpec",
        "maxTotalCpuMillicores",
    ),
    ("ratio bounds crossed", _spec(rollout={"minRatio": 0.9, "maxRatio": 0.1}), "InvalidSpec", "spec.rollout"),
    ("unknown mode", _spec(rollout={"mode": "yolo"}), "InvalidSpec", "spec.rollout.mode"),
    ("ratio above 1", _spec(rollout={"initialRatio": 7}), "InvalidSpec", "spec.rollout.initialRatio"),
    ("NaN SLO", _spec(objective={"latencySloMs": float("nan")}), "InvalidSpec", "spec.objective.latencySloMs"),
    ("negative SLO", _spec(objective={"latencySloMs": -5}), "InvalidSpec", "spec.objective.latencySloMs"),
    ("interval too short", _spec(intervalSeconds=1), "InvalidSpec", "spec.intervalSeconds"),
    ("interval not a number", _spec(intervalSeconds="soon"), "InvalidSpec", "spec.intervalSeconds"),
    ("no containers", _spec(containers=[]), "InvalidSpec", "spec.containers"),
    ("repeated container", _spec(containers=["app", "app"]), "InvalidSpec", "containers"),
    ("bad container name", _spec(containers=["App_1"]), "InvalidSpec", "spec.containers[0]"),
    (
        "target name injection",
        _spec(targetRef={"name": 'web"} or {__name__=~".+'}),
        "InvalidSpec",
        "spec.targetRef.name",
    ),
    (
        "wrong target kind",
        _spec(targetRef={"name": "web", "kind": "StatefulSet"}),
        "InvalidSpec",
        "spec.targetRef.kind",
    ),
    ("unknown field", _spec(replicasPlease=3), "InvalidSpec", "spec.replicasPlease"),
    ("config map model without ref", _spec(model={"source": "configMap"}), "InvalidSpec", "configMapRef"),
    ("bad prometheus url", _spec(prometheus={"url": "file:///etc/passwd"}), "InvalidSpec", "spec.prometheus.url"),
    (
        "bad window",
        _spec(prometheus={"url": "http://p:9090", "window": "1m] or up[1m"}),
        "InvalidSpec",
        "spec.prometheus.window",
    ),
    (
        "query reads another namespace",
        _spec(
            prometheus={
                "url": "http://p:9090",
                "queries": {"requestRate": 'sum(rate(http_requests_total{namespace="kube-system"}[1m]))'},
            }
        ),
        "InvalidQuery",
        "spec.prometheus.queries.requestRate",
    ),
    (
        "query reads all metrics",
        _spec(prometheus={"url": "http://p:9090", "queries": {"latencyP99": '{__name__=~".+"}'}}),
        "InvalidQuery",
        "spec.prometheus.queries.latencyP99",
    ),
    (
        "query too long",
        _spec(prometheus={"url": "http://p:9090", "queries": {"inFlight": "x" * 5000}}),
        "InvalidSpec",
        "spec.prometheus.queries.inFlight",
    ),
    (
        "both auth kinds",
        _spec(
            prometheus={
                "url": "http://p:9090",
                "auth": {"bearerTokenSecretRef": {"name": "s", "key": "t"}, "basicAuth": {"secretName": "s"}},
            }
        ),
        "InvalidSpec",
        "spec.prometheus.auth",
    ),
    ("container not in deployment", _spec(containers=["db"]), "ContainerNotFound", "spec.containers"),
    ("target missing", _spec(targetRef={"name": "nope"}), "TargetNotFound", "spec.targetRef.name"),
    (
        "url outside allowlist",
        _spec(prometheus={"url": "http://evil.example:9090"}),
        "InvalidPrometheusURL",
        "spec.prometheus.url",
    ),
]


@pytest.mark.parametrize(("case", "spec", "reason", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_with_field_and_no_action(
    emulator: OperatorEmulator, case: str, spec: dict[str, Any], reason: str, field: str
) -> None:
    emulator.objects[DEPLOY, "shop", "web"] = deployment("web", "shop", replicas=3)
    body = policy("p", "shop", "web", "http://127.0.0.1:1")
    body["spec"] = spec
    emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "p"] = body
    settings = OperatorSettings(metrics_port=0, prometheus_url_allowlist=("http://127.0.0.1:", "http://p:9090"))
    runtime = Runtime.build(settings, api_client(str(emulator.url)))
    events: list[tuple[str, str, str]] = []
    try:
        outcome = await runtime.reconciler.reconcile(
            PolicyRef("shop", "p", 1), spec, None, post_event=lambda *e: events.append(e)
        )
    finally:
        runtime.close()
    assert outcome.refused == reason, outcome.status
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason
    assert field in ready["message"], ready["message"]
    assert events and events[0][0] == "Warning" and field in events[0][2]
    # Nothing acted: the Deployment was not patched or scaled, and no decision was recorded.
    assert not [c for c in emulator.calls if c[0] == "apps" and c[3] == "patch"]
    assert emulator.objects[DEPLOY, "shop", "web"].raw["spec"]["replicas"] == 3
    assert "controllerState" not in outcome.status and "lastDecision" not in outcome.status
    # The status written is the one returned.
    stored = emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "p"].raw
    assert stored["status"]["conditions"][0]["reason"] == reason


async def test_missing_secret_means_unknown_metrics_not_action(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    """A bearer-token Secret that does not exist: metrics unknown (named), the baseline holds."""
    emulator.objects[DEPLOY, "shop", "web"] = deployment("web", "shop", replicas=3)
    fake_prometheus.values = {"cpu_usage": 0.01, "request_rate": 1.0, "latency_p99": 0.01}
    spec = _spec(
        prometheus={"url": fake_prometheus.url, "auth": {"bearerTokenSecretRef": {"name": "tok", "key": "token"}}}
    )
    emulator.objects[kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies"), "shop", "p"] = policy(
        "p", "shop", "web", fake_prometheus.url
    )
    runtime = Runtime.build(OperatorSettings(metrics_port=0), api_client(str(emulator.url)))
    try:
        outcome = await runtime.reconciler.reconcile(PolicyRef("shop", "p", 1), spec, None)
        assert outcome.decision is not None and outcome.decision.replicas == 3
        metrics = next(c for c in outcome.status["conditions"] if c["type"] == "MetricsAvailable")
        assert metrics["status"] == "False" and "bearerTokenSecretRef" in metrics["message"]
        assert not fake_prometheus.queries  # never asked without the credential
        # With the Secret present, the token is sent.
        emulator.objects[SECRETS, "shop", "tok"] = {
            "metadata": {"name": "tok", "namespace": "shop"},
            "data": {"token": base64.b64encode(b"s3cret\n").decode()},
        }
        outcome = await runtime.reconciler.reconcile(PolicyRef("shop", "p", 1), spec, outcome.status)
        assert fake_prometheus.queries
        auth = fake_prometheus.headers[-1].get("Authorization")
        assert auth == "Bearer s3cret"
    finally:
        runtime.close()
