"""The CapacityBudget CRD: generated from its models, valid and structural, CEL agreeing with pydantic."""

from __future__ import annotations

from typing import Any

import cel
import kubernetes_validate
import pytest
from pydantic import ValidationError

from rlscale.operator import budget_models as bm
from rlscale.operator.crd import BUDGET_CRD_PATH, budget_crd_document, budget_crd_yaml, structural
from rlscale.policy.budget import RECLAIM_BELOW, BudgetConfig


def test_budget_crd_file_is_generated_from_models() -> None:
    assert BUDGET_CRD_PATH.read_text() == budget_crd_yaml(), "run `rlscale crd --write` after changing budget_models"


def test_budget_crd_is_valid_apiextensions_v1() -> None:
    kubernetes_validate.validate(budget_crd_document(), "1.33.0", strict=True)
    crd = budget_crd_document()["spec"]
    assert crd["names"]["kind"] == "CapacityBudget" and crd["scope"] == "Namespaced"
    assert crd["versions"][0]["subresources"] == {"status": {}}


def test_match_labels_is_a_map_of_label_values() -> None:
    spec = structural(bm.CapacityBudgetSpec)
    labels = spec["properties"]["policySelector"]["properties"]["matchLabels"]
    assert labels["type"] == "object" and labels["additionalProperties"]["type"] == "string"
    assert "x-kubernetes-preserve-unknown-fields" not in labels


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
        if name in out:
            out[name] = _apply_defaults(prop, out[name])
    return out


SEL = {"matchLabels": {"team": "shop"}}
CASES: list[tuple[type[Any], dict[str, Any]]] = [
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 8000}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 8000, "fromResourceQuota": {"name": "q"}}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "fromResourceQuota": {"name": "q"}}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "fromResourceQuota": {"name": "q"}, "memoryMiB": 10}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 2 * 10**9}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 1, "memoryMiB": 2 * 10**9}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 1, "rule": "fcfs", "reclaimBelow": 0.5}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 1, "rule": "fcfs"}),
    (bm.CapacityBudgetSpec, {"policySelector": SEL, "cpuMillicores": 1, "reclaimBelow": 0.5}),
    (bm.PolicySelector, {"matchLabels": {}}),
    (bm.PolicySelector, {"matchLabels": {f"k{i}": "v" for i in range(17)}}),
    (bm.PolicySelector, {"matchLabels": {"a": "b"}}),
]


@pytest.mark.parametrize(("model", "value"), CASES, ids=lambda v: str(v)[:60])
def test_cel_rules_agree_with_pydantic(model: type[Any], value: dict[str, Any]) -> None:
    schema = structural(model)
    rules = schema["x-kubernetes-validations"]
    try:
        model.model_validate(value)
        ok = True
    except ValidationError:
        ok = False
    assert all(cel.evaluate(r["rule"], {"self": _apply_defaults(schema, value)}) for r in rules) == ok


def test_every_cel_rule_has_a_failing_case() -> None:
    for model in {m for m, _ in CASES}:
        schema = structural(model)
        for rule in schema["x-kubernetes-validations"]:
            failing = [
                v
                for m, v in CASES
                if m is model and not cel.evaluate(rule["rule"], {"self": _apply_defaults(schema, v)})
            ]
            assert failing, f"{model.__name__}: {rule['rule']} never fails"


def test_budget_config_from_spec_and_quota() -> None:
    spec = bm.CapacityBudgetSpec.model_validate({"policySelector": SEL, "cpuMillicores": 8000, "memoryMiB": 4096})
    assert spec.budget_config() == BudgetConfig(cpu_m=8000, memory_mib=4096, rule="fair", reclaim_below=RECLAIM_BELOW)
    quota = bm.CapacityBudgetSpec.model_validate({"policySelector": SEL, "fromResourceQuota": {"name": "q"}})
    assert quota.budget_config(cpu_m=6000, memory_mib=None).cpu_m == 6000
    with pytest.raises(ValueError, match="not known"):
        quota.budget_config()
    fcfs = bm.CapacityBudgetSpec.model_validate({"policySelector": SEL, "cpuMillicores": 1, "rule": "fcfs"})
    assert fcfs.budget_config().rule == "fcfs"
