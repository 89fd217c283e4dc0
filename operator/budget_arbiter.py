"""The members of one CapacityBudget, decided together each interval, then granted the budget.

Each member policy runs its own reconcile, but the handlers start a namespace's policies
at the same moments (aligned ticks) and their decisions come out of one batch
(:mod:`~rlscale.operator.batchdecide`), so they reach :meth:`BudgetArbiter.grant` within
moments of each other. The arbiter collects the proposals of one budget's members for up
to ``window_s`` (or until every member has asked), runs policy/'s
:func:`~rlscale.policy.budget.arbitrate` once over them, answers each member with its
grant, and writes the budget's status (every member's share, demand, refusal and why).

A member that did not ask this round (its reconcile is late, refused, or finishing a
pending change) is counted at what it holds — the allocation it was last granted, else
what its Deployment holds now — and is granted exactly that: capacity is never handed out
from under a member that did not take part.

Restart-safe by construction: the arbitration keeps no state that decides anything. What
a member holds is read from its Deployment every round; the last grants kept here are only
used for members that did not ask this round, and an operator that restarts starts from
the Deployments again. The budget's status is a report, never read back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from rlscale.operator.budget_models import BudgetMemberStatus, CapacityBudgetSpec, CapacityBudgetStatus
from rlscale.operator.kube import ApiError, KubeApi
from rlscale.operator.observe import TargetError, deployment_view
from rlscale.policy.budget import Arbitration, BudgetConfig, Grant, MemberRequest, arbitrate, grantable_cpu_m

log = logging.getLogger(__name__)

BudgetKey = tuple[str, str]  # (namespace, budget name)


@dataclass(frozen=True, slots=True)
class Membership:
    """A policy's budget: its name and spec, and every member policy's name (this one included)."""

    budget: str
    spec: CapacityBudgetSpec
    members: tuple[str, ...]
    generation: int = 0
    #: (member, Deployment, first managed container) of the members whose target is known.
    targets: tuple[tuple[str, str, str], ...] = ()


@dataclass
class _Round:
    membership: Membership
    requests: dict[str, MemberRequest] = field(default_factory=dict)
    futures: dict[str, asyncio.Future[Grant]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


def quota_totals(quota: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """A ResourceQuota's ``hard`` limits.cpu (millicores) and limits.memory (MiB); None where absent."""
    hard = (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard") or {}
    cpu = hard.get("limits.cpu")
    mem = hard.get("limits.memory")
    cpu_m = int(Decimal(parse_quantity(cpu)) * 1000) if cpu is not None else None
    mem_mib = int(Decimal(parse_quantity(mem)) / (1024 * 1024)) if mem is not None else None
    return cpu_m, mem_mib


class BudgetArbiter:
    """Collects the proposals of each budget's members and grants them together; see the module docstring."""

    def __init__(
        self,
        kube: KubeApi,
        *,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.window_s = window_s
        self.clock = clock
        self._rounds: dict[BudgetKey, _Round] = {}
        #: What each member was last granted: (replicas, cpu limit, memory limit), for members absent from a round.
        self._held: dict[BudgetKey, dict[str, MemberRequest]] = {}
        #: The last total read from a budget's ResourceQuota.
        self._quota_cpu: dict[BudgetKey, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def forget(self, namespace: str, budget: str) -> None:
        self._held.pop((namespace, budget), None)

    def ceiling(self, namespace: str, membership: Membership, me: MemberRequest) -> int | None:
        """The most CPU ``me`` could be granted in this round, for its mask while it decides.

        Its own, the free headroom and the others' spare pods, as of the last arbitration
        (:func:`~rlscale.policy.budget.grantable_cpu_m`); None before any (nothing known yet:
        the arbitration alone holds it to the budget) or when the budget comes from a quota
        not read yet.
        """
        held = self._held.get((namespace, membership.budget))
        cpu_m = (
            membership.spec.cpu_millicores
            if membership.spec.cpu_millicores is not None
            else self._quota_cpu.get((namespace, membership.budget))
        )
        if not held or cpu_m is None:
            return None
        others = [_hold(r) for name, r in held.items() if name != me.name and name in membership.members]
        budget = membership.spec.budget_config(cpu_m=cpu_m)
        return grantable_cpu_m(budget, [*others, me], me.name)

    async def grant(self, namespace: str, membership: Membership, request: MemberRequest) -> Grant:
        """This member's grant in the current round of its budget (waits for the others, at most ``window_s``)."""
        key = (namespace, membership.budget)
        loop = asyncio.get_running_loop()
        rnd = self._rounds.get(key)
        if rnd is None:
            rnd = self._rounds[key] = _Round(membership)
            rnd.timer = loop.call_later(self.window_s, self._close_soon, key)
        elif rnd.membership != membership:
            rnd.membership = membership  # the newest view of the budget wins
        future: asyncio.Future[Grant] = loop.create_future()
        rnd.requests[request.name] = request
        rnd.futures[request.name] = future
        if set(rnd.requests) >= set(rnd.membership.members):
            self._close_soon(key)
        return await future

    def _close_soon(self, key: BudgetKey) -> None:
        rnd = self._rounds.pop(key, None)
        if rnd is None:
            return
        if rnd.timer is not None:
            rnd.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._close(key, rnd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _budget(self, key: BudgetKey, spec: CapacityBudgetSpec) -> BudgetConfig:
        namespace = key[0]
        if spec.from_resource_quota is None:
            return spec.budget_config()
        quota = await self.kube.get_resource_quota(namespace, spec.from_resource_quota.name)
        quota_name = f"ResourceQuota {namespace}/{spec.from_resource_quota.name}"
        if quota is None:
            raise ValueError(f"spec.fromResourceQuota.name: {quota_name} not found")
        cpu_m, mem_mib = quota_totals(quota)
        if cpu_m is None:
            raise ValueError(f"spec.fromResourceQuota.name: {quota_name} has no hard limits.cpu")
        self._quota_cpu[key] = max(cpu_m, 1)
        return spec.budget_config(cpu_m=max(cpu_m, 1), memory_mib=mem_mib)

    async def _close(self, key: BudgetKey, rnd: _Round) -> None:
        namespace, name = key
        asked = dict(rnd.requests)
        try:
            budget = await self._budget(key, rnd.membership.spec)
        except (ValueError, ApiError) as exc:
            # No budget known: nobody may grow (what is held stays), and the budget says why.
            for member, request in asked.items():
                why = f"budget {name} unknown, nothing may grow: {exc}"
                _resolve(rnd.futures[member], _held_grant(request, why))
            await self._write(namespace, name, CapacityBudgetStatus(message=str(exc)))
            return
        held = self._held.setdefault(key, {})
        for member, deployment, container in rnd.membership.targets:
            if member not in asked and member not in held:
                found = await self._holding(namespace, member, deployment, container)
                if found is not None:
                    held[member] = found
        absent = [_hold(held[m]) for m in rnd.membership.members if m not in asked and m in held]
        requests = [asked[m] for m in asked] + absent
        result = arbitrate(budget, requests, order=list(asked) + [a.name for a in absent])
        grants = result.by_name()
        for member, future in rnd.futures.items():
            _resolve(future, grants[member])
        by_request = {r.name: r for r in requests}
        for g in result.grants:
            held[g.name] = replace(
                by_request[g.name],
                replicas=g.replicas,
                cpu_limit_m=g.cpu_limit_m,
                memory_limit_mib=g.memory_limit_mib,
                proposed_replicas=g.replicas,
                proposed_cpu_limit_m=g.cpu_limit_m,
                proposed_memory_limit_mib=g.memory_limit_mib,
            )
        for gone in set(held) - set(rnd.membership.members):
            del held[gone]
        await self._write(namespace, name, self._status(rnd.membership, budget, result))

    async def _holding(self, namespace: str, member: str, deployment: str, container: str) -> MemberRequest | None:
        """What a member that has not taken part yet holds, read from its Deployment (None if unreadable)."""
        try:
            found = await self.kube.get_deployment(namespace, deployment)
            if found is None:
                return None
            view = deployment_view(found, [container])
        except (ApiError, TargetError) as exc:
            log.warning("CapacityBudget member %s/%s: cannot read what it holds: %s", namespace, member, exc)
            return None
        r, c, m = view.replicas, view.primary.cpu_limit_m, view.primary.memory_limit_mib
        return MemberRequest(member, r, c, m, r, c, m)

    def _status(self, membership: Membership, budget: BudgetConfig, result: Arbitration) -> CapacityBudgetStatus:
        return CapacityBudgetStatus(
            observed_generation=membership.generation,
            cpu_millicores=budget.cpu_m,
            memory_mib=budget.memory_mib,
            used_millicores=result.used_cpu_m,
            binding=result.binding,
            last_arbitration=datetime.fromtimestamp(self.clock(), UTC).isoformat().replace("+00:00", "Z"),
            members=[
                BudgetMemberStatus(
                    policy=g.name,
                    replicas=g.replicas,
                    proposed_replicas=g.proposed_replicas,
                    cpu_millicores=g.cpu_m,
                    demand_millicores=g.demand_cpu_m,
                    refused_pods=g.refused_pods,
                    reclaimed_pods=g.reclaimed_pods,
                    limit_refused=g.limit_refused,
                    pressure=round(g.pressure, 3),
                    reason=g.reason,
                )
                for g in sorted(result.grants, key=lambda g: g.name)
            ],
            message=(
                f"{result.used_cpu_m}m of {budget.cpu_m}m CPU held; the members' proposals "
                + ("did not all fit: granted by the " + budget.rule + " rule" if result.binding else "all fit")
            ),
        )

    async def _write(self, namespace: str, name: str, status: CapacityBudgetStatus) -> None:
        try:
            await self.kube.patch_budget_status(namespace, name, status.model_dump(mode="json", exclude_none=True))
        except ApiError as exc:  # a report: the next round writes it again
            log.warning("could not write the status of CapacityBudget %s/%s: %s", namespace, name, exc)


def _hold(request: MemberRequest) -> MemberRequest:
    """The member keeping what it holds."""
    return replace(
        request,
        proposed_replicas=request.replicas,
        proposed_cpu_limit_m=request.cpu_limit_m,
        proposed_memory_limit_mib=request.memory_limit_mib,
        max_reclaim=0,
    )


def _held_grant(request: MemberRequest, why: str) -> Grant:
    """The member keeps what it holds (growth refused) when the budget cannot be known."""
    grows = request.grows
    keep = _hold(request) if grows else request
    return Grant(
        request.name,
        keep.proposed_replicas,
        keep.proposed_cpu_limit_m,
        keep.proposed_memory_limit_mib,
        request.proposed_replicas,
        request.demand_cpu_m,
        request.pressure,
        max(request.proposed_replicas - keep.proposed_replicas, 0),
        grows,
        why if grows else "granted (a shrink or hold needs no budget)",
    )


def _resolve(future: asyncio.Future[Grant], grant: Grant) -> None:
    if not future.done():
        future.set_result(grant)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a budget's ``matchLabels`` select a policy with these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


__all__ = ["BudgetArbiter", "Membership", "quota_totals", "selects"]
