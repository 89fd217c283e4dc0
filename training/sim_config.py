"""Every parameter of the simulated service, its observation pipeline and its episodes.

One frozen pydantic model, so a training run's simulator is fully described by a JSON
document (written into the exported model's provenance) and a typo in a config file is
an error naming the field. The scaling limits and the objective are the very models the
operator reads from an ``AutoscalePolicy`` (:mod:`rlscale.policy`), not copies: a policy
trained here meets the same bounds and is scored by the same reward in the cluster.

The service model, in one paragraph (docs/simulator.md has the equations): each ready
pod is a small M/M/c queue whose capacity grows with its CPU limit and saturates
(``cpu_saturation_cores``); load beyond capacity builds a fluid backlog that adds
waiting time and overflows (drops) past the queue capacity or the request timeout; new
pods serve only after ``startup_delay_s``; a limit change rolls every pod
(``restart_max_unavailable`` of them down at a time); a pod whose memory working set
(base + per in-flight request) exceeds its limit is OOM-killed, drops its in-flight
requests and restarts. Prometheus-like observations lag ``scrape_delay_steps`` intervals
and carry multiplicative noise. ``cpu_limit_model`` chooses how a sub-core CPU limit shapes
latency: a slower core ("fluid", the default and what the shipped policy was trained on) or,
as the kernel's CFS quota does it, full speed with a wait for the next period once the
quota is spent ("cfs_quota", fitted to the real demo service).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from rlscale.policy.limits import ScalingLimits
from rlscale.policy.reward import Objective


def _multiplier_range(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if not 0 < lo <= hi:
        raise ValueError(f"a multiplier range (lo, hi) must satisfy 0 < lo <= hi, got ({lo}, {hi})")
    return value


#: A per-episode multiplier range ``(lo, hi)``, ``0 < lo <= hi`` (pydantic's error names the field): the load's
#: (the simulator's, and a fine-tune's override) and the initial replicas'.
MultiplierRange = Annotated[tuple[float, float], AfterValidator(_multiplier_range)]


class SimConfig(BaseModel):
    """The simulated service, its metrics pipeline, and how episodes are cut from load series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- decisions and episodes ---------------------------------------------------------
    step_s: float = Field(
        60.0, gt=0, le=3600, description="Decision interval in seconds (one trace row is 60 s; 60 = one per minute)."
    )
    substeps: int = Field(
        4, ge=1, le=60, description="Sub-steps the service dynamics are integrated with inside one decision interval."
    )
    episode_steps: int = Field(1440, ge=1, description="Decisions per training episode (1440 × 60 s = one day).")
    limits: ScalingLimits = Field(default_factory=ScalingLimits, description="Hard limits (the safety mask's).")
    objective: Objective = Field(default_factory=Objective, description="SLO and reward weights (policy's reward).")
    initial_replicas: int | None = Field(
        None,
        ge=0,
        description="Replicas at episode start; None sizes the service for the window's first load at "
        "load_target_utilization (clamped to the limits).",
    )
    initial_cpu_limit_m: int = Field(1000, ge=1, description="Per-container CPU limit at episode start, millicores.")
    initial_memory_limit_mib: int = Field(1024, ge=1, description="Per-container memory limit at episode start, MiB.")

    # --- service: CPU and capacity ----------------------------------------------------
    cpu_per_request_ms: float = Field(
        10.0, gt=0, le=60_000, description="CPU time one request costs, ms (1 core serves 1000/this requests/s)."
    )
    pod_base_cpu_m: float = Field(
        50.0, ge=0, description="CPU an idle pod uses (runtime, probes, GC), millicores; not available to requests."
    )
    cpu_saturation_cores: float = Field(
        2.0,
        gt=0,
        description="Cores beyond which a pod cannot use more CPU (locks, a bounded thread pool): usable cores are a "
        "soft minimum of (limit - base) and this.",
    )
    saturation_sharpness: float = Field(
        4.0, ge=1, le=50, description="How sharply usable cores bend onto cpu_saturation_cores (larger = harder knee)."
    )

    # --- service: latency and queueing ------------------------------------------------
    base_latency_ms: float = Field(
        20.0, ge=0, description="Latency every request has besides CPU and queueing (network, downstream calls), ms."
    )
    rho_cap: float = Field(
        0.98,
        gt=0.5,
        lt=1,
        description="Utilisation at which the stochastic (M/M/c) waiting term stops growing; beyond it the fluid "
        "backlog carries the waiting time.",
    )
    cpu_limit_model: Literal["fluid", "cfs_quota"] = Field(
        "fluid",
        description="How a CPU limit below one core shapes latency. 'fluid': the pod is a slower core (each request "
        "takes cpu_per_request_ms / k), the model the shipped policy was trained on. 'cfs_quota': as the kernel's CFS "
        "quota does it, a request runs at full core speed and waits for the next period when the pod's quota is "
        "spent (fitted to the real demo service; docs/simulator.md). Capacity is k cores either way.",
    )
    cfs_period_ms: float = Field(
        100.0,
        gt=0,
        le=10_000,
        description="CFS bandwidth period, ms (the kernel's and the kubelet's default is 100): a sub-core pod may run "
        "k × this per period, then is stopped for the rest of it. Used only by cpu_limit_model 'cfs_quota'.",
    )
    cfs_dispersion: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Variance over mean of the number of requests a pod gets per CFS period (1 = Poisson arrivals; "
        "below 1 = more regular, e.g. round-robin over pods; above 1 = burstier): sets how often a period's demand "
        "exceeds the quota and how long the backlog across periods grows. Used only by 'cfs_quota'; fitted.",
    )
    queue_capacity_per_replica: float = Field(
        200.0, ge=0, description="Requests one serving pod can hold waiting (accept + worker queue); more are dropped."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Clients give up after this long: backlog that would wait longer is dropped (errors)."
    )
    arrival_noise: float = Field(
        0.05, ge=0, le=2, description="Log-normal σ of the arrival rate per sub-step around the trace's minute value."
    )

    # --- service: pods ------------------------------------------------------------------
    startup_delay_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds from pod creation (or restart) to ready; rounded up to sub-steps."
    )
    restart_max_unavailable: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of pods a limit change takes down at a time (the Deployment's maxUnavailable); the rollout "
        "lasts ceil(replicas / that many) × startup_delay_s.",
    )
    oom_backoff_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="Restart back-off after an OOM kill before the container starts again (the kubelet's first "
        "CrashLoopBackOff step is 10 s), on top of startup_delay_s.",
    )
    memory_base_mib: float = Field(256.0, ge=0, description="Working set of an idle pod, MiB.")
    memory_per_inflight_mib: float = Field(2.0, ge=0, description="Working set added per in-flight request, MiB.")
    memory_spread: float = Field(
        0.1, gt=0, le=2, description="Coefficient of variation of working set across pods (some OOM before others)."
    )

    # --- observations (the Prometheus pipeline) -----------------------------------------
    scrape_delay_steps: int = Field(
        1, ge=0, le=60, description="Metrics seen at a decision describe the interval this many intervals back."
    )
    metric_noise: float = Field(0.05, ge=0, le=2, description="Log-normal σ of multiplicative noise on each metric.")
    metrics_missing_prob: float = Field(
        0.0, ge=0, le=1, description="Chance per decision that Prometheus returns nothing (all metrics unknown)."
    )

    # --- mapping a load series onto the service -----------------------------------------
    target_replicas_p95: float = Field(
        10.0,
        gt=0,
        description="Each series is scaled so its 95th percentile needs this many replicas at initial_cpu_limit_m and "
        "load_target_utilization.",
    )
    load_target_utilization: float = Field(
        0.7, gt=0, le=1, description="Utilisation at which the scaling above counts a replica as needed."
    )
    absolute_rps_per_unit: float | None = Field(
        None,
        gt=0,
        description="If set, a series value v means v × this requests/s (1/60 for requests per minute), and "
        "target_replicas_p95 is ignored: for experiments at a known absolute load.",
    )
    load_scale_range: MultiplierRange = Field(
        (1.0, 1.0), description="Per-episode load multiplier drawn uniformly from [lo, hi] (1, 1 = as scaled)."
    )
    initial_replicas_range: MultiplierRange = Field(
        (1.0, 1.0),
        description="Per-episode multiplier on the sized initial replicas, log-uniform in [lo, hi] (1, 1 = sized "
        "exactly; only with initial_replicas None): exploring starts, so a policy meets Deployments found "
        "oversized (after a burst, or when the operator takes one over) and learns to shed them.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        lim = self.limits
        if self.initial_replicas is not None and not lim.min_replicas <= self.initial_replicas <= lim.max_replicas:
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must be within limits "
                f"[{lim.min_replicas}, {lim.max_replicas}]"
            )
        if self.initial_replicas is not None and self.initial_replicas_range != (1.0, 1.0):
            raise ValueError(
                f"initial_replicas_range ({self.initial_replicas_range}) multiplies the sized start: it needs "
                f"initial_replicas unset, got {self.initial_replicas}"
            )
        if not lim.cpu_limit_min_m <= self.initial_cpu_limit_m <= lim.cpu_limit_max_m:
            raise ValueError(
                f"initial_cpu_limit_m ({self.initial_cpu_limit_m}) must be within limits "
                f"[{lim.cpu_limit_min_m}, {lim.cpu_limit_max_m}]"
            )
        if not lim.memory_limit_min_mib <= self.initial_memory_limit_mib <= lim.memory_limit_max_mib:
            raise ValueError(
                f"initial_memory_limit_mib ({self.initial_memory_limit_mib}) must be within limits "
                f"[{lim.memory_limit_min_mib}, {lim.memory_limit_max_mib}]"
            )
        if self.initial_cpu_limit_m <= self.pod_base_cpu_m:
            raise ValueError(
                f"initial_cpu_limit_m ({self.initial_cpu_limit_m}) must exceed pod_base_cpu_m ({self.pod_base_cpu_m}), "
                "or the initial pods could serve nothing"
            )
        return self

    # --- derived quantities (used by the simulator and by docs/tests) ----------------
    @property
    def dt_s(self) -> float:
        """Length of one sub-step, seconds."""
        return self.step_s / self.substeps

    @property
    def startup_substeps(self) -> int:
        """Start-up delay in whole sub-steps (rounded up: a pod is never ready early)."""
        return math.ceil(self.startup_delay_s / self.dt_s - 1e-9)

    def usable_cores(self, cpu_limit_m: float) -> float:
        """Cores a pod can put to work on requests at this CPU limit (scalar form of the simulator's curve)."""
        free = max(cpu_limit_m - self.pod_base_cpu_m, 0.0) / 1000.0
        h = self.saturation_sharpness
        return free / (1.0 + (free / self.cpu_saturation_cores) ** h) ** (1.0 / h)

    def pod_capacity_rps(self, cpu_limit_m: float) -> float:
        """Requests/s one ready pod can serve at this CPU limit."""
        return self.usable_cores(cpu_limit_m) * 1000.0 / self.cpu_per_request_ms
