"""kmock's Kubernetes emulator, taught the few API-server behaviours the operator relies on.

kmock stores objects as JSON and merges patches as plain dicts (its docs invite
subclassing for "special" fields). The operator depends on three behaviours of the real
API server that plain merging does not have, so this subclass adds them — and nothing
else, so a test still fails when the operator sends the wrong thing:

* **strategic-merge patches of containers**: ``spec.template.spec.containers`` is merged by
  ``name`` (the patch's containers are merged into the existing ones of the same name;
  others stay), as the API server does for ``application/strategic-merge-patch+json``;
* **generateName**: Kopf posts Events with ``generateName``; the server invents the name;
* **resourceVersion**: each write bumps ``metadata.resourceVersion`` (the model cache keys on it).

It also records, for the RBAC test, every request as (group, resource, subresource, verb).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

_counter = itertools.count(1)

#: Resources the operator's tests serve, with discovery info Kopf reads.
RESOURCES: dict[str, kmock.ResourceInfo] = {
    "rlscale.io/v1alpha1/autoscalepolicies": kmock.ResourceInfo(
        kind="AutoscalePolicy",
        singular="autoscalepolicy",
        namespaced=True,
        verbs={"get", "list", "watch", "patch", "create", "delete", "update"},
        shortnames={"asp"},
        subresources={"status"},
    ),
    "rlscale.io/v1alpha1/capacitybudgets": kmock.ResourceInfo(
        kind="CapacityBudget",
        singular="capacitybudget",
        namespaced=True,
        verbs={"get", "list", "watch", "patch", "create", "delete", "update"},
        shortnames={"capb"},
        subresources={"status"},
    ),
    "v1/resourcequotas": kmock.ResourceInfo(
        kind="ResourceQuota", singular="resourcequota", namespaced=True, verbs={"get", "list", "watch", "create"}
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        singular="deployment",
        namespaced=True,
        verbs={"get", "list", "watch", "patch", "create", "delete", "update"},
        subresources={"scale", "status"},
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler",
        singular="horizontalpodautoscaler",
        namespaced=True,
        verbs={"get", "list", "watch", "patch", "create", "delete", "update"},
        subresources={"status"},
    ),
    "v1/events": kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}
    ),
    "v1/configmaps": kmock.ResourceInfo(
        kind="ConfigMap", singular="configmap", namespaced=True, verbs={"get", "list", "watch", "create"}
    ),
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs={"get", "list", "watch"},
    ),
    "v1/secrets": kmock.ResourceInfo(
        kind="Secret", singular="secret", namespaced=True, verbs={"get", "list", "watch", "create"}
    ),
}

_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}


def _merge_containers(old: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strategic merge of a container list keyed by ``name`` (recursive dict merge per container)."""

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(a)
        for k, v in b.items():
            if v is None:
                out.pop(k, None)
            elif isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out

    by_name = {c.get("name"): c for c in patch}
    merged = [merge(c, by_name.pop(c.get("name"))) if c.get("name") in by_name else c for c in old]
    return merged + list(by_name.values())


@attrs.define(kw_only=True)
class OperatorEmulator(kmock.KubernetesEmulator):
    """The emulator plus strategic-merge containers, generateName and resourceVersion."""

    calls: list[tuple[str, str, str, str]] = attrs.field(factory=list, init=False)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None:
            verb = _VERBS.get(request.action) if request.action is not None else None
            if request.method == kmock.method.PATCH:
                verb = "patch"
            elif request.method == kmock.method.PUT:
                verb = "update"
            if verb:
                self.calls.append((request.resource.group, request.resource.plural, request.subresource or "", verb))
            data = request.data if isinstance(request.data, dict) else None
            if data is not None and request.method in (kmock.method.POST, kmock.method.PATCH):
                meta = data.setdefault("metadata", {}) if request.method == kmock.method.POST else data.get("metadata")
                if request.method == kmock.method.POST and not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{next(_counter):06d}"
                if request.method == kmock.method.POST:
                    meta.setdefault("resourceVersion", str(next(_counter)))
                    meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
                elif request.name is not None:
                    data.setdefault("metadata", {})["resourceVersion"] = str(next(_counter))
                content_type = request.headers.get("Content-Type", "")
                if (
                    request.method == kmock.method.PATCH
                    and "strategic-merge-patch" in content_type
                    and request.resource.plural == "deployments"
                    and not request.subresource
                ):
                    key = (request.resource, request.namespace, request.name)
                    containers = data.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
                    if key in self.objects and containers is not None:
                        current = self.objects[key].raw
                        old = current.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
                        data["spec"]["template"]["spec"]["containers"] = _merge_containers(old, containers)
        return await super()._handle(request)


def deployment(name: str, namespace: str, *, replicas: int = 2, ready: int | None = None) -> dict[str, Any]:
    """A Deployment with an app container (limits set) and a sidecar the operator must not touch."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example/app:1",
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "512Mi"},
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                            },
                        },
                        {
                            "name": "sidecar",
                            "image": "example/sidecar:1",
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                        },
                    ]
                },
            },
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": replicas if ready is None else ready,
            "observedGeneration": 1,
        },
    }


def policy(name: str, namespace: str, target: str, prometheus_url: str, **spec: Any) -> dict[str, Any]:
    """An AutoscalePolicy body (only the fields a user must set, plus overrides)."""
    body_spec: dict[str, Any] = {
        "targetRef": {"name": target},
        "containers": ["app"],
        "intervalSeconds": 5,
        "prometheus": {"url": prometheus_url, "timeoutSeconds": 2},
    }
    body_spec.update(spec)
    return {
        "apiVersion": "rlscale.io/v1alpha1",
        "kind": "AutoscalePolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": body_spec,
    }
