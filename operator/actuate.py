"""What to send to the Deployment for a decision: pure patch builders.

Replicas go through the scale subresource (a separate call in :mod:`~rlscale.operator.kube`).
Limits go in a strategic-merge patch whose ``containers`` list holds only the managed
containers, keyed by name, so the API server merges them into the pod template and leaves
every other container — and every other field of these — untouched.

The decision's limits are those of the first managed container; every other managed
container moves by the same number of millicores / MiB, clamped to the same bounds. A
request above its new limit is lowered to the limit (the API server refuses request >
limit), and nothing else about requests changes.

A target is the status model :class:`~rlscale.operator.models.ContainerTarget`: the same
object is written to ``status.pending`` before the patch and read back from it to finish
the change after a restart, so what is recorded and what is applied cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlscale.operator.models import ContainerTarget
from rlscale.operator.observe import DeploymentView
from rlscale.policy.limits import ScalingLimits


def container_targets(
    view: DeploymentView, cpu_limit_m: int, memory_limit_mib: int, limits: ScalingLimits
) -> tuple[ContainerTarget, ...]:
    """New limits for every managed container, given the primary container's decided limits."""
    d_cpu = cpu_limit_m - view.primary.cpu_limit_m
    d_mem = memory_limit_mib - view.primary.memory_limit_mib
    out: list[ContainerTarget] = []
    for i, c in enumerate(view.containers):
        if i == 0:
            cpu, mem = cpu_limit_m, memory_limit_mib
        else:
            cpu = (
                c.cpu_limit_m
                if d_cpu == 0
                else min(max(c.cpu_limit_m + d_cpu, limits.cpu_limit_min_m), limits.cpu_limit_max_m)
            )
            mem = (
                c.memory_limit_mib
                if d_mem == 0
                else min(max(c.memory_limit_mib + d_mem, limits.memory_limit_min_mib), limits.memory_limit_max_mib)
            )
        out.append(
            ContainerTarget(
                name=c.name,
                cpu_limit_m=cpu,
                memory_limit_mib=mem,
                cpu_request_m=cpu if c.cpu_request_m is not None and c.cpu_request_m > cpu else None,
                memory_request_mib=mem if c.memory_request_mib is not None and c.memory_request_mib > mem else None,
            )
        )
    return tuple(out)


def limits_patch(targets: Sequence[ContainerTarget]) -> dict[str, Any]:
    """The strategic-merge patch that sets these limits and nothing else."""
    containers = []
    for t in targets:
        resources: dict[str, Any] = {"limits": {"cpu": f"{t.cpu_limit_m}m", "memory": f"{t.memory_limit_mib}Mi"}}
        requests: dict[str, str] = {}
        if t.cpu_request_m is not None:
            requests["cpu"] = f"{t.cpu_request_m}m"
        if t.memory_request_mib is not None:
            requests["memory"] = f"{t.memory_request_mib}Mi"
        if requests:
            resources["requests"] = requests
        containers.append({"name": t.name, "resources": resources})
    return {"spec": {"template": {"spec": {"containers": containers}}}}
