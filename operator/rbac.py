"""Every Kubernetes API call the operator makes: the source of the chart's ClusterRole.

Kept next to the code so a change to what the operator calls is a change to this list in
the same commit. ``tests/operator/test_rbac.py`` records the requests the operator sends
to the kmock API emulator and fails when one is not listed here (or when a listed one is
never made, for the calls those tests exercise). The install engineer renders the Helm
chart's ClusterRole from :func:`cluster_role_rules`, and the e2e tier checks it against
the real API server's audit log.

Two groups of calls exist: the operator's own (reading the target, scaling it, writing
status, reading model ConfigMaps and Prometheus credentials) and Kopf's (watching the
custom resources and the API's shape, posting events, peering between replicas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete"]


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One (apiGroup, resource, subresource) and the verbs used on it, with the reason."""

    group: str
    resource: str
    verbs: tuple[Verb, ...]
    why: str
    subresource: str = ""
    #: "kopf" when Kopf itself makes the call; "operator" for rlscale's own code.
    caller: Literal["operator", "kopf"] = "operator"
    #: Only when the operator runs with peering (``--peering NAME``), not ``--standalone``.
    peering_only: bool = False
    #: Only when replicas share the policies (``--shard-identity``, the chart's ``replicaCount`` > 1).
    sharding_only: bool = False

    @property
    def rbac_resource(self) -> str:
        """The resource as RBAC spells it, e.g. ``deployments/scale``."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


API_CALLS: tuple[ApiCall, ...] = (
    # --- the operator's own calls ---
    ApiCall("apps", "deployments", ("get",), "read replicas, ready replicas and the managed containers' limits"),
    ApiCall("apps", "deployments", ("patch",), "set CPU/memory limits of the named containers (strategic merge)"),
    ApiCall("apps", "deployments", ("patch",), "set replicas through the scale subresource", subresource="scale"),
    ApiCall("rlscale.io", "autoscalepolicies", ("patch",), "write status (decision, rollout state)", "status"),
    ApiCall("", "configmaps", ("get",), "load a model from a ConfigMap's binaryData (spec.model.configMapRef)"),
    ApiCall("", "secrets", ("get",), "read Prometheus credentials and CA (spec.prometheus.auth)"),
    ApiCall("rlscale.io", "capacitybudgets", ("patch",), "write a budget's last arbitration", "status"),
    ApiCall("", "resourcequotas", ("get",), "read a budget's total from a ResourceQuota (spec.fromResourceQuota)"),
    ApiCall(
        "coordination.k8s.io",
        "leases",
        ("list", "create", "patch"),
        "each replica sharing the policies keeps a Lease in the operator's namespace; they list each other's",
        sharding_only=True,
    ),
    # --- Kopf's calls on the operator's behalf ---
    ApiCall("rlscale.io", "autoscalepolicies", ("list", "watch"), "watch policies", caller="kopf"),
    ApiCall(
        "rlscale.io",
        "autoscalepolicies",
        ("patch",),
        "Kopf's finalizer and progress annotations on the policy",
        caller="kopf",
    ),
    ApiCall(
        "rlscale.io",
        "capacitybudgets",
        ("list", "watch"),
        "index the budgets that group policies (CapacityBudget)",
        caller="kopf",
    ),
    ApiCall(
        "autoscaling",
        "horizontalpodautoscalers",
        ("list", "watch"),
        "index HPAs to refuse a Deployment another autoscaler already scales",
        caller="kopf",
    ),
    ApiCall("", "events", ("create",), "Kubernetes Events for actions and refusals", caller="kopf"),
    ApiCall(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "Kopf notices when the AutoscalePolicy CRD appears or changes",
        caller="kopf",
    ),
    ApiCall("", "namespaces", ("list", "watch"), "Kopf resolves --namespace glob patterns", caller="kopf"),
    ApiCall(
        "kopf.dev",
        "clusterkopfpeerings",
        ("list", "watch", "patch"),
        "peering between operator replicas (--all-namespaces)",
        caller="kopf",
        peering_only=True,
    ),
    ApiCall(
        "kopf.dev",
        "kopfpeerings",
        ("list", "watch", "patch"),
        "peering between operator replicas (--namespace)",
        caller="kopf",
        peering_only=True,
    ),
)


def cluster_role_rules(*, peering: bool = True, sharding: bool = True) -> list[dict[str, list[str]]]:
    """ClusterRole ``rules``: one rule per (group, resource), verbs merged and sorted."""
    merged: dict[tuple[str, str], set[str]] = {}
    for call in API_CALLS:
        if (call.peering_only and not peering) or (call.sharding_only and not sharding):
            continue
        merged.setdefault((call.group, call.rbac_resource), set()).update(call.verbs)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(merged.items())
    ]


def allowed(group: str, resource: str, subresource: str, verb: str) -> bool:
    """Whether the list grants ``verb`` on ``group/resource[/subresource]``."""
    return any(
        c.group == group and c.resource == resource and c.subresource == subresource and verb in c.verbs
        for c in API_CALLS
    )
