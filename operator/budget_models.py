"""The ``CapacityBudget`` custom resource: several AutoscalePolicies sharing one CPU/memory budget.

Why a resource of its own and not a field on the policy: a budget is a fact about a
*namespace's* capacity shared by several workloads, as a ResourceQuota is; it is read
next to a ResourceQuota (``kubectl get capacitybudget,resourcequota``), owned by whoever
owns the namespace's capacity rather than by each workload's owner, and its status has
one place to say who got what. Its members are the AutoscalePolicies of its namespace
that its ``policySelector`` selects (by label, as a Service selects pods); a policy
selected by no budget behaves exactly as before.

The total is given in ``cpuMillicores`` (and optionally ``memoryMiB``) or read from a
ResourceQuota of the namespace (``fromResourceQuota``: its ``hard["limits.cpu"]`` and
``hard["limits.memory"]``), the quantities the budget counts: replicas × container
limit, summed over members. ``rule`` is :class:`rlscale.policy.budget.BudgetConfig`'s.
Cross-field rules are written both as pydantic validators and as CEL (``cel_rules``), so
the API server refuses a bad budget before the operator sees it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from rlscale.operator.models import CelRule, CrdModel, DnsSubdomain, StatusModel
from rlscale.policy.budget import RECLAIM_BELOW, BudgetConfig

BUDGET_KIND = "CapacityBudget"
BUDGET_PLURAL = "capacitybudgets"
BUDGET_SINGULAR = "capacitybudget"
BUDGET_SHORT_NAMES = ("capb",)

#: A label value (empty allowed, as in Kubernetes).
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
#: Bounds on the budget's totals: a million cores, a billion MiB.
MAX_CPU_MILLICORES = 1_000_000_000
MAX_MEMORY_MIB = 1_000_000_000


class PolicySelector(CrdModel):
    """Which AutoscalePolicies of the namespace are members: those with all of these labels."""

    match_labels: dict[str, LabelValue] = Field(
        description="Label key -> value; a policy with all of them is a member (at least one label)."
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="size(self.matchLabels) >= 1 && size(self.matchLabels) <= 16",
            message="matchLabels must hold between 1 and 16 labels (an empty selector would take every policy)",
            field_path=".matchLabels",
        ),
    )

    @model_validator(mode="after")
    def _some_labels(self) -> PolicySelector:
        if not 1 <= len(self.match_labels) <= 16:
            raise ValueError(
                "matchLabels must hold between 1 and 16 labels (an empty selector would take every policy)"
            )
        return self


class ResourceQuotaRef(CrdModel):
    """A ResourceQuota of the budget's namespace whose ``hard`` limits.cpu / limits.memory are the budget."""

    name: DnsSubdomain = Field(description="The ResourceQuota's name.")


class CapacityBudgetSpec(CrdModel):
    """``spec`` of a CapacityBudget."""

    policy_selector: PolicySelector = Field(description="The member AutoscalePolicies, by label.")
    cpu_millicores: int | None = Field(
        None, ge=1, description="Total CPU, replicas x CPU limit summed over members (or fromResourceQuota)."
    )
    memory_mib: int | None = Field(
        None, ge=1, description="Total memory, replicas x memory limit summed over members; absent: not budgeted."
    )
    from_resource_quota: ResourceQuotaRef | None = Field(
        None, description="Read the totals from this ResourceQuota's hard limits.cpu and limits.memory instead."
    )
    rule: Literal["fair", "fcfs"] = Field(
        "fair",
        description="fair: pods go to the most pressed member first and spare pods are taken back "
        "(max-min over pressure); fcfs: first come, first served, as independent autoscalers under a quota.",
    )
    reclaim_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"fair: take a pod back from a member only while its pressure per pod stays at or under this "
        f"(0: never; default {RECLAIM_BELOW}).",
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.cpuMillicores) != has(self.fromResourceQuota)",
            message="set exactly one of cpuMillicores and fromResourceQuota",
            field_path=".cpuMillicores",
        ),
        CelRule(
            rule="!has(self.fromResourceQuota) || !has(self.memoryMiB)",
            message="memoryMiB comes from the ResourceQuota when fromResourceQuota is set; remove memoryMiB",
            field_path=".memoryMiB",
        ),
        CelRule(
            rule=f"!has(self.cpuMillicores) || self.cpuMillicores <= {MAX_CPU_MILLICORES}",
            message=f"cpuMillicores must be at most {MAX_CPU_MILLICORES}",
            field_path=".cpuMillicores",
        ),
        CelRule(
            rule=f"!has(self.memoryMiB) || self.memoryMiB <= {MAX_MEMORY_MIB}",
            message=f"memoryMiB must be at most {MAX_MEMORY_MIB}",
            field_path=".memoryMiB",
        ),
        CelRule(
            rule="self.rule == 'fair' || !has(self.reclaimBelow)",
            message="reclaimBelow applies to the fair rule only (fcfs never takes pods back)",
            field_path=".reclaimBelow",
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> CapacityBudgetSpec:
        if (self.cpu_millicores is None) == (self.from_resource_quota is None):
            raise ValueError("set exactly one of cpuMillicores and fromResourceQuota")
        if self.from_resource_quota is not None and self.memory_mib is not None:
            raise ValueError("memoryMiB comes from the ResourceQuota when fromResourceQuota is set; remove memoryMiB")
        if self.cpu_millicores is not None and self.cpu_millicores > MAX_CPU_MILLICORES:
            raise ValueError(f"cpuMillicores must be at most {MAX_CPU_MILLICORES}")
        if self.memory_mib is not None and self.memory_mib > MAX_MEMORY_MIB:
            raise ValueError(f"memoryMiB must be at most {MAX_MEMORY_MIB}")
        if self.rule != "fair" and self.reclaim_below is not None:
            raise ValueError("reclaimBelow applies to the fair rule only (fcfs never takes pods back)")
        return self

    def budget_config(self, cpu_m: int | None = None, memory_mib: int | None = None) -> BudgetConfig:
        """policy/'s :class:`BudgetConfig`; ``cpu_m``/``memory_mib`` are the quota's when read from one."""
        cpu = self.cpu_millicores if self.cpu_millicores is not None else cpu_m
        if cpu is None:
            raise ValueError("the budget's CPU total is not known (fromResourceQuota not read yet)")
        return BudgetConfig(
            cpu_m=cpu,
            memory_mib=self.memory_mib if self.memory_mib is not None else memory_mib,
            rule=self.rule,
            reclaim_below=self.reclaim_below if self.reclaim_below is not None else RECLAIM_BELOW,
        )


class BudgetMemberStatus(StatusModel):
    """One member's share in the last arbitration."""

    policy: str
    replicas: int = Field(description="Replicas granted.")
    proposed_replicas: int = Field(description="What the member's own decision proposed.")
    cpu_millicores: int = Field(description="Its share: replicas x CPU limit granted.")
    demand_millicores: int = Field(description="What its proposal would have held.")
    refused_pods: int = 0
    reclaimed_pods: int = 0
    limit_refused: bool = False
    pressure: float = Field(description="max(utilisation / target, p99 / SLO) when decided; 1 = at target.")
    reason: str = ""


class CapacityBudgetStatus(StatusModel):
    """``status`` of a CapacityBudget: the last arbitration, member by member."""

    observed_generation: int | None = None
    cpu_millicores: int | None = Field(None, description="The budget in force (from the spec or the quota).")
    memory_mib: int | None = None
    used_millicores: int | None = Field(None, description="Held by members after the last arbitration.")
    binding: bool | None = Field(None, description="Whether the members' proposals did not all fit.")
    last_arbitration: str | None = Field(None, description="When (RFC 3339).")
    members: list[BudgetMemberStatus] = Field(default_factory=list, max_length=256)
    message: str | None = None
