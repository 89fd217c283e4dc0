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

Each step gets the reconcile's :class:`~rlscale.operator.report.Tick` (the policy, its
validated spec, the previous status, the time, the Event sink). What the steps report —
status, conditions, Events — is rendered by :mod:`~rlscale.operator.report`; which
Prometheus to ask and with which credentials, by :mod:`~rlscale.operator.prometheus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rlscale.operator import report
from rlscale.operator.actuate import container_targets, limits_patch
from rlscale.operator.batchdecide import DecisionBatcher
from rlscale.operator.batchread import BatchReader
from rlscale.operator.budget_arbiter import BudgetArbiter, Membership
from rlscale.operator.errors import describe_validation_error
from rlscale.operator.kube import ApiError, KubeApi, NotFound
from rlscale.operator.metrics import OperatorMetrics
from rlscale.operator.models import AutoscalePolicySpec, Condition, PendingAction
from rlscale.operator.modelstore import LoadedModel, ModelStore
from rlscale.operator.observe import DeploymentView, TargetError, build_observation, deployment_view
from rlscale.operator.prometheus import (
    PrometheusReader,
    SecretError,
    SignalValues,
    duration_s,
    endpoint_url,
    resolve_endpoint,
)
from rlscale.operator.queries import QueryError, RenderedQuery, Target, build_queries
from rlscale.operator.report import EventSink, PolicyRef, Tick
from rlscale.operator.settings import OperatorSettings
from rlscale.policy.budget import MemberRequest, budget_limits, scale_down_step, slo_pressure
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, decide, regrant
from rlscale.policy.observation import SIGNAL_READS, Observation

__all__ = ["Conflicts", "EventSink", "Outcome", "PolicyRef", "Reconciler", "races_as_independent_hpa"]


def races_as_independent_hpa(decision: Decision) -> bool:
    """Whether a budget grants this decision as an independent HPA under a quota (first come, first served).

    Only where the gradual rollout gate is comparing the two: an interval the gate gave to
    the baseline while a model was there to choose. Those intervals are the gate's measure
    of the HPA, and an HPA without rlscale gets no coordination in a shared quota; scoring
    it with the fair rule's help would compare the learned policy with an HPA that does not
    exist. Without a model, or in ``shadow``/``full`` mode, the budget's own rule grants
    every member (a budget of HPA-only policies is still arbitrated fairly).
    """
    return decision.source == "baseline" and decision.gate_mode == "gradual" and decision.learned_action is not None


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
        batches: BatchReader | None = None,
        decider: DecisionBatcher | None = None,
        budgets: BudgetArbiter | None = None,
    ) -> None:
        self.kube = kube
        self.reader = reader
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.batches = batches or BatchReader(
            reader, on_query=lambda: metrics.prometheus_requests.labels("batch").inc()
        )
        self.decider = decider or DecisionBatcher(observe=self._observe_batch)
        self.budgets = budgets or BudgetArbiter(kube, clock=clock)
        #: When each policy's status was last written, and what a user could see in it (see _write_status).
        self._written: dict[tuple[str, str], tuple[float, str]] = {}

    def _observe_batch(self, seconds: float, size: int) -> None:
        self.metrics.decision_latency.observe(seconds)
        self.metrics.decision_batch_size.observe(size)

    def forget(self, namespace: str, name: str) -> None:
        """The policy is gone (or no longer this replica's): drop what is remembered about it."""
        self._written.pop((namespace, name), None)

    # --- entry point ---------------------------------------------------------------------------------------------

    async def reconcile(
        self,
        ref: PolicyRef,
        spec_raw: Mapping[str, Any],
        status_raw: Mapping[str, Any] | None,
        conflicts: Conflicts = Conflicts(),
        post_event: EventSink | None = None,
        *,
        due: float | None = None,
        final: bool = False,
        budget: Membership | None = None,
    ) -> Outcome:
        """Reconcile once and write the status; returns what happened. Raises nothing for expected trouble.

        ``due`` is when the tick was due (unix time): metrics are evaluated then, so the policies
        of a namespace that were due together share one batched query; default: now. ``final``:
        write the status whatever changed (the policy moves to another replica, which starts
        from what is stored). ``budget``: the CapacityBudget that selects this policy, whose
        members' decisions are granted together (:mod:`~rlscale.operator.budget_arbiter`).
        """
        started = time.perf_counter()
        events: list[tuple[str, str, str]] = []

        def event(kind: str, reason: str, message: str) -> None:
            events.append((kind, reason, message))
            if post_event is not None:
                post_event(kind, reason, message)

        tick = Tick(ref, report.previous_status(status_raw), self.clock(), event, None)
        outcome = await self._reconcile(tick, spec_raw, conflicts, tick.now if due is None else due, final, budget)
        outcome.events = events
        self.metrics.reconcile_latency.observe(time.perf_counter() - started)
        return outcome

    async def _reconcile(
        self,
        unchecked: Tick[None],
        spec_raw: Mapping[str, Any],
        conflicts: Conflicts,
        at: float,
        final: bool,
        budget: Membership | None = None,
    ) -> Outcome:
        ref, now = unchecked.ref, unchecked.now
        # 1. The spec, as policy/'s config and validated queries.
        try:
            spec = AutoscalePolicySpec.model_validate(spec_raw)
            config = spec.decision_config()
            url = endpoint_url(
                spec.prometheus.url, self.settings.prometheus_url, self.settings.prometheus_url_allowlist
            )
            queries = build_queries(
                spec.prometheus.queries.model_dump(by_alias=False),
                Target(ref.namespace, spec.target_ref.name, tuple(spec.containers), spec.prometheus.window),
                trusted=self.settings.trust_custom_queries,
            )
        except ValidationError as exc:
            return await self._refuse(unchecked, "InvalidSpec", describe_validation_error(exc))
        except QueryError as exc:
            return await self._refuse(unchecked, "InvalidQuery", str(exc))
        except ValueError as exc:
            return await self._refuse(unchecked, "InvalidPrometheusURL", str(exc))
        tick = unchecked.with_spec(spec)

        # 2. Another autoscaler on the same Deployment: refuse rather than fight it.
        target = spec.target_ref.name
        if conflicts.hpas:
            return await self._refuse(
                tick,
                "ConflictingHPA",
                f"HorizontalPodAutoscaler {', '.join(sorted(conflicts.hpas))} also scales Deployment {target}; "
                "remove it or this policy",
            )
        if conflicts.owner_policy:
            return await self._refuse(
                tick,
                "ConflictingPolicy",
                f"AutoscalePolicy {conflicts.owner_policy} (older) already scales Deployment {target}",
            )

        # 3. A change decided before a restart but not confirmed: finish it, decide nothing new.
        if tick.previous.pending is not None:
            return await self._finish_pending(tick, tick.previous.pending)

        # 4. The target.
        deployment = None
        try:
            deployment = await self.kube.get_deployment(ref.namespace, target)
        except ApiError as exc:
            return await self._refuse(tick, "KubernetesAPIError", str(exc))
        if deployment is None:
            return await self._refuse(
                tick,
                "TargetNotFound",
                f"spec.targetRef.name: Deployment {ref.namespace}/{target} not found; retrying every "
                f"{spec.interval_s}s",
            )
        try:
            view = deployment_view(deployment, spec.containers)
        except TargetError as exc:
            return await self._refuse(tick, exc.reason, str(exc))

        # 5. Metrics (now, and as long ago as the lagged fields ask) and the model, concurrently.
        #    Signals on their default template come from the namespace's batch, custom ones per policy.
        custom = {k for k, v in spec.prometheus.queries.model_dump(by_alias=False).items() if v}
        batched = (
            frozenset(q.key for q in queries if q.key not in custom and self.batches.batchable(q.key))
            if self.settings.batch_reads
            else frozenset()
        )
        offsets = tuple(SIGNAL_READS)
        reads, loaded = await asyncio.gather(
            asyncio.gather(
                *(
                    self._read_metrics(tick, url, tuple(q for q in queries if q.key in keys), batched, at - offset)
                    for offset, keys in SIGNAL_READS.items()
                )
            ),
            self._model(tick),
        )
        readings: dict[float, SignalValues] = dict(zip(offsets, reads, strict=True))
        current = readings[0.0]
        obs, unknown = build_observation(now, view, {offset: r.values for offset, r in readings.items()})

        # 6. Decide, from the state stored in status; in a budget, within what could be granted.
        state = self._state(tick, config)
        member: MemberRequest | None = None  # computed once: the mask's ceiling and the grant both need it
        if budget is not None:
            member = self._member(tick, budget, view, obs, config)
            config = self._budget_config(tick, budget, member, config)
        if self.settings.batch_decisions:
            decision, new_state = await self.decider.decide(obs, config, state, loaded.model, loaded.error)
        else:
            t0 = time.perf_counter()
            decision, new_state = decide(obs, config, state, loaded.model, model_error=loaded.error)
            self._observe_batch(time.perf_counter() - t0, 1)
        budget_note = ""
        if budget is not None and member is not None:
            decision, new_state, budget_note = await self._arbitrate(tick, budget, member, config, decision, new_state)
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
            containers=list(targets),
        )
        act = decision.changed and not spec.dry_run
        conditions = report.decision_conditions(
            tick, obs=obs, unknown=unknown, current=current, loaded=loaded, decision=decision
        )

        def render(conditions: list[Condition], pending: PendingAction | None, applied: bool) -> dict[str, Any]:
            status = render_plain(conditions, pending, applied)
            if budget_note and isinstance(status.get("lastDecision"), dict):
                last = status["lastDecision"]
                last["explanation"] = f"{budget_note} {last.get('explanation', '')}"[: report.MAX_EXPLANATION]
            return status

        def render_plain(conditions: list[Condition], pending: PendingAction | None, applied: bool) -> dict[str, Any]:
            return report.decision_status(
                tick,
                config=config,
                obs=obs,
                unknown=unknown,
                loaded=loaded,
                decision=decision,
                state=new_state,
                conditions=conditions,
                pending=pending,
                applied=applied,
            )

        applied = False
        target_gone = False
        error: str | None = None
        if act:
            await self._write(ref, render(conditions, pending, False))
            try:
                await self._apply(ref.namespace, target, pending)
                applied = True
            except NotFound:
                error = f"Deployment {ref.namespace}/{target} disappeared before the change was applied"
                target_gone = True  # nothing left to apply the pending change to
            except ApiError as exc:
                error = f"applying decision {new_state.decisions} failed, will retry: {exc}"
        if error:
            conditions = [*conditions, report.apply_failed(tick, error)]
        report.decision_events(tick, decision, acted=act, error=error)
        keep_pending = pending if (act and not applied and not target_gone) else None
        status = render(conditions, keep_pending, applied)
        await self._write_status(tick, status, force=act or final)
        report.transition_events(tick, status)
        return Outcome(status=status, decision=decision, applied=applied, interval_s=tick.interval_s)

    # --- pieces --------------------------------------------------------------------------------------------------

    def _member(
        self,
        tick: Tick[AutoscalePolicySpec],
        budget: Membership,
        view: DeploymentView,
        obs: Observation,
        config: DecisionConfig,
    ) -> MemberRequest:
        """This member as the budget sees it: what it holds, how pressed it is, what may be taken back."""
        lim = config.limits
        return MemberRequest(
            name=tick.ref.name,
            replicas=view.replicas,
            cpu_limit_m=view.primary.cpu_limit_m,
            memory_limit_mib=view.primary.memory_limit_mib,
            proposed_replicas=view.replicas,
            proposed_cpu_limit_m=view.primary.cpu_limit_m,
            proposed_memory_limit_mib=view.primary.memory_limit_mib,
            pressure=slo_pressure(obs.cpu_utilization, obs.latency_p99_ms, config.objective.latency_slo_ms),
            max_reclaim=(
                scale_down_step(lim, view.replicas)
                if budget.spec.rule == "fair" and obs.cpu_utilization is not None
                else 0
            ),
            min_replicas=lim.min_replicas,
        )

    def _budget_config(
        self, tick: Tick[AutoscalePolicySpec], budget: Membership, member: MemberRequest, config: DecisionConfig
    ) -> DecisionConfig:
        """``config`` with the mask's CPU budget at what this member could be granted (as of the last round)."""
        ceiling = self.budgets.ceiling(tick.ref.namespace, budget, member)
        if ceiling is None:
            return config
        return config.model_copy(update={"limits": budget_limits(config.limits, ceiling)})

    async def _arbitrate(
        self,
        tick: Tick[AutoscalePolicySpec],
        budget: Membership,
        member: MemberRequest,
        config: DecisionConfig,
        decision: Decision,
        state: ControllerState,
    ) -> tuple[Decision, ControllerState, str]:
        """The decision and the state as the budget grants them, and a sentence for the status.

        A refusal is also an Event. The state remembers the grant, not the request
        (:func:`~rlscale.policy.decide.regrant`): a refused scale-up starts no cooldown.
        """
        request = dataclasses.replace(
            member,
            proposed_replicas=decision.replicas,
            proposed_cpu_limit_m=decision.cpu_limit_m,
            proposed_memory_limit_mib=decision.memory_limit_mib,
            independent=races_as_independent_hpa(decision),
        )
        grant = await self.budgets.grant(tick.ref.namespace, budget, request)
        granted, state = regrant(config, state, decision, grant.replicas, grant.cpu_limit_m, grant.memory_limit_mib)
        if grant.refused:
            reason = "BudgetReclaimed" if grant.reclaimed_pods else "BudgetRefused"
            tick.event("Warning", reason, f"CapacityBudget {budget.budget}: {grant.reason}")
            return granted, state, f"CapacityBudget {budget.budget}: {grant.reason}."
        return granted, state, f"CapacityBudget {budget.budget}: granted ({grant.cpu_m}m of its CPU budget)."

    @staticmethod
    def _state(tick: Tick[AutoscalePolicySpec], config: DecisionConfig) -> ControllerState:
        if tick.previous.controller_state:
            try:
                return ControllerState.from_dict(tick.previous.controller_state)
            except (KeyError, TypeError, ValueError):
                pass  # an unreadable state (edited by hand?) restarts the controller's memory
        return ControllerState.initial(config)

    async def _read_metrics(
        self,
        tick: Tick[AutoscalePolicySpec],
        url: str,
        queries: tuple[RenderedQuery, ...],
        batched: frozenset[str],
        at: float,
    ) -> SignalValues:
        p = tick.spec.prometheus
        try:
            endpoint = await resolve_endpoint(tick.ref.namespace, url, p.auth, self.kube.get_secret)
        except (SecretError, ApiError) as exc:
            return SignalValues({q.key: None for q in queries}, {q.key: str(exc) for q in queries}, error=str(exc))
        # A Prometheus younger than the rate window reads every rate low (see started_at): unknown, not low.
        started = await self.reader.started_at(endpoint, timeout_s=p.timeout_s)
        if started is not None and at - started < duration_s(p.window):
            why = f"Prometheus (re)started {max(0.0, at - started):.0f}s before, within the rate window ({p.window})"
            return SignalValues({q.key: None for q in queries}, {q.key: why for q in queries})
        own = tuple(q for q in queries if q.key not in batched)
        want = tuple(q.key for q in queries if q.key in batched)
        reads = []
        if own:
            self.metrics.prometheus_requests.labels("policy").inc()
            reads.append(
                self.reader.read(endpoint, own, at=at, timeout_s=p.timeout_s, max_sample_age_s=p.max_sample_age_s)
            )
        if want:
            reads.append(
                self.batches.read(
                    endpoint,
                    tick.ref.namespace,
                    tick.spec.target_ref.name,
                    tuple(tick.spec.containers),
                    batch_keys=tuple(sorted(batched)),
                    want=want,
                    window=p.window,
                    at=at,
                    timeout_s=p.timeout_s,
                    max_sample_age_s=p.max_sample_age_s,
                )
            )
        parts = await asyncio.gather(*reads)
        return SignalValues(
            values={k: v for part in parts for k, v in part.values.items()},
            problems={k: v for part in parts for k, v in part.problems.items()},
            latency_s=max((part.latency_s for part in parts), default=0.0),
            error=next((part.error for part in parts if part.error), None),
        )

    async def _model(self, tick: Tick[AutoscalePolicySpec]) -> LoadedModel:
        m, namespace = tick.spec.model, tick.ref.namespace
        if m.source == "configMap" and m.config_map_ref is not None:
            try:
                return await self.models.from_configmap(namespace, m.config_map_ref.name, m.config_map_ref.key)
            except ApiError as exc:
                return LoadedModel(f"configMap:{namespace}/{m.config_map_ref.name}", None, str(exc))
        return self.models.builtin()

    async def _apply(self, namespace: str, name: str, pending: PendingAction) -> None:
        # Limits first: a limit change rolls the pods; scaling after it adds pods of the new shape.
        if pending.containers:
            await self.kube.patch_deployment(namespace, name, limits_patch(pending.containers))
            self.metrics.actions_applied.labels("limits").inc()
        if pending.replicas is not None:
            await self.kube.scale_deployment(namespace, name, pending.replicas)
            self.metrics.actions_applied.labels("replicas").inc()

    async def _finish_pending(self, tick: Tick[AutoscalePolicySpec], pending: PendingAction) -> Outcome:
        spec = tick.spec
        fate: report.PendingFate
        if spec.dry_run:
            fate = "dry_run"
        elif tick.now - pending.created_at > self.settings.pending_expiry_factor * spec.interval_s:
            fate = "expired"
        else:
            try:
                await self._apply(tick.ref.namespace, spec.target_ref.name, pending)
                fate = "resumed"
            except NotFound:
                fate = "gone"
            except ApiError as exc:
                # Not written: the change stays pending in the stored status, and the next tick retries it.
                report.pending_event(tick, "failed", str(exc))
                status = report.pending_status(tick, applied=False)
                return Outcome(status=status, refused="ApplyFailed", interval_s=tick.interval_s)
        report.pending_event(tick, fate)
        status = report.pending_status(tick, applied=fate == "resumed")
        await self._write(tick.ref, status)
        return Outcome(status=status, applied=fate == "resumed", interval_s=tick.interval_s)

    async def _write(self, ref: PolicyRef, status: dict[str, Any]) -> None:
        # NotFound: the policy was deleted while we worked; there is nothing to report to.
        with contextlib.suppress(NotFound):
            await self.kube.patch_policy_status(ref.namespace, ref.name, status)

    async def _write_status(self, tick: Tick[Any], status: dict[str, Any], *, force: bool = False) -> bool:
        """Write ``status`` if a user would see a difference, or the heartbeat is due; returns whether it wrote.

        Skipped writes lose nothing while the operator runs: the handlers carry the unwritten
        status (ControllerState and decision counter included) into the next reconcile, and
        the next write holds all of it. What is not written yet is the measured values,
        explanation and times of holding decisions, for at most ``status_heartbeat_s``.
        """
        key = (tick.ref.namespace, tick.ref.name)
        last = self._written.get(key)
        heartbeat = self.settings.status_heartbeat_s
        if (
            not force
            and heartbeat > 0
            and last is not None
            and tick.now - last[0] < heartbeat
            and report.visible(status) == last[1]
        ):
            self.metrics.status_writes.labels("skipped").inc()
            return False
        await self._write(tick.ref, status)
        self._written[key] = (tick.now, report.visible(status))
        self.metrics.status_writes.labels("written").inc()
        return True

    async def _refuse(self, tick: Tick[Any], reason: str, message: str) -> Outcome:
        """Report why no decision was made; the ControllerState and everything else in status stay as they were."""
        self.metrics.refusals.labels(reason).inc()
        status = report.refusal(tick, reason, message)
        await self._write_status(tick, status)
        return Outcome(status=status, refused=reason, interval_s=tick.interval_s)
