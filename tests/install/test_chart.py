"""The Helm chart through the pinned Go helm: lint, render, the values schema's refusals, pod security."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from install_helpers import CHART, NAMESPACE, REPRESENTATIVE_VALUES, by_kind, render_chart, run_helm


def test_helm_is_the_pinned_version(helm: Path) -> None:
    proc = run_helm(helm, "version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("v3.22.0"), proc.stdout


@pytest.mark.parametrize("name", ["defaults", *REPRESENTATIVE_VALUES])
def test_lint_strict(helm: Path, tmp_path: Path, name: str) -> None:
    values = REPRESENTATIVE_VALUES.get(name, {})
    proc = run_helm(helm, "lint", "--strict", str(CHART), values=values, tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    # --strict turns warnings into failures; make sure nothing but the icon hint is reported.
    findings = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert findings == ["[INFO] Chart.yaml: icon is recommended"], findings


def test_default_render(helm: Path, tmp_path: Path) -> None:
    docs = render_chart(helm, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    (dep,) = by_kind(docs, "Deployment")
    assert dep["metadata"]["namespace"] == NAMESPACE
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "rlscale/operator:0.1.0"
    args = container["args"]
    assert args[0] == "run"
    assert "--all-namespaces" in args and "--standalone" in args
    assert "--prometheus-url=http://prometheus.monitoring.svc:9090" in args
    assert "--trust-custom-queries" not in args and "--verbose" not in args
    assert "--liveness=http://0.0.0.0:8081/healthz" in args and "--metrics-port=8080" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"] and container["resources"]["requests"]


def test_restricted_pod_security(helm: Path, tmp_path: Path) -> None:
    """The operator pod meets the 'restricted' Pod Security Standard in every configuration."""
    for values in [{}, *REPRESENTATIVE_VALUES.values()]:
        (dep,) = by_kind(render_chart(helm, tmp_path, values), "Deployment")
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert all("hostPath" not in v for v in volumes.values())


def test_namespaced_mode_uses_roles_and_peering_objects(helm: Path, tmp_path: Path) -> None:
    docs = render_chart(helm, tmp_path, REPRESENTATIVE_VALUES["namespaced-peering"])
    roles = by_kind(docs, "Role")
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "rlscale", "namespace": NAMESPACE}]
        assert b["roleRef"]["kind"] == "Role"
    peerings = by_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "rlscale-shard-1"),
        ("team-b", "rlscale-shard-1"),
    ]
    assert not by_kind(docs, "ClusterKopfPeering")
    (dep,) = by_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    assert "--peering=rlscale-shard-1" in args and "--priority=10" in args and "--standalone" not in args
    assert "--trust-custom-queries" in args and "--verbose" in args
    assert "--prometheus-url-allowlist=https://prometheus." in args


def test_clusterwide_peering_object(helm: Path, tmp_path: Path) -> None:
    docs = render_chart(helm, tmp_path, REPRESENTATIVE_VALUES["clusterwide-peering"])
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "rlscale"
    assert not by_kind(docs, "Role") and not by_kind(docs, "KopfPeering")


def test_configmap_model_replaces_the_builtin_one(helm: Path, tmp_path: Path) -> None:
    docs = render_chart(helm, tmp_path, REPRESENTATIVE_VALUES["configmap-model-servicemonitor"])
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["configMap"] == {
        "name": "rlscale-model",
        "items": [{"key": "policy.onnx", "path": "default.onnx"}],
    }
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == "/usr/local/lib/python3.11/site-packages/rlscale/policy/models"
    assert pod["containers"][0]["image"] == "registry.example.com/rlscale/operator@sha256:" + "ab" * 32
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (service,) = by_kind(docs, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_builtin_model_dir_matches_the_policy_package() -> None:
    """The chart mounts a ConfigMap model where rlscale.policy.model looks for the built-in one."""
    from rlscale.policy.model import DEFAULT_MODEL_PATH

    assert DEFAULT_MODEL_PATH.name == "default.onnx"
    assert DEFAULT_MODEL_PATH.parent.name == "models"
    assert DEFAULT_MODEL_PATH.parent.parent.joinpath("model.py").is_file()  # next to rlscale/policy/model.py
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "/site-packages/rlscale/policy/models{{" in helpers


# (values, the field helm must name in its refusal)
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": 51}, "/replicaCount"),
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["team-*"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
    ({"model": {"source": "configMap"}}, "/model"),
    ({"model": {"source": "s3"}}, "/model/source"),
    ({"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ({"image": {"tag": "has space"}}, "/image/tag"),
    ({"resources": {"limits": {"cpu": "two"}}}, "/resources/limits/cpu"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"interval": "30"}}}, "/metrics/serviceMonitor/interval"),
    ({"peering": {"enabeld": True}}, "'enabeld'"),
    ({"replicas": 1}, "'replicas'"),
    ({"trustCustomQueries": "yes"}, "/trustCustomQueries"),
    ({"workers": 0}, "/workers"),
]


@pytest.mark.parametrize(("values", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(
    helm: Path, tmp_path: Path, values: dict[str, Any], field: str
) -> None:
    proc = run_helm(helm, "template", "rlscale", str(CHART), values=values, tmp=tmp_path)
    assert proc.returncode != 0, f"helm accepted {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert field in proc.stderr, proc.stderr


def test_cross_field_rule_has_a_clear_message(helm: Path, tmp_path: Path) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    proc = run_helm(helm, "template", "rlscale", str(CHART), values=values, tmp=tmp_path)
    assert proc.returncode != 0
    assert "metrics.serviceMonitor.enabled: needs metrics.service.enabled=true" in proc.stderr


def test_sharded_replicas_refuse_peering(helm: Path, tmp_path: Path) -> None:
    values = {"replicaCount": 2, "peering": {"enabled": True}}
    proc = run_helm(helm, "template", "rlscale", str(CHART), values=values, tmp=tmp_path)
    assert proc.returncode != 0
    assert "replicaCount: more than 1 replica shares the policies" in proc.stderr


def test_existing_service_account_must_be_named(helm: Path, tmp_path: Path) -> None:
    proc = run_helm(helm, "template", "rlscale", str(CHART), values={"serviceAccount": {"create": False}}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "serviceAccount.name is required" in proc.stderr
    docs = render_chart(helm, tmp_path, {"serviceAccount": {"create": False, "name": "ops-sa"}})
    assert not by_kind(docs, "ServiceAccount")
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    (crb,) = by_kind(docs, "ClusterRoleBinding")
    assert crb["subjects"][0]["name"] == "ops-sa"


def test_kube_version_floor(helm: Path, tmp_path: Path) -> None:
    """Chart.yaml's kubeVersion is enforced by helm: 1.28 is refused, 1.29 accepted."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.29.0-0"
    old = run_helm(helm, "template", "rlscale", str(CHART), "--kube-version", "1.28.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr
    ok = run_helm(helm, "template", "rlscale", str(CHART), "--kube-version", "1.29.0")
    assert ok.returncode == 0, ok.stderr


def test_values_file_defaults_match_rendered_defaults(helm: Path, tmp_path: Path) -> None:
    """Passing values.yaml explicitly renders exactly what the defaults render."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert render_chart(helm, tmp_path, defaults) == render_chart(helm, tmp_path)
