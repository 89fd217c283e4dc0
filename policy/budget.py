"""Several workloads, one capacity budget: who gets the capacity when there is not enough.

When several Deployments scale inside one limited budget (a namespace's ResourceQuota, a
team's CPU allowance), independent autoscalers race: whichever asks first gets the
capacity, the rest get ``FailedCreate`` (quota exceeded), with no regard to which service
is nearest its SLO. This module is the pure arbitration step that runs *after* each
member's own :func:`~rlscale.policy.decide.decide`: it takes every member's current
allocation and proposed target and grants targets whose sum stays within the budget.

The budget counts what a ResourceQuota's ``limits.cpu`` / ``limits.memory`` count:
replicas × the container limit, summed over members. Two rules:

* ``fair`` (the coordinated agents): capacity is handed out one pod at a time, each next
  pod to the member whose **pressure per pod** would be highest without it — a member's
  pressure (how far it is past its target utilisation or its latency SLO, see
  :func:`slo_pressure`) spread over the pods it would have. Repeating this is max-min
  fairness over estimated pressure: the most pressed member is relieved first, and no
  member is given a pod while another would be left more pressed. Ties go by name, so
  the result depends on nothing but the members' data (not their order).
* ``fcfs`` (independent autoscalers under a quota, the honest baseline): members are
  served in arrival order, each getting the pods it asked for while they fit; the one
  that asks when the quota is full gets nothing. This is what the ReplicaSet controller
  does: pods are created one by one until the quota refuses the next.

A member whose proposal the conventional baseline made (``MemberRequest.independent``: the
rollout gate gave the interval to the HPA) is granted as an independent HPA under a quota
is, whatever the rule: first come, first served from the free capacity, before the fair
share-out, neither giving nor receiving reclaimed pods. So the gate compares the learned
policy's coordinated intervals with what the HPA really achieves in a shared quota.

Shared by both rules, so they differ only in *who* gets scarce capacity:

* A proposal that does not grow a member's allocation (scale-down, hold) is always
  granted: it frees capacity, and refusing it could only hurt.
* Capacity already held is never taken away: a budget lowered below what is in use
  refuses growth until members shrink, as a ResourceQuota does (it never evicts).
* When the proposals do not all fit, pods come before limit raises: a member's CPU or
  memory limit raise is refused (it restarts every pod, for a bigger share of capacity
  that the others are waiting for), and its pods are granted at its current limit.
* Nobody gets more than it proposed.

:func:`budget_limits` turns a grant into the member's :class:`ScalingLimits` with the
budget in ``max_total_cpu_m``/``max_total_memory_mib``, so the safety mask itself keeps
the member within what it was granted (a learned agent cannot propose beyond it).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlscale.policy.limits import ScalingLimits

BudgetRule = Literal["fair", "fcfs"]
#: The default of ``BudgetConfig.reclaim_below``.
RECLAIM_BELOW = 0.8


class BudgetConfig(BaseModel):
    """One capacity budget shared by several workloads (what a ``CapacityBudget`` holds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_m: int = Field(ge=1, description="Total CPU, replicas × CPU limit summed over members, millicores.")
    memory_mib: int | None = Field(
        None, ge=1, description="Total memory, replicas × memory limit summed over members, MiB (None: not budgeted)."
    )
    rule: BudgetRule = Field("fair", description="fair: max-min over pressure; fcfs: first come, first served.")
    reclaim_below: float = Field(
        RECLAIM_BELOW,
        ge=0,
        le=1,
        description="fair: a pod is taken back from a member only while its pressure per pod stays at or under "
        "this without it (0: never take back; 1 would leave no margin for its own next rise, which delayed "
        "metrics see late).",
    )


@dataclass(frozen=True, slots=True)
class MemberRequest:
    """One member's situation and what its own decision proposes."""

    name: str
    replicas: int
    cpu_limit_m: int
    memory_limit_mib: int
    proposed_replicas: int
    proposed_cpu_limit_m: int
    proposed_memory_limit_mib: int
    #: How pressed the member is, >= 0 (1: at its target); see :func:`slo_pressure`.
    pressure: float = 1.0
    #: A priority multiplier on pressure (> 0): a weight-2 member counts as twice as pressed.
    weight: float = 1.0
    #: Pods the fair rule may take back below the proposal when the budget binds (0: never;
    #: the caller bounds it by the member's scale-down step) ...
    max_reclaim: int = 0
    #: ... and never below this count.
    min_replicas: int = 0
    #: Decided by the conventional baseline (the HPA), not the learned policy: granted as an
    #: independent autoscaler under a quota is, whatever the rule — first come, first served
    #: from the free capacity, before the fair share-out, never asked to give pods back and
    #: never given pods taken from others. The rollout gate then compares the learned policy's
    #: coordinated intervals with what the HPA really does in a quota, not with an HPA that
    #: the coordination helps.
    independent: bool = False

    def spare_pods(self, reclaim_below: float = RECLAIM_BELOW) -> int:
        """Pods beyond what keeps its pressure per pod under ``reclaim_below`` (<= ``max_reclaim``; not the last)."""
        if reclaim_below <= 0:
            return 0
        r = self.proposed_replicas
        keep = max(math.ceil(self.weight * self.pressure * self.replicas / reclaim_below - 1e-9), self.min_replicas, 1)
        return max(min(r - keep, self.max_reclaim), 0)

    @property
    def cpu_m(self) -> int:
        return self.replicas * self.cpu_limit_m

    @property
    def memory_mib(self) -> int:
        return self.replicas * self.memory_limit_mib

    @property
    def demand_cpu_m(self) -> int:
        return self.proposed_replicas * self.proposed_cpu_limit_m

    @property
    def demand_memory_mib(self) -> int:
        return self.proposed_replicas * self.proposed_memory_limit_mib

    @property
    def grows(self) -> bool:
        """Whether the proposal needs capacity the member does not hold (more CPU or more memory)."""
        return self.demand_cpu_m > self.cpu_m or self.demand_memory_mib > self.memory_mib


@dataclass(frozen=True, slots=True)
class Grant:
    """What one member may set, and why."""

    name: str
    replicas: int
    cpu_limit_m: int
    memory_limit_mib: int
    proposed_replicas: int
    demand_cpu_m: int
    pressure: float
    refused_pods: int
    limit_refused: bool
    reason: str
    reclaimed_pods: int = 0

    @property
    def cpu_m(self) -> int:
        return self.replicas * self.cpu_limit_m

    @property
    def memory_mib(self) -> int:
        return self.replicas * self.memory_limit_mib

    @property
    def refused(self) -> bool:
        return self.refused_pods > 0 or self.limit_refused or self.reclaimed_pods > 0


@dataclass(frozen=True, slots=True)
class Arbitration:
    """Every member's grant (in the members' input order) and the budget's use after them."""

    rule: BudgetRule
    cpu_m: int
    memory_mib: int | None
    grants: tuple[Grant, ...]
    binding: bool

    @property
    def used_cpu_m(self) -> int:
        return sum(g.cpu_m for g in self.grants)

    @property
    def used_memory_mib(self) -> int:
        return sum(g.memory_mib for g in self.grants)

    def by_name(self) -> dict[str, Grant]:
        return {g.name: g for g in self.grants}


def slo_pressure(
    cpu_utilization: float | None,
    latency_p99_ms: float | None,
    latency_slo_ms: float,
    target_utilization: float = 0.7,
) -> float:
    """How pressed a service is: the larger of utilisation / target and p99 latency / SLO.

    Both read 1 at the point a service should be scaled at; past it, utilisation says how
    much more capacity the load needs and latency catches a saturated pod (whose
    utilisation cannot read above 1). Unknown metrics read 1 (neither favoured nor starved).
    Capped at 10 so one broken measurement cannot take the whole budget.
    """
    parts: list[float] = []
    if cpu_utilization is not None and math.isfinite(cpu_utilization):
        parts.append(max(cpu_utilization, 0.0) / target_utilization)
    if latency_p99_ms is not None and math.isfinite(latency_p99_ms):
        parts.append(max(latency_p99_ms, 0.0) / latency_slo_ms)
    return min(max(parts), 10.0) if parts else 1.0


def _check(members: Sequence[MemberRequest]) -> None:
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"members: names must be unique, got {names}")
    for m in members:
        if min(m.replicas, m.proposed_replicas) < 0:
            raise ValueError(f"member {m.name}: replicas must be >= 0")
        if min(m.cpu_limit_m, m.proposed_cpu_limit_m, m.memory_limit_mib, m.proposed_memory_limit_mib) < 1:
            raise ValueError(f"member {m.name}: limits must be >= 1")
        if not (m.pressure >= 0 and math.isfinite(m.pressure)):
            raise ValueError(f"member {m.name}: pressure must be finite and >= 0, got {m.pressure}")
        if m.max_reclaim < 0 or m.min_replicas < 0:
            raise ValueError(f"member {m.name}: max_reclaim and min_replicas must be >= 0")
        if not (m.weight > 0 and math.isfinite(m.weight)):
            raise ValueError(f"member {m.name}: weight must be finite and > 0, got {m.weight}")


def arbitrate(
    budget: BudgetConfig, members: Sequence[MemberRequest], order: Sequence[str] | None = None
) -> Arbitration:
    """Grant the members' proposals within ``budget`` by its rule; see the module docstring.

    ``order`` is the arrival order for ``fcfs`` and for ``independent`` members (default:
    the members' order); the fair share-out ignores it. Grants come back in the members' order.

    With the fair rule, members that set ``max_reclaim`` may also be asked to give pods
    back while the budget binds: a pod goes from the member that would be least pressed
    without it (pressure per pod staying at or under ``budget.reclaim_below``) to the most
    pressed member still refused, as long as the latter is past its target (pressure 1). Capacity
    held by a member that is not pressed is the only capacity that can relieve a pressed
    one when the budget is full; independent autoscalers (``fcfs``) never do this.
    """
    _check(members)
    mem_budget = budget.memory_mib
    growing = [m for m in members if m.grows]
    want_cpu = sum(m.demand_cpu_m for m in members)
    want_mem = sum(m.demand_memory_mib for m in members)
    fits_all = want_cpu <= budget.cpu_m and (mem_budget is None or want_mem <= mem_budget)
    grants: dict[str, Grant] = {}
    for m in members:
        if not m.grows:
            grants[m.name] = _grant(m, m.proposed_replicas, m.proposed_cpu_limit_m, m.proposed_memory_limit_mib, "")
    if fits_all or not growing:
        for m in growing:
            grants[m.name] = _grant(m, m.proposed_replicas, m.proposed_cpu_limit_m, m.proposed_memory_limit_mib, "")
        return Arbitration(budget.rule, budget.cpu_m, mem_budget, tuple(grants[m.name] for m in members), False)

    # Binding: growing members keep (at most) their current limits and compete for pods.
    floor: dict[str, int] = {}
    unit: dict[str, tuple[int, int]] = {}
    free = [budget.cpu_m, mem_budget if mem_budget is not None else 0]
    for m in members:
        if not m.grows:
            free[0] -= m.demand_cpu_m
            free[1] -= m.demand_memory_mib
    for m in growing:
        c, mm = min(m.cpu_limit_m, m.proposed_cpu_limit_m), min(m.memory_limit_mib, m.proposed_memory_limit_mib)
        floor[m.name] = min(m.replicas, m.proposed_replicas)
        unit[m.name] = (c, mm)
        free[0] -= floor[m.name] * c
        free[1] -= floor[m.name] * mm
    got = {m.name: 0 for m in growing}
    want = {m.name: max(m.proposed_replicas - floor[m.name], 0) for m in growing}

    def fits(name: str) -> bool:
        c, mm = unit[name]
        return c <= free[0] and (mem_budget is None or mm <= free[1])

    def take(name: str) -> None:
        c, mm = unit[name]
        free[0] -= c
        free[1] -= mm
        got[name] += 1

    by_name = {m.name: m for m in growing}

    def residual(name: str) -> float:
        m = by_name[name]
        return m.weight * m.pressure * max(m.replicas, 1) / max(floor[name] + got[name], 1)

    def fill() -> None:
        # Max-heap on residual pressure; ties by name. A member whose next pod does not fit
        # drops out (pods are whole; a smaller member's pod may still fit).
        heap = [(-residual(n), n) for n in sorted(by_name) if got[n] < want[n]]
        heapq.heapify(heap)
        while heap:
            _, name = heapq.heappop(heap)
            if not fits(name):
                continue
            take(name)
            if got[name] < want[name]:
                heapq.heappush(heap, (-residual(name), name))

    reclaimed = {m.name: 0 for m in members}
    arrival = list(order) if order is not None else [m.name for m in members]
    if sorted(arrival) != sorted(m.name for m in members):
        raise ValueError(f"order: must name every member once, got {arrival}")
    independent = {m.name for m in growing if m.independent or budget.rule == "fcfs"}
    # Independent members (all of them under fcfs) race for the free capacity in arrival order.
    for name in arrival:
        while name in independent and got[name] < want[name] and fits(name):
            take(name)
    for name in independent:
        del by_name[name]
    if budget.rule == "fair":
        fill()
        donors = {
            m.name: m for m in members if not m.grows and not m.independent and m.spare_pods(budget.reclaim_below) > 0
        }
        while donors:
            pressed = [n for n in sorted(by_name) if got[n] < want[n] and residual(n) > 1.0]
            if not pressed:
                break

            # The least pressed donor after giving one more pod gives it.
            def after(name: str) -> float:
                d = donors[name]
                return d.weight * d.pressure * max(d.replicas, 1) / max(d.proposed_replicas - reclaimed[name] - 1, 1)

            name = min(sorted(donors), key=after)
            d = donors[name]
            reclaimed[name] += 1
            free[0] += d.proposed_cpu_limit_m
            free[1] += d.proposed_memory_limit_mib
            if reclaimed[name] >= d.spare_pods(budget.reclaim_below):
                del donors[name]
            fill()
        # A pod taken back but not used (the pressed member's pod did not fit) is returned.
        for name in sorted(reclaimed):
            d = next(m for m in members if m.name == name)
            while (
                reclaimed[name] > 0
                and d.proposed_cpu_limit_m <= free[0]
                and (mem_budget is None or d.proposed_memory_limit_mib <= free[1])
            ):
                reclaimed[name] -= 1
                free[0] -= d.proposed_cpu_limit_m
                free[1] -= d.proposed_memory_limit_mib
        for name, n in reclaimed.items():
            if n:
                d = next(m for m in members if m.name == name)
                r = d.proposed_replicas - n
                why = (
                    f"{n} pods reclaimed: budget {budget.cpu_m}m CPU binds and this member is under its target "
                    f"(pressure {d.pressure:.2f}); fair: pods go to the most pressed member; {r} replicas"
                )
                grants[name] = Grant(
                    name, r, d.proposed_cpu_limit_m, d.proposed_memory_limit_mib, d.proposed_replicas,
                    d.demand_cpu_m, d.pressure, 0, False, why, reclaimed_pods=n,
                )  # fmt: skip

    for m in growing:
        c, mm = unit[m.name]
        r = floor[m.name] + got[m.name]
        limit_refused = (c, mm) != (m.proposed_cpu_limit_m, m.proposed_memory_limit_mib)
        refused = m.proposed_replicas - r
        why = _why(budget, m, r, refused, limit_refused, first_come=m.name in independent)
        grants[m.name] = Grant(
            m.name, r, c, mm, m.proposed_replicas, m.demand_cpu_m, m.pressure, refused, limit_refused, why
        )
    return Arbitration(budget.rule, budget.cpu_m, mem_budget, tuple(grants[m.name] for m in members), True)


def _grant(m: MemberRequest, r: int, c: int, mm: int, why: str) -> Grant:
    return Grant(m.name, r, c, mm, m.proposed_replicas, m.demand_cpu_m, m.pressure, 0, False, why or "granted")


def _why(budget: BudgetConfig, m: MemberRequest, r: int, refused: int, limit_refused: bool, *, first_come: bool) -> str:
    if not first_come:
        rule = "fair: pods go first to the member with the highest pressure per pod"
    elif budget.rule == "fcfs":
        rule = "first come, first served"
    else:
        rule = "first come, first served: the baseline decided, as an independent HPA under a quota"
    parts = []
    if refused > 0:
        parts.append(f"{refused} of {m.proposed_replicas - min(m.replicas, m.proposed_replicas)} new pods refused")
    if limit_refused:
        parts.append("limit raise refused (pods come before limit raises when the budget binds)")
    if not parts:
        return f"granted in full while the budget binds (pressure {m.pressure:.2f}; {rule})"
    return f"{'; '.join(parts)}: budget {budget.cpu_m}m CPU binds (pressure {m.pressure:.2f}; {rule}); {r} replicas"


def budget_limits(limits: ScalingLimits, cpu_m: int, memory_mib: int | None = None) -> ScalingLimits:
    """``limits`` with the member's share of a budget as its own CPU (and memory) budget.

    The safety mask then refuses any action past it, so a policy deciding under this limit
    set cannot propose more than it may have. An existing, tighter budget stays.
    """
    cpu = cpu_m if limits.max_total_cpu_m is None else min(limits.max_total_cpu_m, cpu_m)
    update: dict[str, int | None] = {"max_total_cpu_m": max(cpu, 1)}
    if memory_mib is not None:
        mem = memory_mib if limits.max_total_memory_mib is None else min(limits.max_total_memory_mib, memory_mib)
        update["max_total_memory_mib"] = max(mem, 1)
    return limits.model_copy(update=update)


def scale_down_step(limits: ScalingLimits, replicas: int) -> int:
    """The most pods one scale-down may remove (the mask's step rule): a member's ``max_reclaim``."""
    return max(limits.max_scale_down_pods, math.floor(replicas * limits.max_scale_down_percent / 100.0))


def grantable_cpu_m(budget: BudgetConfig, members: Sequence[MemberRequest], name: str) -> int:
    """CPU member ``name`` could be granted now: what it holds, the free headroom, the others' spare pods.

    The ceiling of its mask's CPU budget (:func:`budget_limits`) while it decides: more could
    never be granted this interval, so proposing it would only be refused.
    """
    own = next(m for m in members if m.name == name)
    free = budget.cpu_m - sum(m.cpu_m for m in members)
    spare = sum(m.spare_pods(budget.reclaim_below) * m.cpu_limit_m for m in members if m.name != name)
    return own.cpu_m + max(free, 0) + spare


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index of non-negative values: 1 when all are equal, 1/n when one has everything.

    Used over members' SLO attainment (share of intervals within the SLO); all zeros read 1
    (equally bad is equal).
    """
    xs = [max(float(v), 0.0) for v in values]
    if not xs:
        raise ValueError("jain_index: give at least one value")
    sq = sum(x * x for x in xs)
    return 1.0 if sq == 0 else sum(xs) ** 2 / (len(xs) * sq)


__all__ = [
    "Arbitration",
    "BudgetConfig",
    "BudgetRule",
    "Grant",
    "MemberRequest",
    "arbitrate",
    "budget_limits",
    "grantable_cpu_m",
    "jain_index",
    "scale_down_step",
    "slo_pressure",
]
