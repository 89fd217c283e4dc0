"""The ``AutoscalePolicy`` custom resource as frozen pydantic models: spec and status.

The spec is *made of* policy/'s configuration models: :class:`LimitsSpec` is
:class:`~rlscale.policy.limits.ScalingLimits` with CRD names, :class:`RolloutSpec` is
:class:`~rlscale.policy.gate.GateConfig`, and so on. Subclassing keeps every range,
default and cross-field validator in one place (policy/); the CRD only renames fields
(:func:`~rlscale.operator.naming.crd_alias`) and adds what only the operator needs: the
target, the containers, Prometheus and the model source. :meth:`AutoscalePolicySpec.decision_config`
converts the spec into the :class:`~rlscale.policy.decide.DecisionConfig` that ``decide`` takes.

The CRD's OpenAPI schema is generated from these models (:mod:`rlscale.operator.crd`), and
the cross-field rules that pydantic checks here are also written as CEL rules
(``cel_rules``) so the API server refuses a bad policy before the operator sees it; a test
evaluates both on the same inputs and proves they agree.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from rlscale.operator.naming import crd_alias
from rlscale.policy.baselines import BaselineConfig, HpaConfig, HpaScalingPolicy
from rlscale.policy.decide import DecisionConfig
from rlscale.policy.gate import GateConfig
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.observation import FieldSource, Observation
from rlscale.policy.reward import Objective, RewardWeights

API_GROUP = "rlscale.io"
API_VERSION = "v1alpha1"
KIND = "AutoscalePolicy"
PLURAL = "autoscalepolicies"
SINGULAR = "autoscalepolicy"
SHORT_NAMES = ("asp",)

#: A DNS-1123 subdomain (Deployment, ConfigMap and Secret names).
DnsSubdomain = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ),
]
#: A DNS-1123 label (container names).
DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
#: A key in a ConfigMap or Secret.
DataKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
#: A Prometheus range duration such as ``1m`` or ``30s`` (one unit, as the templates use it).
PromDuration = Annotated[str, StringConstraints(max_length=16, pattern=r"^[1-9][0-9]{0,5}(ms|s|m|h)$")]
#: A PromQL template; placeholders are documented in :mod:`rlscale.operator.queries`.
QueryTemplate = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class CelRule(BaseModel):
    """One ``x-kubernetes-validations`` entry: the API server checks it on create and update."""

    model_config = ConfigDict(frozen=True)

    rule: str
    message: str
    field_path: str | None = None


class CrdModel(BaseModel):
    """Base of the operator's own CRD models: camelCase names, frozen, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=crd_alias,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


# --- policy/'s models under CRD names ------------------------------------------------------------------------------

_POLICY_CONFIG = ConfigDict(
    alias_generator=crd_alias,
    validate_by_alias=True,
    validate_by_name=False,
    serialize_by_alias=True,
    frozen=True,
    extra="forbid",
)


#: Upper bounds the CRD adds to policy/'s limits (policy/ only bounds these from below).
_MAGNITUDE_CAPS: dict[str, int] = {
    "max_scale_up_pods": 100_000,
    "max_scale_down_pods": 100_000,
    "cpu_limit_min_m": 1_000_000,
    "cpu_limit_max_m": 1_000_000,
    "cpu_limit_step_m": 1_000_000,
    "memory_limit_min_mib": 16_777_216,
    "memory_limit_max_mib": 16_777_216,
    "memory_limit_step_mib": 16_777_216,
    "max_total_cpu_m": 100_000_000_000,
    "max_total_memory_mib": 1_000_000_000_000,
}


class LimitsSpec(ScalingLimits):
    """``spec.limits``: :class:`~rlscale.policy.limits.ScalingLimits` (bounds, steps, cooldowns, budgets)."""

    model_config = _POLICY_CONFIG
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *(
            CelRule(
                rule=f"!has(self.{crd_alias(name)}) || self.{crd_alias(name)} <= {cap}",
                message=f"{crd_alias(name)} must be at most {cap}",
                field_path=f".{crd_alias(name)}",
            )
            for name, cap in _MAGNITUDE_CAPS.items()
        ),
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            field_path=".minReplicas",
        ),
        CelRule(
            rule="self.cpuLimitMinMillicores <= self.cpuLimitMaxMillicores",
            message="cpuLimitMinMillicores must not exceed cpuLimitMaxMillicores",
            field_path=".cpuLimitMinMillicores",
        ),
        CelRule(
            rule="self.memoryLimitMinMiB <= self.memoryLimitMaxMiB",
            message="memoryLimitMinMiB must not exceed memoryLimitMaxMiB",
            field_path=".memoryLimitMinMiB",
        ),
        CelRule(
            rule="!has(self.maxTotalCpuMillicores) || self.maxTotalCpuMillicores >= "
            "self.minReplicas * self.cpuLimitMinMillicores",
            message="maxTotalCpuMillicores must allow minReplicas × cpuLimitMinMillicores",
            field_path=".maxTotalCpuMillicores",
        ),
        CelRule(
            rule="!has(self.maxTotalMemoryMiB) || self.maxTotalMemoryMiB >= self.minReplicas * self.memoryLimitMinMiB",
            message="maxTotalMemoryMiB must allow minReplicas × memoryLimitMinMiB",
            field_path=".maxTotalMemoryMiB",
        ),
    )

    @model_validator(mode="after")
    def _sane_magnitudes(self) -> LimitsSpec:
        # policy/ bounds these from below only; a CRD must refuse absurd values (and keep
        # the CEL budget products below int64) instead of scaling towards them.
        for name in _MAGNITUDE_CAPS:
            cap = _MAGNITUDE_CAPS[name]
            value = getattr(self, name)
            if value is not None and value > cap:
                raise ValueError(f"{crd_alias(name)} must be at most {cap}")
        return self

    @model_validator(mode="after")
    def _budgets_feasible(self) -> LimitsSpec:
        # A budget below the smallest allowed footprint can never be met: refuse it up front
        # instead of letting the mask forbid every scale-up forever.
        if self.max_total_cpu_m is not None and self.max_total_cpu_m < self.min_replicas * self.cpu_limit_min_m:
            raise ValueError("maxTotalCpuMillicores must allow minReplicas × cpuLimitMinMillicores")
        if (
            self.max_total_memory_mib is not None
            and self.max_total_memory_mib < self.min_replicas * self.memory_limit_min_mib
        ):
            raise ValueError("maxTotalMemoryMiB must allow minReplicas × memoryLimitMinMiB")
        return self


class WeightsSpec(RewardWeights):
    """``spec.objective.weights``: :class:`~rlscale.policy.reward.RewardWeights`."""

    model_config = _POLICY_CONFIG


class ObjectiveSpec(Objective):
    """``spec.objective``: :class:`~rlscale.policy.reward.Objective` (latency SLO, error budget, weights)."""

    model_config = _POLICY_CONFIG
    weights: WeightsSpec = Field(default_factory=WeightsSpec)


class HpaPolicySpec(HpaScalingPolicy):
    """One HPA ``behavior`` policy: :class:`~rlscale.policy.baselines.HpaScalingPolicy`."""

    model_config = _POLICY_CONFIG


class HpaSpec(HpaConfig):
    """``spec.baseline.hpa``: the HPA algorithm's knobs, with Kubernetes' defaults."""

    model_config = _POLICY_CONFIG
    scale_up_policies: tuple[HpaPolicySpec, ...] = Field(
        (HpaPolicySpec(type="Pods", value=4, periodSeconds=15), HpaPolicySpec(type="Percent", value=100)),  # type: ignore[call-arg]  # by alias
        min_length=1,
        max_length=8,
    )
    scale_down_policies: tuple[HpaPolicySpec, ...] = Field(
        (HpaPolicySpec(type="Percent", value=100),), min_length=1, max_length=8
    )


class BaselineSpec(BaselineConfig):
    """``spec.baseline``: the conventional policy the learned one is compared with (and falls back to)."""

    model_config = _POLICY_CONFIG
    hpa: HpaSpec = Field(default_factory=HpaSpec)


class RolloutSpec(GateConfig):
    """``spec.rollout``: :class:`~rlscale.policy.gate.GateConfig` (shadow / gradual / full)."""

    model_config = _POLICY_CONFIG
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.minRatio <= self.maxRatio", message="minRatio must not exceed maxRatio", field_path=".minRatio"
        ),
    )


# --- what only the operator needs --------------------------------------------------------------------------------


class TargetRef(CrdModel):
    """The Deployment this policy scales (same namespace as the policy)."""

    api_version: Literal["apps/v1"] = Field("apps/v1", description="Only apps/v1 Deployments are supported.")
    kind: Literal["Deployment"] = Field("Deployment", description="Only Deployments are supported.")
    name: DnsSubdomain = Field(description="Name of the Deployment, in the policy's namespace.")


class SecretKeyRef(CrdModel):
    """A key of a Secret in the policy's namespace."""

    name: DnsSubdomain
    key: DataKey


class ConfigMapKeyRef(CrdModel):
    """A key of a ConfigMap in the policy's namespace."""

    name: DnsSubdomain
    key: DataKey


class BasicAuthSpec(CrdModel):
    """HTTP basic auth for Prometheus, read from a Secret in the policy's namespace."""

    secret_name: DnsSubdomain = Field(description="Secret holding the credentials.")
    username_key: DataKey = Field("username", description="Key of the user name in the Secret.")
    password_key: DataKey = Field("password", description="Key of the password in the Secret.")


class PrometheusAuthSpec(CrdModel):
    """How to authenticate to Prometheus and verify its certificate."""

    bearer_token_secret_ref: SecretKeyRef | None = Field(None, description="Bearer token from a Secret key.")
    basic_auth: BasicAuthSpec | None = Field(None, description="Basic auth from a Secret.")
    ca_secret_ref: SecretKeyRef | None = Field(None, description="PEM CA bundle (Secret key) to verify https.")
    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate (testing only).")
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="!(has(self.bearerTokenSecretRef) && has(self.basicAuth))",
            message="set at most one of bearerTokenSecretRef and basicAuth",
            field_path=".basicAuth",
        ),
    )

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusAuthSpec:
        if self.bearer_token_secret_ref is not None and self.basic_auth is not None:
            raise ValueError("set at most one of bearerTokenSecretRef and basicAuth")
        return self


class QueriesSpec(CrdModel):
    """PromQL templates for each signal; each must evaluate to one series (see docs/crd-reference.md).

    Placeholders: ``{namespace}``, ``{deployment}``, ``{pod_regex}``, ``{container}`` (a
    regex alternation of the managed containers) and ``{window}``. Unless the operator runs
    with ``--trust-custom-queries``, every selector must carry ``namespace="{namespace}"``.
    """

    cpu_usage: QueryTemplate | None = Field(None, description="Mean CPU cores used per pod by the containers.")
    memory_working_set: QueryTemplate | None = Field(
        None, description="Mean working-set bytes per pod of the containers."
    )
    request_rate: QueryTemplate | None = Field(None, description="Requests per second, whole Deployment.")
    error_rate: QueryTemplate | None = Field(None, description="Failed requests / all requests (0..1).")
    latency_p50: QueryTemplate | None = Field(None, description="Median request latency, seconds.")
    latency_p99: QueryTemplate | None = Field(None, description="99th-percentile request latency, seconds.")
    in_flight: QueryTemplate | None = Field(None, description="Requests in flight or queued, whole Deployment.")


class PrometheusSpec(CrdModel):
    """Where the signals come from."""

    url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Prometheus base URL; defaults to the operator's --prometheus-url.",
    )
    timeout_s: float = Field(5.0, ge=0.1, le=60, description="Timeout of one query request.")
    window: PromDuration = Field("1m", description="Rate/lookback window filled into {window}.")
    max_sample_age_s: float = Field(
        120.0, ge=1, le=3600, description="A result whose sample is older than this is treated as unknown."
    )
    auth: PrometheusAuthSpec = Field(default_factory=PrometheusAuthSpec)
    queries: QueriesSpec = Field(default_factory=QueriesSpec)


class ModelSpec(CrdModel):
    """Which learned policy to run."""

    source: Literal["builtin", "configMap"] = Field(
        "builtin", description="builtin: the model shipped with the operator; configMap: a ConfigMap binaryData key."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(None, description="Required when source is configMap.")
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.source != 'configMap' || has(self.configMapRef)",
            message="configMapRef is required when source is configMap",
            field_path=".configMapRef",
        ),
    )

    @model_validator(mode="after")
    def _ref_present(self) -> ModelSpec:
        if self.source == "configMap" and self.config_map_ref is None:
            raise ValueError("configMapRef is required when source is configMap")
        return self


class AutoscalePolicySpec(CrdModel):
    """``spec`` of an AutoscalePolicy."""

    target_ref: TargetRef = Field(description="The Deployment to scale.")
    containers: list[DnsLabel] = Field(
        min_length=1,
        max_length=16,
        description="Containers whose limits may change; the first one's limits are the policy's observation.",
    )
    interval_s: int = Field(15, ge=5, le=3600, description="Seconds between decisions.")
    dry_run: bool = Field(False, description="Decide and report, but patch nothing.")
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.containers.all(c, self.containers.exists_one(d, d == c))",
            message="containers must not repeat a name",
            field_path=".containers",
        ),
    )

    @model_validator(mode="after")
    def _unique_containers(self) -> AutoscalePolicySpec:
        if len(set(self.containers)) != len(self.containers):
            raise ValueError("containers must not repeat a name")
        return self

    def decision_config(self) -> DecisionConfig:
        """The :class:`~rlscale.policy.decide.DecisionConfig` this spec means, as policy/'s own types."""
        return DecisionConfig(
            limits=ScalingLimits.model_validate(self.limits.model_dump(by_alias=False)),
            objective=Objective.model_validate(self.objective.model_dump(by_alias=False)),
            baseline=BaselineConfig.model_validate(self.baseline.model_dump(by_alias=False)),
            gate=GateConfig.model_validate(self.rollout.model_dump(by_alias=False)),
        )


# --- status ------------------------------------------------------------------------------------------------------


class StatusModel(BaseModel):
    """Base of status models: camelCase, frozen; unknown fields are kept out of the schema."""

    model_config = ConfigDict(
        alias_generator=crd_alias,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        frozen=True,
        extra="ignore",
    )


ConditionType = Literal["Ready", "MetricsAvailable", "ModelLoaded", "ScalingActive", "ScalingLimited"]


class Condition(StatusModel):
    """A standard Kubernetes condition (metav1.Condition shape)."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = None


class MaskedSummary(StatusModel):
    """How many actions one mask rule forbade, with a few examples."""

    rule: str
    count: int
    examples: list[str] = Field(default_factory=list, max_length=5)


class DecisionStatus(StatusModel):
    """The last decision, as ``decide`` explained it."""

    number: int = Field(description="Decision counter (ControllerState.decisions).")
    time: str
    source: Literal["learned", "baseline"]
    action: str
    learned_action: str | None = None
    baseline_replicas: int
    previous_replicas: int
    replicas: int
    previous_cpu_limit_m: int
    cpu_limit_m: int
    previous_memory_limit_mib: int
    memory_limit_mib: int
    enforced_by: str | None = None
    explanation: str = Field(max_length=4096)
    masked: list[MaskedSummary] = Field(default_factory=list, max_length=16)
    reward: float | None = None
    slo_violated: bool | None = None
    applied: bool = Field(description="The change reached the Deployment (false in dryRun or when refused).")
    dry_run: bool = False


class ContainerTarget(StatusModel):
    """New limits (and lowered requests) for one managed container."""

    name: str
    cpu_limit_m: int
    memory_limit_mib: int
    cpu_request_m: int | None = None
    memory_request_mib: int | None = None


class PendingAction(StatusModel):
    """A decided change written *before* it is applied, so that a restart finishes it instead of re-deciding.

    Targets are absolute (replicas = N, limit = X), so applying one twice is harmless.
    """

    number: int = Field(description="The decision (ControllerState.decisions) this change belongs to.")
    created_at: float = Field(description="Unix time of the decision; too old a change is dropped, not applied.")
    replicas: int | None = None
    containers: list[ContainerTarget] = Field(default_factory=list, max_length=16)


class RolloutStatus(StatusModel):
    """The rollout gate's public state."""

    mode: str
    ratio: float
    windows: int = 0
    promotions: int = 0
    demotions: int = 0
    last_learned_score: float | None = None
    last_baseline_score: float | None = None
    last_verdict: str = ""
    distrusted: bool = Field(
        False, description="Demoted since its last promotion: the baseline also puts the container limits back."
    )


def _observed_fields() -> dict[str, Any]:
    """``status.observed``'s fields: one per observed field of policy's :class:`Observation`."""
    out: dict[str, Any] = {"time": (str, Field(description="When the operator observed (RFC 3339)."))}
    for f in dataclass_fields(Observation):
        src: FieldSource = f.metadata["source"]
        if f.name == "timestamp":
            continue  # the status says ``time``, in RFC 3339
        about = f"{src.doc[:1].upper()}{src.doc[1:]} ({src.unit})."
        if src.kind == "deployment":
            out[f.name] = (int, Field(description=about))
        else:
            out[f.name] = (float | None, Field(None, description=about))
    return out


if TYPE_CHECKING:
    _ObservedFields = StatusModel
else:
    # Derived, not declared: a field added to the observation appears here (and in the CRD).
    _ObservedFields = create_model("_ObservedFields", __base__=StatusModel, **_observed_fields())


class ObservedStatus(_ObservedFields):
    """What the operator saw at the last decision (``None`` = unknown)."""

    unknown: list[str] = Field(default_factory=list, description="Signals that were missing, stale or invalid.")


class ModelStatus(StatusModel):
    """Which learned policy is loaded, or why none is."""

    source: str
    loaded: bool
    spec_hash: str | None = None
    error: str | None = None


class AutoscalePolicyStatus(StatusModel):
    """``status`` of an AutoscalePolicy. ``controllerState`` is policy/'s ControllerState, verbatim."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    replicas: int | None = None
    ratio: float | None = None
    last_action: str | None = None
    last_decision: DecisionStatus | None = None
    observed: ObservedStatus | None = None
    rollout: RolloutStatus | None = None
    model: ModelStatus | None = None
    pending: PendingAction | None = None
    controller_state: dict[str, Any] | None = Field(
        None, description="policy/'s ControllerState.to_dict(): restored on restart."
    )
