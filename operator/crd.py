"""The CustomResourceDefinition, generated from the pydantic models so the two cannot drift.

Pydantic writes JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3.0
schema. :func:`structural` converts: ``$ref``s are inlined, ``anyOf [X, null]`` becomes
``X`` + ``nullable``, numeric ``exclusiveMinimum: n`` becomes ``minimum: n,
exclusiveMinimum: true``, titles go, free-form dicts become
``x-kubernetes-preserve-unknown-fields``, nested objects with defaults get a default listing their fields' defaults
(so the API server fills their fields in), and each model's ``cel_rules`` become
``x-kubernetes-validations``. ``rlscale crd`` prints the result; ``rlscale crd --write``
regenerates ``operator/crd/autoscalepolicy.yaml`` (a test fails when the file is stale).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import BaseModel

from rlscale.operator import budget_models, models

CRD_PATH = Path(__file__).with_name("crd") / "autoscalepolicy.yaml"
BUDGET_CRD_PATH = Path(__file__).with_name("crd") / "capacitybudget.yaml"


def _cel_rules_by_title() -> dict[str, list[dict[str, str]]]:
    """CEL rules of every model that has some, keyed by the model's JSON-schema title (its class name)."""
    found: dict[str, list[dict[str, str]]] = {}
    for obj in [*vars(models).values(), *vars(budget_models).values()]:
        cel_rules: tuple[models.CelRule, ...] = getattr(obj, "cel_rules", ()) if isinstance(obj, type) else ()
        if cel_rules and issubclass(obj, BaseModel):
            rules = []
            for r in cel_rules:
                entry = {"rule": r.rule, "message": r.message}
                if r.field_path:
                    entry["fieldPath"] = r.field_path
                rules.append(entry)
            found[obj.__name__] = rules
    return found


def structural(model: type[BaseModel], *, nullable_optionals: bool = False) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (validation mode, CRD field names).

    Optional (``X | None``) fields are simply optional in the spec — a user leaves them out;
    ``nullable_optionals`` marks them ``nullable`` too, for the status the operator writes.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})
    cel = _cel_rules_by_title()

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        node = copy.deepcopy(node)
        if "$ref" in node:
            target = convert(defs[node.pop("$ref").rsplit("/", 1)[-1]])
            # Field-level keys (description, default) override the referenced model's.
            target.update({k: v for k, v in node.items() if k in ("description", "default")})
            node = target
        nullable = False
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            nullable = nullable_optionals
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
            inner = convert(options[0])
            inner.update({k: v for k, v in node.items() if k in ("description", "default")})
            node = inner
        title = node.pop("title", None)
        if "description" in node:
            node["description"] = _plain(node["description"])
        if node.get("default", "x") is None:
            node.pop("default")
        for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in node and not isinstance(node[bound], bool):
                node[flag] = node[bound]
                node[bound] = True
        if node.get("type") == "object" or "properties" in node:
            node["type"] = "object"
            props = node.get("properties", {})
            node["properties"] = {name: convert(p) for name, p in props.items()}
            values = node.get("additionalProperties")
            if not node["properties"] and isinstance(values, dict) and values.get("type") == "string":
                # A map of strings (a label selector's matchLabels): keep its value schema.
                node.pop("properties")
                node["additionalProperties"] = convert(values)
            elif not node["properties"]:
                node.pop("properties")
                node.pop("additionalProperties", None)
                node["x-kubernetes-preserve-unknown-fields"] = True
            else:
                node.pop("additionalProperties", None)
            if not node.get("required"):
                node.pop("required", None)
            if title in cel:
                node["x-kubernetes-validations"] = cel[title]
        if node.get("type") == "array":
            if "prefixItems" in node:
                raise ValueError("fixed-length tuples are not supported in the CRD")
            node["items"] = convert(node.get("items", {}))
            if "x-kubernetes-list-type" not in node and node["items"].get("type") == "string":
                node["x-kubernetes-list-type"] = "atomic"
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if nullable and node.get("default") is None:
            node["nullable"] = True
        return node

    top = convert(raw)
    _default_empty_objects(top)
    return top


def _plain(text: str) -> str:
    """A docstring as plain text for ``kubectl explain``: no Sphinx roles, no RST literals, one paragraph."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"\1", text)
    text = text.replace("``", "")
    return " ".join(text.split())


def _default_empty_objects(node: dict[str, Any]) -> None:
    """Give optional nested objects a default holding their fields' defaults.

    The API server applies a property's default only when its parent object exists, so
    ``spec.limits`` must have a default for ``spec.limits.maxReplicas`` to get its default.
    That default is written out in full (not ``{}``): the API server checks a default
    against the object's CEL rules as written, before nested defaults apply, and refuses
    the CRD when a rule reads a field the default lacks (found by the e2e tier).
    """
    for prop in node.get("properties", {}).values():
        if prop.get("type") == "object":
            _default_empty_objects(prop)
            if "properties" in prop and not prop.get("required") and "default" not in prop and not prop.get("nullable"):
                prop["default"] = {
                    name: copy.deepcopy(child["default"])
                    for name, child in prop["properties"].items()
                    if "default" in child
                }
        elif prop.get("type") == "array" and prop["items"].get("type") == "object":
            _default_empty_objects(prop["items"])


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: Sequence[str],
    columns: list[dict[str, str]],
    description: str,
    spec_schema: dict[str, Any],
    status_model: type[BaseModel],
) -> dict[str, Any]:
    """One namespaced CustomResourceDefinition of rlscale's group: one served version with a status subresource."""
    status_schema = structural(status_model, nullable_optionals=True)
    status_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{models.API_GROUP}"},
        "spec": {
            "group": models.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["rlscale"],
            },
            "versions": [
                {
                    "name": models.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_document() -> dict[str, Any]:
    """The AutoscalePolicy CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    return _crd(
        kind=models.KIND,
        plural=models.PLURAL,
        singular=models.SINGULAR,
        short_names=models.SHORT_NAMES,
        columns=[
            {"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.rollout.mode"},
            {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
            {"name": "Last Action", "type": "string", "jsonPath": ".status.lastAction"},
        ],
        description="AutoscalePolicy scales a Deployment with a learned policy behind a "
        "safety mask and a gradual rollout against the HPA baseline.",
        spec_schema=structural(models.AutoscalePolicySpec),
        status_model=models.AutoscalePolicyStatus,
    )


def budget_crd_document() -> dict[str, Any]:
    """The CapacityBudget CustomResourceDefinition (apiextensions.k8s.io/v1), generated the same way."""
    bm = budget_models
    return _crd(
        kind=bm.BUDGET_KIND,
        plural=bm.BUDGET_PLURAL,
        singular=bm.BUDGET_SINGULAR,
        short_names=bm.BUDGET_SHORT_NAMES,
        columns=[
            {"name": "CPU", "type": "integer", "jsonPath": ".status.cpuMillicores"},
            {"name": "Used", "type": "integer", "jsonPath": ".status.usedMillicores"},
            {"name": "Rule", "type": "string", "jsonPath": ".spec.rule"},
            {"name": "Binding", "type": "boolean", "jsonPath": ".status.binding"},
        ],
        description="CapacityBudget shares one CPU/memory budget between the AutoscalePolicies "
        "it selects: their decisions are arbitrated together each interval.",
        spec_schema=structural(bm.CapacityBudgetSpec),
        status_model=bm.CapacityBudgetStatus,
    )


_HEADER = "# Generated from rlscale.operator.{source} by `rlscale crd --write`; do not edit by hand.\n"


def crd_yaml() -> str:
    """The CRD as YAML, with a header saying it is generated."""
    header = _HEADER.format(source="models")
    return header + yaml.safe_dump(crd_document(), sort_keys=False, width=120, allow_unicode=True)


def budget_crd_yaml() -> str:
    """The CapacityBudget CRD as YAML, with a header saying it is generated."""
    header = _HEADER.format(source="budget_models")
    return header + yaml.safe_dump(budget_crd_document(), sort_keys=False, width=120, allow_unicode=True)


@click.command("crd")
@click.option("--write", is_flag=True, help="Write the CRD files in the package instead of printing.")
@click.option(
    "--kind",
    type=click.Choice(["AutoscalePolicy", "CapacityBudget"]),
    default="AutoscalePolicy",
    show_default=True,
    help="Which CRD to print (--write writes both).",
)
def crd_command(write: bool, kind: str) -> None:
    """Print (or --write) the AutoscalePolicy or CapacityBudget CustomResourceDefinition."""
    if write:
        for path, text in ((CRD_PATH, crd_yaml()), (BUDGET_CRD_PATH, budget_crd_yaml())):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            click.echo(f"wrote {path}")
    else:
        click.echo(crd_yaml() if kind == "AutoscalePolicy" else budget_crd_yaml(), nl=False)
