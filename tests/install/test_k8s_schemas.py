"""Every manifest we ship, validated against the Kubernetes OpenAPI schemas of the supported versions.

``kubernetes-validate`` carries the upstream schemas (strict variants reject unknown fields);
custom resources are checked against their own CRD's schema instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from install_helpers import CHART, DEPLOY, REPRESENTATIVE_VALUES, ROOT, load_docs, render_chart

from rlscale.operator.models import AutoscalePolicySpec

#: Kubernetes minor versions the chart supports (Chart.yaml kubeVersion >=1.29) and kubernetes-validate ships.
SUPPORTED = [f"1.{minor}.0" for minor in range(29, 38)]

#: Kinds from CRDs: validated against the CRD, not the built-in schemas.
CUSTOM_KINDS = {"AutoscalePolicy", "ClusterKopfPeering", "KopfPeering", "ServiceMonitor"}

PLAIN_MANIFESTS = [
    DEPLOY / "operator" / "crds.yaml",
    DEPLOY / "operator" / "rlscale.yaml",
    DEPLOY / "demo" / "demo.yaml",
    DEPLOY / "demo" / "loadgen.yaml",
    DEPLOY / "demo" / "loadgen-trace.yaml",
    DEPLOY / "prometheus" / "prometheus.yaml",
    CHART / "crds" / "kopf-peering.yaml",
]


def test_supported_versions_are_shipped_by_kubernetes_validate() -> None:
    shipped = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in SUPPORTED:
        assert (shipped / f"v{version}-local-strict").is_dir(), version


def _validate(doc: dict[str, Any], version: str) -> None:
    if doc["kind"] in CUSTOM_KINDS:
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", SUPPORTED)
def test_chart_renders_validate(helm: Path, tmp_path: Path, version: str) -> None:
    for values in [{}, *REPRESENTATIVE_VALUES.values()]:
        for doc in render_chart(helm, tmp_path, values, "--include-crds", "--kube-version", version):
            _validate(doc, version)


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("path", PLAIN_MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_plain_manifests_validate(path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs
    for doc in docs:
        _validate(doc, version)


def test_validation_catches_a_misspelt_field() -> None:
    """The strict schemas do reject unknown fields (so the tests above can fail)."""
    (dep,) = [d for d in load_docs(DEPLOY / "demo" / "demo.yaml") if d["kind"] == "Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, SUPPORTED[-1], strict=True)


def _crd_schema(path: Path, kind: str) -> dict[str, Any]:
    for crd in load_docs(path):
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind} in {path}")


def _unknown_fields(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would prune (kubectl --validate=strict refuses them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(instance, dict) and "properties" in schema:
        for key, value in instance.items():
            if not path and key in ("apiVersion", "kind", "metadata"):
                continue  # every object has them, whether the CRD's schema lists them or not
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            found += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def _check_against_crd(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    # The CRD schema is OpenAPI v3.0 (boolean exclusiveMinimum): draft 4 semantics.
    jsonschema.Draft4Validator(schema).validate(doc)
    assert _unknown_fields(doc, schema) == []


def test_example_policy_is_valid() -> None:
    """deploy/examples/autoscalepolicy.yaml against the CRD schema and the operator's own model (its CEL rules)."""
    (policy,) = load_docs(DEPLOY / "examples" / "autoscalepolicy.yaml")
    schema = _crd_schema(CHART / "crds" / "autoscalepolicy.yaml", "AutoscalePolicy")
    _check_against_crd(policy, schema)
    spec = AutoscalePolicySpec.model_validate(policy["spec"])
    # It targets the demo workload's Deployment and container, in the demo's namespace.
    demo = {d["kind"]: d for d in load_docs(DEPLOY / "demo" / "demo.yaml")}
    assert policy["metadata"]["namespace"] == demo["Deployment"]["metadata"]["namespace"]
    assert spec.target_ref.name == demo["Deployment"]["metadata"]["name"]
    containers = [c["name"] for c in demo["Deployment"]["spec"]["template"]["spec"]["containers"]]
    assert list(spec.containers) == containers


def test_crd_check_rejects_bad_policies() -> None:
    (policy,) = load_docs(DEPLOY / "examples" / "autoscalepolicy.yaml")
    schema = _crd_schema(CHART / "crds" / "autoscalepolicy.yaml", "AutoscalePolicy")
    typo = yaml.safe_load(yaml.safe_dump(policy))
    typo["spec"]["limits"]["maxReplica"] = 5
    with pytest.raises(AssertionError, match="maxReplica"):
        _check_against_crd(typo, schema)
    wrong = yaml.safe_load(yaml.safe_dump(policy))
    wrong["spec"]["rollout"]["mode"] = "yolo"
    with pytest.raises(jsonschema.ValidationError):
        _check_against_crd(wrong, schema)


def test_peering_objects_match_their_crds(helm: Path, tmp_path: Path) -> None:
    for values in ({"peering": {"enabled": True}}, {"peering": {"enabled": True}, "watchNamespaces": ["a"]}):
        for doc in render_chart(helm, tmp_path, values):
            if doc["kind"] in ("ClusterKopfPeering", "KopfPeering"):
                _check_against_crd(doc, _crd_schema(CHART / "crds" / "kopf-peering.yaml", doc["kind"]))
