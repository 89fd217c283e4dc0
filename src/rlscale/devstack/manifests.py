"""Kubernetes manifests the local stack creates: one place for the Deployment shape kwok runs.

The demo and the end-to-end tier both need a Deployment of Guaranteed pods (requests equal
to limits, so the operator's limit changes are what the scheduler sees); only names, counts,
sizes and the image label differ.
"""

from __future__ import annotations

from typing import Any


def guaranteed_deployment(
    name: str,
    *,
    replicas: int,
    cpu: str,
    memory: str,
    container: str,
    image: str,
    labels: dict[str, str],
    namespace: str | None = None,
) -> dict[str, Any]:
    """A Deployment with one Guaranteed container (requests = limits). kwok plays the kubelet,
    so ``image`` is never pulled; it only names what the pods stand for."""
    res = {"cpu": cpu, "memory": memory}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": container, "image": image, "resources": {"requests": dict(res), "limits": dict(res)}}
                    ]
                },
            },
        },
    }


def real_deployment(
    name: str,
    *,
    replicas: int,
    cpu: str,
    memory: str,
    container: str,
    image: str,
    labels: dict[str, str],
    args: list[str],
    port: int,
    namespace: str | None = None,
) -> dict[str, Any]:
    """:func:`guaranteed_deployment` for a real node: a locally imported image (never pulled), the
    container's command, its port, a readiness probe (new pods take traffic only once they
    answer) and a short grace period (scale-downs and rollouts do not wait 30 s)."""
    dep = guaranteed_deployment(
        name, replicas=replicas, cpu=cpu, memory=memory, container=container, image=image, labels=labels,
        namespace=namespace,
    )  # fmt: skip
    pod = dep["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 5
    pod["containers"][0].update(
        {
            "imagePullPolicy": "Never",
            "args": args,
            "ports": [{"containerPort": port, "name": "http"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1, "failureThreshold": 2},
        }
    )
    return dep
