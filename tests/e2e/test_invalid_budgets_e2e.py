"""Invalid CapacityBudgets are refused by the real API server, each with a message naming the field.

The CapacityBudget CRD (operator/crd/capacitybudget.yaml, generated from
rlscale.operator.budget_models) is applied to the session's control plane; every mutation
below of a valid budget must be refused on create (HTTP 422) with the field's path in the
message, and the valid budget itself must be accepted with its defaults filled in.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from rlscale.operator.crd import BUDGET_CRD_PATH

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "rlscale.io", "v1alpha1", "capacitybudgets"

Mutation = Callable[[dict[str, Any]], None]


def _spec(**fields: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                body["spec"].pop(key, None)
            else:
                body["spec"][key] = value

    return mutate


def _valid(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CapacityBudget",
        "metadata": {"name": name},
        "spec": {"policySelector": {"matchLabels": {"budget": "shop"}}, "cpuMillicores": 8000},
    }


#: (id, mutation of a valid budget, the field path the message must name, a fragment it must contain)
REJECTED: list[tuple[str, Mutation, str, str]] = [
    ("missing-selector", _spec(policySelector=None), "spec.policySelector", "Required"),
    ("empty-selector", _spec(policySelector={"matchLabels": {}}), "spec.policySelector.matchLabels", "between 1"),
    ("selector-no-labels", _spec(policySelector={}), "spec.policySelector.matchLabels", "Required"),
    (
        "label-value-bad",
        _spec(policySelector={"matchLabels": {"budget": "not a label!"}}),
        "spec.policySelector.matchLabels",
        "should match",
    ),
    ("no-total", _spec(cpuMillicores=None), "spec.cpuMillicores", "exactly one"),
    (
        "total-twice",
        _spec(fromResourceQuota={"name": "quota"}),
        "spec.cpuMillicores",
        "exactly one",
    ),
    ("cpu-zero", _spec(cpuMillicores=0), "spec.cpuMillicores", "greater than or equal to 1"),
    ("cpu-absurd", _spec(cpuMillicores=10**12), "spec.cpuMillicores", "at most"),
    ("cpu-wrong-type", _spec(cpuMillicores="8 cores"), "spec.cpuMillicores", "integer"),
    ("memory-zero", _spec(memoryMiB=0), "spec.memoryMiB", "greater than or equal to 1"),
    (
        "memory-with-quota",
        _spec(cpuMillicores=None, fromResourceQuota={"name": "quota"}, memoryMiB=1024),
        "spec.memoryMiB",
        "comes from the ResourceQuota",
    ),
    (
        "quota-bad-name",
        _spec(cpuMillicores=None, fromResourceQuota={"name": "Not_A_Name"}),
        "spec.fromResourceQuota.name",
        "should match",
    ),
    ("rule-unknown", _spec(rule="priority"), "spec.rule", "Unsupported"),
    ("reclaim-above-one", _spec(reclaimBelow=1.5), "spec.reclaimBelow", "less than or equal to 1"),
    ("reclaim-with-fcfs", _spec(rule="fcfs", reclaimBelow=0.5), "spec.reclaimBelow", "fair rule only"),
    ("spec-missing", lambda b: b.pop("spec"), "spec", "Required"),
]


@pytest.fixture(scope="module")
def budget_crd(admin_api: client.ApiClient) -> None:
    """The CapacityBudget CRD on the session's API server, established."""
    ext = client.ApiextensionsV1Api(admin_api)
    body = yaml.safe_load(BUDGET_CRD_PATH.read_text())
    name = body["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = ext.read_custom_resource_definition(name).status
        if any(c.type == "Established" and c.status == "True" for c in (status.conditions or [])):
            # Discovery catches up a moment after Established.
            time.sleep(1)
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} not established in 30 s")


def test_the_valid_budget_is_accepted_with_defaults(
    admin_api: client.ApiClient, namespace: str, budget_crd: None
) -> None:
    api = client.CustomObjectsApi(admin_api)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _valid("ok"))
    assert created["spec"]["rule"] == "fair"
    assert created["spec"]["cpuMillicores"] == 8000


@pytest.mark.parametrize(("case", "mutate", "field", "fragment"), REJECTED, ids=[r[0] for r in REJECTED])
def test_invalid_budget_is_refused_naming_the_field(
    admin_api: client.ApiClient,
    namespace: str,
    budget_crd: None,
    case: str,
    mutate: Mutation,
    field: str,
    fragment: str,
) -> None:
    body = copy.deepcopy(_valid(f"bad-{case}"))
    mutate(body)
    api = client.CustomObjectsApi(admin_api)
    with pytest.raises(ApiException) as raised:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert raised.value.status == 422, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert field in message, message
    assert fragment in message, message


def test_at_least_ten_invalid_budgets() -> None:
    assert len(REJECTED) >= 10
