"""The CRD file is the one the models generate, is a valid structural CRD, and its CEL rules agree with pydantic."""

from __future__ import annotations

from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from rlscale.operator import models
from rlscale.operator.crd import CRD_PATH, crd_document, crd_yaml, structural
from rlscale.policy.decide import DecisionConfig


def test_crd_file_is_generated_from_models() -> None:
    assert CRD_PATH.read_text() == crd_yaml(), "run `rlscale crd --write` after changing operator/models.py"


def test_crd_is_valid_apiextensions_v1() -> None:
    kubernetes_validate.validate(crd_document(), "1.33.0", strict=True)


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, prop in node.get("properties", {}).items():
        out += _walk(prop, f"{path}.{name}")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


def test_schema_is_structural() -> None:
    """Every node has a type (or preserves unknown fields); no $ref, anyOf or titles survive."""
    spec = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(spec):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for banned in ("$ref", "anyOf", "oneOf", "title", "prefixItems", "const"):
            assert banned not in node, f"{path} has {banned}"


def test_printer_columns_and_names() -> None:
    crd = crd_document()["spec"]
    assert crd["names"]["shortNames"] == ["asp"]
    version = crd["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Target", "Replicas", "Mode", "Ratio", "Last Action", "Age"]


def test_defaults_and_ranges_come_from_policy_models() -> None:
    """Schema defaults are the pydantic defaults; ranges are policy/'s Field bounds."""
    schema = structural(models.AutoscalePolicySpec)
    limits = schema["properties"]["limits"]["properties"]
    assert limits["maxReplicas"]["default"] == 50 and limits["maxReplicas"]["minimum"] == 1
    assert limits["scaleDownCooldownSeconds"]["default"] == 300.0
    rollout = schema["properties"]["rollout"]["properties"]
    assert rollout["mode"]["enum"] == ["shadow", "gradual", "full"]
    assert rollout["stepUp"]["minimum"] == 0 and rollout["stepUp"]["exclusiveMinimum"] is True
    assert schema["required"] == ["targetRef", "containers"]
    # The defaults the API server fills in give the same DecisionConfig as policy/'s defaults.
    spec = models.AutoscalePolicySpec.model_validate({"targetRef": {"name": "web"}, "containers": ["app"]})
    assert spec.decision_config() == DecisionConfig()


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server does before CEL runs: fill defaults of absent fields, recursively."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
        if name in out:
            out[name] = _apply_defaults(prop, out[name])
    return out


def _cel_ok(schema: dict[str, Any], value: dict[str, Any]) -> bool:
    return all(cel.evaluate(r["rule"], {"self": value}) for r in schema.get("x-kubernetes-validations", []))


# (model, input in CRD spelling): cases on both sides of every cross-field rule.
CEL_CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (models.LimitsSpec, {"minReplicas": 3, "maxReplicas": 2}),
    (models.LimitsSpec, {"minReplicas": 2, "maxReplicas": 2}),
    (models.LimitsSpec, {"cpuLimitMinMillicores": 900, "cpuLimitMaxMillicores": 800}),
    (models.LimitsSpec, {"cpuLimitMinMillicores": 800, "cpuLimitMaxMillicores": 800}),
    (models.LimitsSpec, {"memoryLimitMinMiB": 1024, "memoryLimitMaxMiB": 512}),
    (models.LimitsSpec, {"maxTotalCpuMillicores": 150, "minReplicas": 2, "cpuLimitMinMillicores": 100}),
    (models.LimitsSpec, {"maxTotalCpuMillicores": 200, "minReplicas": 2, "cpuLimitMinMillicores": 100}),
    (models.LimitsSpec, {"maxTotalMemoryMiB": 100, "minReplicas": 1, "memoryLimitMinMiB": 128}),
    (models.LimitsSpec, {"cpuLimitMaxMillicores": 2_000_000}),
    (models.LimitsSpec, {"memoryLimitStepMiB": 20_000_000}),
    (models.RolloutSpec, {"minRatio": 0.6, "maxRatio": 0.4}),
    (models.RolloutSpec, {"minRatio": 0.4, "maxRatio": 0.4}),
    (models.ModelSpec, {"source": "configMap"}),
    (models.ModelSpec, {"source": "configMap", "configMapRef": {"name": "m", "key": "k"}}),
    (models.ModelSpec, {"source": "builtin"}),
    (
        models.PrometheusAuthSpec,
        {"bearerTokenSecretRef": {"name": "s", "key": "t"}, "basicAuth": {"secretName": "s"}},
    ),
    (models.PrometheusAuthSpec, {"basicAuth": {"secretName": "s"}}),
    (models.AutoscalePolicySpec, {"targetRef": {"name": "w"}, "containers": ["a", "a"]}),
    (models.AutoscalePolicySpec, {"targetRef": {"name": "w"}, "containers": ["a", "b"]}),
]


@pytest.mark.parametrize(("model", "value"), CEL_CASES, ids=lambda v: str(v)[:60])
def test_cel_rules_agree_with_pydantic(model: type[BaseModel], value: dict[str, Any]) -> None:
    schema = structural(model)
    assert schema.get("x-kubernetes-validations"), f"{model.__name__} has no CEL rules"
    try:
        model.model_validate(value)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    assert _cel_ok(schema, _apply_defaults(schema, value)) == pydantic_ok


def test_every_cel_rule_has_a_failing_case() -> None:
    """No dead CEL rule: each one rejects at least one of the cases above."""
    for model in {m for m, _ in CEL_CASES}:
        schema = structural(model)
        for rule in schema["x-kubernetes-validations"]:
            failing = [
                v
                for m, v in CEL_CASES
                if m is model and not cel.evaluate(rule["rule"], {"self": _apply_defaults(schema, v)})
            ]
            assert failing or "must be at most" in rule["message"], f"{model.__name__}: {rule['rule']} never fails"


def test_example_policy_in_docs_validates() -> None:
    """The full example of docs/crd-reference.md parses with the models (and so with the schema)."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "crd-reference.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(block)
    assert doc["kind"] == "AutoscalePolicy"
    spec = models.AutoscalePolicySpec.model_validate(doc["spec"])
    assert spec.decision_config().gate.mode == doc["spec"]["rollout"]["mode"]
