"""One reconcile of one AutoscalePolicy: read, decide, actuate, report.

The decision itself is policy/'s :func:`~rlscale.policy.decide.decide`; this module is the
imperative shell around it, in the order the design asks for::

    spec → DecisionConfig + queries ──► refuse (InvalidSpec, conflicts) with a condition, no action
    status.pending ─────────────────► finish a decided-but-unapplied change (restart), no new decision
    Deployment + Prometheus + model ─► Observation (unknown = None) ─► decide(...)
    decision ──► status (pending + new ControllerState) ──► scale / patch limits ──► status (applied)

Writing the new ControllerState and the decided targets *before* touching the Deployment
is what makes a restart exact: the decision counter, the gate's draw counter and the
cooldown times advance exactly once per decision, and a change that was decided but not
confirmed is re-applied (its targets are absolute, so applying it twice is harmless) rather
than decided again. I/O failures never produce an action: no deployment, no action; no
metrics, ``None`` into ``decide``, whose mask forbids scale-downs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rlscale.operator import conditions as cond
from rlscale.operator.actuate import ContainerTarget, container_targets, limits_patch
from rlscale.operator.errors import describe_validation_error
from rlscale.operator.kube import ApiError, KubeApi, NotFound
from rlscale.operator.metrics import OperatorMetrics
from rlscale.operator.models import (
    AutoscalePolicySpec,
    AutoscalePolicyStatus,
    Condition,
    ContainerTargetStatus,
    DecisionStatus,
    MaskedSummary,
    ModelStatus,
    ObservedStatus,
    PendingAction,
    RolloutStatus,
)
from rlscale.operator.modelstore import LoadedModel, ModelStore
from rlscale.operator.observe import TargetError, build_observation, deployment_view
from rlscale.operator.prometheus import Endpoint, PrometheusReader, SignalValues
from rlscale.operator.queries import QueryError, RenderedQuery, Target, build_queries
from rlscale.operator.settings import OperatorSettings
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.model import SPEC_HASH
from rlscale.policy.observation import SIGNAL_READS

#: Posts a Kubernetes Event: (type "Normal"/"Warning", reason, message).
EventSink = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Identity of the policy being reconciled."""

    namespace: str
    name: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Conflicts:
    """Other autoscalers of the same Deployment."""

    hpas: tuple[str, ...] = ()
    owner_policy: str | None = None  # an older AutoscalePolicy that keeps the Deployment


@dataclass(slots=True)
class Outcome:
    """What a reconcile did: the status it wrote, and the decision if one was made."""

    status: dict[str, Any]
    decision: Decision | None = None
    applied: bool = False
    refused: str | None = None
    interval_s: float = 15.0
    events: list[tuple[str, str, str]] = field(default_factory=list)


class SecretError(ValueError):
    """A credential the spec names cannot be read."""


class Reconciler:
    """Everything a reconcile needs, shared by all policies of one operator process."""

    def __init__(
        self,
        kube: KubeApi,
        reader: PrometheusReader,
        models: ModelStore,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.reader = reader
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.clock = clock

    # --- entry point ---------------------------------------------------------------------------------------------

    async def reconcile(
        self,
        ref: PolicyRef,
        spec_raw: Mapping[str, Any],
        status_raw: Mapping[str, Any] | None,
        conflicts: Conflicts = Conflicts(),
        post_event: EventSink | None = None,
    ) -> Outcome:
        """Reconcile once and write the status; returns what happened. Raises nothing for expected trouble."""
        started = time.perf_counter()
        now = self.clock()
        events: list[tuple[str, str, str]] = []

        def event(kind: str, reason: str, message: str) -> None:
            events.append((kind, reason, message))
            if post_event is not None:
                post_event(kind, reason, message)

        previous = _parse_status(status_raw)
        outcome = await self._reconcile(ref, spec_raw, previous, conflicts, now, event)
        outcome.events = events
        self.metrics.reconcile_latency.observe(time.perf_counter() - started)
        return outcome

    async def _reconcile(
        self,
        ref: PolicyRef,
        spec_raw: Mapping[str, Any],
        previous: AutoscalePolicyStatus,
        conflicts: Conflicts,
        now: float,
        event: EventSink,
    ) -> Outcome:
        # 1. The spec, as policy/'s config and validated queries.
        try:
            spec = AutoscalePolicySpec.model_validate(spec_raw)
            config = spec.decision_config()
            endpoint_url = self._prometheus_url(spec)
            queries = build_queries(
                spec.prometheus.queries.model_dump(by_alias=False),
                Target(ref.namespace, spec.target_ref.name, tuple(spec.containers), spec.prometheus.window),
                trusted=self.settings.trust_custom_queries,
            )
        except ValidationError as exc:
            return await self._refuse(ref, previous, now, event, "InvalidSpec", describe_validation_error(exc))
        except QueryError as exc:
            return await self._refuse(ref, previous, now, event, "InvalidQuery", str(exc))
        except ValueError as exc:
            return await self._refuse(ref, previous, now, event, "InvalidPrometheusURL", str(exc))

        # 2. Another autoscaler on the same Deployment: refuse rather than fight it.
        target = spec.target_ref.name
        if conflicts.hpas:
            return await self._refuse(
                ref,
                previous,
                now,
                event,
                "ConflictingHPA",
                f"HorizontalPodAutoscaler {', '.join(sorted(conflicts.hpas))} also scales Deployment {target}; "
                "remove it or this policy",
                interval_s=spec.interval_s,
            )
        if conflicts.owner_policy:
            return await self._refuse(
                ref,
                previous,
                now,
                event,
                "ConflictingPolicy",
                f"AutoscalePolicy {conflicts.owner_policy} (older) already scales Deployment {target}",
                interval_s=spec.interval_s,
            )

        # 3. A change decided before a restart but not confirmed: finish it, decide nothing new.
        if previous.pending is not None:
            return await self._finish_pending(ref, spec, previous, now, event)

        # 4. The target.
        deployment = None
        try:
            deployment = await self.kube.get_deployment(ref.namespace, target)
        except ApiError as exc:
            return await self._refuse(
                ref, previous, now, event, "KubernetesAPIError", str(exc), interval_s=spec.interval_s
            )
        if deployment is None:
            return await self._refuse(
                ref,
                previous,
                now,
                event,
                "TargetNotFound",
                f"spec.targetRef.name: Deployment {ref.namespace}/{target} not found; retrying every "
                f"{spec.interval_s}s",
                interval_s=spec.interval_s,
            )
        try:
            view = deployment_view(deployment, spec.containers)
        except TargetError as exc:
            return await self._refuse(ref, previous, now, event, exc.reason, str(exc), interval_s=spec.interval_s)

        # 5. Metrics (now, and as long ago as the lagged fields ask) and the model, concurrently.
        offsets = tuple(SIGNAL_READS)
        *reads, loaded = await asyncio.gather(
            *(
                self._read_metrics(ref, spec, endpoint_url, tuple(q for q in queries if q.key in keys), now - offset)
                for offset, keys in SIGNAL_READS.items()
            ),
            self._model(ref, spec),
        )
        readings: dict[float, SignalValues] = dict(zip(offsets, reads, strict=True))
        current = readings[0.0]
        obs, unknown = build_observation(now, view, {offset: r.values for offset, r in readings.items()})

        # 6. Decide, from the state stored in status.
        state = self._state(previous, config)
        t0 = time.perf_counter()
        decision, new_state = decide(obs, config, state, loaded.model, model_error=loaded.error)
        self.metrics.decision_latency.observe(time.perf_counter() - t0)
        self.metrics.decisions.labels(decision.source, decision.action).inc()
        for _, rule in decision.masked:
            self.metrics.masked.labels(rule).inc()
        self.metrics.rollout_ratio.labels(ref.namespace, ref.name).set(new_state.gate.ratio)

        # 7. Actuate: record the intent first, then act, then confirm.
        targets = (
            container_targets(view, decision.cpu_limit_m, decision.memory_limit_mib, config.limits)
            if decision.limits_changed
            else ()
        )
        pending = PendingAction(
            number=new_state.decisions,
            created_at=now,
            replicas=decision.replicas if decision.replicas_changed else None,
            containers=[_target_status(t) for t in targets],
        )
        act = decision.changed and not spec.dry_run
        base_conditions = self._decision_conditions(ref, spec, obs, unknown, current, loaded, decision, now)
        status_kwargs: dict[str, Any] = dict(
            ref=ref,
            spec=spec,
            config=config,
            previous=previous,
            obs=obs,
            unknown=unknown,
            loaded=loaded,
            decision=decision,
            state=new_state,
            now=now,
        )
        applied = False
        target_gone = False
        error: str | None = None
        if act:
            await self._write(
                ref, self._status(**status_kwargs, conditions=base_conditions, pending=pending, applied=False)
            )
            try:
                await self._apply(ref.namespace, target, pending)
                applied = True
            except NotFound:
                error = f"Deployment {ref.namespace}/{target} disappeared before the change was applied"
                target_gone = True  # nothing left to apply the pending change to
            except ApiError as exc:
                error = f"applying decision {new_state.decisions} failed, will retry: {exc}"
        conditions = list(base_conditions)
        if error:
            conditions.append(
                cond.make("ScalingActive", False, "ApplyFailed", error, now=now, generation=ref.generation)
            )
            event("Warning", "ApplyFailed", error)
        elif act:
            self._announce(decision, ref, event)
        elif decision.changed and spec.dry_run:
            event("Normal", "DryRun", f"would set {_moves(decision)} ({decision.source}: {decision.action})")
        keep_pending = pending if (act and not applied and not target_gone) else None
        status = self._status(**status_kwargs, conditions=conditions, pending=keep_pending, applied=applied)
        await self._write(ref, status)
        self._transition_events(previous, status, event)
        return Outcome(status=status, decision=decision, applied=applied, interval_s=spec.interval_s)

    # --- pieces --------------------------------------------------------------------------------------------------

    def _prometheus_url(self, spec: AutoscalePolicySpec) -> str:
        url = spec.prometheus.url or self.settings.prometheus_url
        if not url:
            raise ValueError("spec.prometheus.url: not set, and the operator was started without --prometheus-url")
        allow = self.settings.prometheus_url_allowlist
        if allow and not any(url.startswith(prefix) for prefix in allow):
            raise ValueError(
                f"spec.prometheus.url: {url} is not allowed by the operator's Prometheus URL allowlist "
                f"({', '.join(allow)})"
            )
        return url

    @staticmethod
    def _state(previous: AutoscalePolicyStatus, config: DecisionConfig) -> ControllerState:
        if previous.controller_state:
            try:
                return ControllerState.from_dict(previous.controller_state)
            except (KeyError, TypeError, ValueError):
                pass  # an unreadable state (edited by hand?) restarts the controller's memory
        return ControllerState.initial(config)

    async def _endpoint(self, namespace: str, spec: AutoscalePolicySpec, url: str) -> Endpoint:
        auth = spec.prometheus.auth
        token = basic = ca = None
        if auth.bearer_token_secret_ref is not None:
            token = await self._secret_value(
                namespace, auth.bearer_token_secret_ref.name, auth.bearer_token_secret_ref.key, "bearerTokenSecretRef"
            )
        if auth.basic_auth is not None:
            b = auth.basic_auth
            basic = (
                await self._secret_value(namespace, b.secret_name, b.username_key, "basicAuth"),
                await self._secret_value(namespace, b.secret_name, b.password_key, "basicAuth"),
            )
        if auth.ca_secret_ref is not None:
            ca = await self._secret_value(namespace, auth.ca_secret_ref.name, auth.ca_secret_ref.key, "caSecretRef")
        return Endpoint(
            url=url,
            bearer_token=token.strip() if token else None,
            basic_auth=basic,
            ca_pem=ca,
            insecure_skip_verify=auth.insecure_skip_verify,
        )

    async def _secret_value(self, namespace: str, name: str, key: str, field_name: str) -> str:
        secret = await self.kube.get_secret(namespace, name)
        where = f"spec.prometheus.auth.{field_name}"
        if secret is None:
            raise SecretError(f"{where}: Secret {namespace}/{name} not found")
        raw = (secret.get("data") or {}).get(key)
        if raw is None:
            raise SecretError(f"{where}: Secret {namespace}/{name} has no key {key!r}")
        try:
            return base64.b64decode(raw).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise SecretError(f"{where}: Secret {namespace}/{name} key {key!r} is not UTF-8 text") from exc

    async def _read_metrics(
        self,
        ref: PolicyRef,
        spec: AutoscalePolicySpec,
        url: str,
        queries: tuple[RenderedQuery, ...],
        at: float,
    ) -> SignalValues:
        try:
            endpoint = await self._endpoint(ref.namespace, spec, url)
        except (SecretError, ApiError) as exc:
            return SignalValues({q.key: None for q in queries}, {q.key: str(exc) for q in queries}, error=str(exc))
        p = spec.prometheus
        return await self.reader.read(
            endpoint, queries, at=at, timeout_s=p.timeout_s, max_sample_age_s=p.max_sample_age_s
        )

    async def _model(self, ref: PolicyRef, spec: AutoscalePolicySpec) -> LoadedModel:
        m = spec.model
        if m.source == "configMap" and m.config_map_ref is not None:
            try:
                return await self.models.from_configmap(ref.namespace, m.config_map_ref.name, m.config_map_ref.key)
            except ApiError as exc:
                return LoadedModel(f"configMap:{ref.namespace}/{m.config_map_ref.name}", None, str(exc))
        return self.models.builtin()

    async def _apply(self, namespace: str, name: str, pending: PendingAction) -> None:
        # Limits first: a limit change rolls the pods; scaling after it adds pods of the new shape.
        if pending.containers:
            targets = tuple(
                ContainerTarget(c.name, c.cpu_limit_m, c.memory_limit_mib, c.cpu_request_m, c.memory_request_mib)
                for c in pending.containers
            )
            await self.kube.patch_deployment(namespace, name, limits_patch(targets))
            self.metrics.actions_applied.labels("limits").inc()
        if pending.replicas is not None:
            await self.kube.scale_deployment(namespace, name, pending.replicas)
            self.metrics.actions_applied.labels("replicas").inc()

    async def _finish_pending(
        self,
        ref: PolicyRef,
        spec: AutoscalePolicySpec,
        previous: AutoscalePolicyStatus,
        now: float,
        event: EventSink,
    ) -> Outcome:
        pending = previous.pending
        assert pending is not None
        status = previous.model_dump(mode="json", by_alias=True, exclude_none=True)
        status["pending"] = None
        age = now - pending.created_at
        target = spec.target_ref.name
        applied = False
        if spec.dry_run:
            event("Normal", "PendingDropped", f"decision {pending.number} not applied: the policy is now in dryRun")
        elif age > self.settings.pending_expiry_factor * spec.interval_s:
            event(
                "Warning",
                "PendingDropped",
                f"decision {pending.number} was decided {age:.0f}s ago and never confirmed; dropped, not applied",
            )
        else:
            try:
                await self._apply(ref.namespace, target, pending)
                applied = True
                event("Normal", "Resumed", f"applied decision {pending.number} that was decided before a restart")
            except NotFound:
                event("Warning", "PendingDropped", f"Deployment {ref.namespace}/{target} is gone")
            except ApiError as exc:
                event("Warning", "ApplyFailed", f"decision {pending.number}: {exc}; will retry")
                return Outcome(status=status, refused="ApplyFailed", interval_s=spec.interval_s)
        if applied and status.get("lastDecision", {}).get("number") == pending.number:
            status["lastDecision"]["applied"] = True
            if pending.replicas is not None:
                status["replicas"] = pending.replicas
        await self._write(ref, status)
        return Outcome(status=status, applied=applied, interval_s=spec.interval_s)

    async def _write(self, ref: PolicyRef, status: dict[str, Any]) -> None:
        # NotFound: the policy was deleted while we worked; there is nothing to report to.
        with contextlib.suppress(NotFound):
            await self.kube.patch_policy_status(ref.namespace, ref.name, status)

    async def _refuse(
        self,
        ref: PolicyRef,
        previous: AutoscalePolicyStatus,
        now: float,
        event: EventSink,
        reason: str,
        message: str,
        *,
        interval_s: float = 15.0,
    ) -> Outcome:
        """Report why no decision was made; the ControllerState and everything else in status stay as they were."""
        self.metrics.refusals.labels(reason).inc()
        g = ref.generation
        updates = [
            cond.make("Ready", False, reason, message, now=now, generation=g),
            cond.make("ScalingActive", False, reason, message, now=now, generation=g),
        ]
        conditions = cond.merge(previous.conditions, updates)
        status = {
            "observedGeneration": ref.generation,
            "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
        }
        old_ready = next((c for c in previous.conditions if c.type == "Ready"), None)
        if old_ready is None or old_ready.reason != reason or old_ready.message != message[: cond.MAX_MESSAGE - 1]:
            event("Warning", reason, message)
        await self._write(ref, status)
        return Outcome(status=status, refused=reason, interval_s=interval_s)

    def _decision_conditions(
        self,
        ref: PolicyRef,
        spec: AutoscalePolicySpec,
        obs: Observation,
        unknown: list[str],
        current: SignalValues,
        loaded: LoadedModel,
        decision: Decision,
        now: float,
    ) -> list[Condition]:
        g = ref.generation
        out = [cond.make("Ready", True, "DryRun" if spec.dry_run else "Reconciled", "", now=now, generation=g)]
        problems = "; ".join(sorted(current.problems.values()))
        if current.error:
            out.append(
                cond.make("MetricsAvailable", False, "PrometheusUnavailable", current.error, now=now, generation=g)
            )
        elif not obs.metrics_ok:
            out.append(
                cond.make(
                    "MetricsAvailable",
                    False,
                    "CoreMetricsMissing",
                    f"holding (no scale-down, no limit change): {problems or ', '.join(unknown)}",
                    now=now,
                    generation=g,
                )
            )
        else:
            message = f"unknown: {problems}" if problems else "all signals known"
            out.append(cond.make("MetricsAvailable", True, "MetricsRead", message, now=now, generation=g))
        if loaded.model is not None:
            out.append(cond.make("ModelLoaded", True, "Loaded", loaded.source, now=now, generation=g))
        else:
            out.append(
                cond.make(
                    "ModelLoaded",
                    False,
                    "ModelUnavailable",
                    f"the baseline ({spec.baseline.kind}) acts: {loaded.error}",
                    now=now,
                    generation=g,
                )
            )
        if spec.dry_run:
            out.append(
                cond.make("ScalingActive", False, "DryRun", "spec.dryRun: nothing is patched", now=now, generation=g)
            )
        else:
            out.append(
                cond.make(
                    "ScalingActive",
                    True,
                    "Scaling" if decision.changed else "Holding",
                    decision.explanation[: cond.MAX_MESSAGE],
                    now=now,
                    generation=g,
                )
            )
        if decision.enforced_by:
            out.append(
                cond.make(
                    "ScalingLimited",
                    True,
                    "Clamped",
                    f"the decision was clamped by {decision.enforced_by}",
                    now=now,
                    generation=g,
                )
            )
        else:
            out.append(cond.make("ScalingLimited", False, "WithinLimits", "", now=now, generation=g))
        return out

    def _status(
        self,
        *,
        ref: PolicyRef,
        spec: AutoscalePolicySpec,
        config: DecisionConfig,
        previous: AutoscalePolicyStatus,
        obs: Observation,
        unknown: list[str],
        loaded: LoadedModel,
        decision: Decision,
        state: ControllerState,
        now: float,
        conditions: list[Condition],
        pending: PendingAction | None,
        applied: bool,
    ) -> dict[str, Any]:
        gate = state.gate
        masked = Counter(rule for _, rule in decision.masked)
        examples: dict[str, list[str]] = {}
        for action, rule in decision.masked:
            examples.setdefault(rule, [])
            if len(examples[rule]) < 3:
                examples[rule].append(action)
        status = AutoscalePolicyStatus(
            observed_generation=ref.generation,
            conditions=cond.merge(previous.conditions, conditions),
            replicas=decision.replicas if applied or not decision.replicas_changed else decision.previous_replicas,
            ratio=gate.ratio,
            last_action=decision.action,
            last_decision=DecisionStatus(
                number=state.decisions,
                time=cond.rfc3339(now),
                source=decision.source,
                action=decision.action,
                learned_action=decision.learned_action,
                baseline_replicas=decision.baseline_replicas,
                previous_replicas=decision.previous_replicas,
                replicas=decision.replicas,
                previous_cpu_limit_m=decision.previous_cpu_limit_m,
                cpu_limit_m=decision.cpu_limit_m,
                previous_memory_limit_mib=decision.previous_memory_limit_mib,
                memory_limit_mib=decision.memory_limit_mib,
                enforced_by=decision.enforced_by,
                explanation=decision.explanation[:4096],
                masked=[
                    MaskedSummary(rule=rule, count=n, examples=examples[rule]) for rule, n in sorted(masked.items())
                ],
                reward=decision.reward,
                slo_violated=decision.slo_violated,
                applied=applied,
                dry_run=spec.dry_run,
            ),
            observed=ObservedStatus(
                time=cond.rfc3339(now),
                replicas=obs.replicas,
                ready_replicas=obs.ready_replicas,
                cpu_limit_m=obs.cpu_limit_m,
                memory_limit_mib=obs.memory_limit_mib,
                cpu_utilization=obs.cpu_utilization,
                memory_utilization=obs.memory_utilization,
                request_rate=obs.request_rate,
                request_rate_prev=obs.request_rate_prev,
                latency_p50_ms=obs.latency_p50_ms,
                latency_p99_ms=obs.latency_p99_ms,
                latency_p99_prev_ms=obs.latency_p99_prev_ms,
                error_rate=obs.error_rate,
                queue_per_replica=obs.queue_per_replica,
                unknown=unknown,
            ),
            rollout=RolloutStatus(
                mode=config.gate.mode,
                ratio=gate.ratio,
                windows=gate.windows,
                promotions=gate.promotions,
                demotions=gate.demotions,
                last_learned_score=gate.last_learned_score,
                last_baseline_score=gate.last_baseline_score,
                last_verdict=gate.last_verdict,
            ),
            model=ModelStatus(
                source=loaded.source,
                loaded=loaded.model is not None,
                spec_hash=SPEC_HASH if loaded.model is not None else None,
                error=loaded.error,
            ),
            pending=pending,
            controller_state=state.to_dict(),
        )
        out = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        # A merge patch keeps absent keys: clear a finished pending change explicitly.
        out.setdefault("pending", None)
        return out

    @staticmethod
    def _announce(decision: Decision, ref: PolicyRef, event: EventSink) -> None:
        if decision.replicas_changed:
            event(
                "Normal",
                "Scaled",
                f"replicas {decision.previous_replicas}→{decision.replicas} ({decision.source}: {decision.action})",
            )
        if decision.limits_changed:
            event(
                "Normal",
                "LimitsChanged",
                f"cpu {decision.previous_cpu_limit_m}m→{decision.cpu_limit_m}m, memory "
                f"{decision.previous_memory_limit_mib}Mi→{decision.memory_limit_mib}Mi "
                f"({decision.source}: {decision.action})",
            )

    @staticmethod
    def _transition_events(previous: AutoscalePolicyStatus, status: dict[str, Any], event: EventSink) -> None:
        """Warnings when MetricsAvailable or ModelLoaded turn False (once, not on every decision)."""
        old = {c.type: c.status for c in previous.conditions}
        for c in status.get("conditions", []):
            if (
                c["type"] in ("MetricsAvailable", "ModelLoaded")
                and c["status"] == "False"
                and old.get(c["type"]) != "False"
            ):
                event("Warning", c["reason"], c.get("message", ""))


def _target_status(t: ContainerTarget) -> ContainerTargetStatus:
    return ContainerTargetStatus(
        name=t.name,
        cpu_limit_m=t.cpu_limit_m,
        memory_limit_mib=t.memory_limit_mib,
        cpu_request_m=t.cpu_request_m,
        memory_request_mib=t.memory_request_mib,
    )


def _moves(d: Decision) -> str:
    parts = []
    if d.replicas_changed:
        parts.append(f"replicas {d.previous_replicas}→{d.replicas}")
    if d.limits_changed:
        parts.append(f"cpu {d.cpu_limit_m}m, memory {d.memory_limit_mib}Mi")
    return ", ".join(parts)


def _parse_status(raw: Mapping[str, Any] | None) -> AutoscalePolicyStatus:
    """The previous status; a status that does not parse (hand-edited) is treated as empty, except its state."""
    if not raw:
        return AutoscalePolicyStatus()
    try:
        return AutoscalePolicyStatus.model_validate(dict(raw))
    except ValidationError:
        state = raw.get("controllerState")
        return AutoscalePolicyStatus(controller_state=state if isinstance(state, dict) else None)
