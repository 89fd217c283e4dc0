"""Operator-wide settings: what the cluster admin decides, from flags or ``RLSCALE_*`` environment variables.

These are not per-policy: a namespaced user edits AutoscalePolicies, the cluster admin
starts the operator. Anything that widens what a policy may do (trusting arbitrary
PromQL, which Prometheus URLs a policy may point the operator at) lives here.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Settings of one operator process."""

    model_config = SettingsConfigDict(env_prefix="RLSCALE_", frozen=True, extra="forbid")

    trust_custom_queries: bool = Field(
        False, description="Accept any PromQL in spec.prometheus.queries (no namespace-scope check)."
    )
    prometheus_url: str | None = Field(None, description="Prometheus used by policies that set no spec.prometheus.url.")
    prometheus_url_allowlist: tuple[str, ...] = Field(
        (), description="If set, a policy's Prometheus URL must start with one of these prefixes."
    )
    metrics_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics (0 = do not serve).")
    metrics_addr: str = Field("0.0.0.0", description="Address /metrics listens on.")
    workers: int = Field(8, ge=1, le=64, description="Threads for Kubernetes and Prometheus calls.")
    model_refresh_s: float = Field(60.0, ge=1, le=3600, description="How often a ConfigMap model is re-read.")
    start_spread: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Spread first reconciles after a start over this fraction of each policy's interval "
        "(0 = all at once).",
    )
    pending_expiry_factor: float = Field(
        3.0,
        ge=1,
        le=100,
        description="A decided-but-unapplied change older than this many intervals is dropped, not applied, "
        "on restart.",
    )

    align_ticks: bool = Field(
        True,
        description="Reconcile every policy of a namespace with the same interval at the same moments (a phase "
        "per namespace), so their Prometheus reads and decisions are batched; off, or with --start-spread 0: "
        "each policy on its own schedule.",
    )
    batch_reads: bool = Field(
        True,
        description="Read the default PromQL templates with one query per namespace and evaluation time, shared "
        "by its policies (custom templates are still read per policy).",
    )
    batch_decisions: bool = Field(
        True, description="Decide the policies due together in one decide_batch call (one ONNX run per model)."
    )
    status_heartbeat_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Write a policy's status when something a user sees changes, else at most this often "
        "(0 = after every reconcile, so a SIGKILL loses no decision; 60 recommended for thousands of policies).",
    )

    shard_identity: str | None = Field(
        None,
        description="Share the policies with the other replicas that run with a --shard-identity (each its own, "
        "e.g. the pod name), by a stable hash; unset: this replica owns every policy.",
    )
    shard_namespace: str | None = Field(
        None, description="Namespace of the replicas' shard Leases (the operator's own); needed with --shard-identity."
    )
    shard_lease_s: float = Field(
        10.0,
        ge=2,
        le=300,
        description="A replica that stops renewing its Lease loses its policies after this long (keep it below "
        "the policies' interval: they are taken over within two intervals).",
    )

    @field_validator("prometheus_url_allowlist", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @model_validator(mode="after")
    def _shard_namespace_set(self) -> OperatorSettings:
        if self.shard_identity and not self.shard_namespace:
            raise ValueError("shard_namespace: required with shard_identity (where the replicas' Leases live)")
        return self
