"""The hard limits a user puts on an autoscaler: no model and no baseline can break them.

These are what the ``AutoscalePolicy`` resource's ``spec.limits`` hold. Step limits
follow the HPA's ``behavior`` shape — a move may change the count by the larger of a pod
count and a percentage — so users meet familiar semantics.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ScalingLimits(BaseModel):
    """Bounds, steps, cooldowns and budgets enforced by the safety mask."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(1, ge=0, le=100_000, description="Fewest replicas ever set.")
    max_replicas: int = Field(50, ge=1, le=100_000, description="Most replicas ever set.")
    max_scale_up_pods: int = Field(4, ge=1, description="A scale-up may add this many pods ...")
    max_scale_up_percent: float = Field(
        100.0, ge=0, le=10_000, description="... or this percentage of the current count, whichever is more."
    )
    max_scale_down_pods: int = Field(1, ge=1, description="A scale-down may remove this many pods ...")
    max_scale_down_percent: float = Field(
        50.0, ge=0, le=100, description="... or this percentage of the current count, whichever is more."
    )
    scale_up_cooldown_s: float = Field(0.0, ge=0, le=86_400, description="Wait after a scale-up before the next.")
    scale_down_cooldown_s: float = Field(
        300.0, ge=0, le=86_400, description="Wait after any scaling before a scale-down (damps flapping)."
    )
    limit_change_cooldown_s: float = Field(
        600.0, ge=0, le=86_400, description="Wait between container-limit changes (each one restarts pods)."
    )
    cpu_limit_min_m: int = Field(100, ge=1, description="Lowest CPU limit per container, millicores.")
    cpu_limit_max_m: int = Field(4000, ge=1, description="Highest CPU limit per container, millicores.")
    cpu_limit_step_m: int = Field(250, ge=1, description="One CPU-limit step, millicores.")
    memory_limit_min_mib: int = Field(128, ge=1, description="Lowest memory limit per container, MiB.")
    memory_limit_max_mib: int = Field(8192, ge=1, description="Highest memory limit per container, MiB.")
    memory_limit_step_mib: int = Field(256, ge=1, description="One memory-limit step, MiB.")
    memory_headroom: float = Field(
        1.2, ge=1.0, le=10.0, description="A memory limit may not drop below working set × this factor."
    )
    max_total_cpu_m: int | None = Field(None, ge=1, description="Optional budget: replicas × CPU limit.")
    max_total_memory_mib: int | None = Field(None, ge=1, description="Optional budget: replicas × memory limit.")

    @model_validator(mode="after")
    def _consistent(self) -> ScalingLimits:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if self.cpu_limit_min_m > self.cpu_limit_max_m:
            raise ValueError(
                f"cpu_limit_min_m ({self.cpu_limit_min_m}) must not exceed cpu_limit_max_m ({self.cpu_limit_max_m})"
            )
        if self.memory_limit_min_mib > self.memory_limit_max_mib:
            raise ValueError(
                f"memory_limit_min_mib ({self.memory_limit_min_mib}) must not exceed "
                f"memory_limit_max_mib ({self.memory_limit_max_mib})"
            )
        return self
