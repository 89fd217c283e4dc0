"""values.schema.json on its own (the JSON Schema helm enforces), with good and bad values."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml
from install_helpers import CHART, REPRESENTATIVE_VALUES

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def _merged(overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over the defaults (maps merge, everything else replaces)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {
                k: merge(base[k], over[k]) if k in base and k in over else over.get(k, base.get(k)) for k in base | over
            }
        return over

    return merge(DEFAULTS, overrides)  # type: ignore[no-any-return]


def _errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return ["/" + "/".join(str(p) for p in e.absolute_path) + ": " + e.message for e in validator.iter_errors(values)]


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_defaults_are_valid() -> None:
    assert _errors(DEFAULTS) == []


def test_every_default_key_is_described_by_the_schema() -> None:
    """additionalProperties: false everywhere it matters: each key in values.yaml has a schema entry."""

    def walk(values: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = SCHEMA["definitions"][name]
        props = schema.get("properties")
        if props is None:
            return
        assert schema.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"
        for key, value in values.items():
            assert key in props, f"{path}/{key} has no schema"
            if isinstance(value, dict):
                walk(value, props[key], f"{path}/{key}")

    walk(DEFAULTS, SCHEMA, "")


@pytest.mark.parametrize("name", list(REPRESENTATIVE_VALUES))
def test_representative_values_are_valid(name: str) -> None:
    assert _errors(_merged(REPRESENTATIVE_VALUES[name])) == []


GOOD: list[dict[str, Any]] = [
    {"replicaCount": 0},
    {"replicaCount": 3},
    {"watchNamespaces": ["default", "kube-public"]},
    {"model": {"source": "configMap", "configMap": {"name": "m", "key": "model.v2.onnx"}}},
    {"prometheus": {"url": "https://thanos-query.monitoring.svc.cluster.local:10902"}},
    {"resources": {"limits": {"cpu": 2, "memory": "1Gi"}, "requests": {"cpu": "0.5"}}},
    {"image": {"tag": "0.2.0-rc.1"}},
    {"metrics": {"serviceMonitor": {"interval": "1m30s"}}},
    {"peering": {"priority": -5}},
]


@pytest.mark.parametrize("values", GOOD, ids=lambda v: json.dumps(v)[:60])
def test_good_values(values: dict[str, Any]) -> None:
    assert _errors(_merged(values)) == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": -1}, "/replicaCount"),
    ({"replicaCount": 51}, "/replicaCount"),
    ({"watchNamespaces": "default"}, "/watchNamespaces"),
    ({"watchNamespaces": [""]}, "/watchNamespaces/0"),
    ({"model": {"source": "configMap", "configMap": {"name": ""}}}, "/model/configMap/name"),
    ({"model": {"configMap": {"key": "a/b"}}}, "/model/configMap/key"),
    ({"prometheus": {"url": ""}}, "/prometheus/url"),
    ({"prometheus": {"urlAllowlist": ["prometheus.svc"]}}, "/prometheus/urlAllowlist/0"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"repository": "bad repo"}}, "/image/repository"),
    ({"serviceAccount": {"annotations": {"a": 1}}}, "/serviceAccount/annotations/a"),
    ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
    ({"podLabels": {"a": True}}, "/podLabels/a"),
    ({"metrics": {"service": {"type": "ExternalName"}}}, "/metrics/service/type"),
    ({"health": {"port": 0}}, "/health/port"),
    ({"rbac": {"create": "true"}}, "/rbac/create"),
    ({"imagePullSecrets": ["regcred"]}, "/imagePullSecrets/0"),
    ({"resources": {"limit": {}}}, "/resources"),
]


@pytest.mark.parametrize(("values", "where"), BAD, ids=[w for _, w in BAD])
def test_bad_values(values: dict[str, Any], where: str) -> None:
    errors = _errors(_merged(values))
    assert errors, f"schema accepted {values}"
    assert any(e.startswith(where) for e in errors), errors
