"""Kopf handlers: thin glue from Kopf's events to :class:`~rlscale.operator.reconcile.Reconciler`.

* one **daemon** per AutoscalePolicy runs the reconcile loop at the policy's own
  ``intervalSeconds`` (a ``@kopf.timer`` has one interval for all objects), with the first
  tick placed after the last recorded decision, so a restart does not decide early;
* two **indexes** — HPAs by target and policies by target — let a reconcile find a
  conflicting autoscaler without listing anything;
* **startup** builds the shared :class:`Runtime` (API client, thread pool, Prometheus
  clients, model cache, metrics) unless a test put one in ``memo`` already.

Handlers hold no decision logic: :func:`find_conflicts` and :func:`next_delay` are plain
functions, tested as such.
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from pydantic import ValidationError

from rlscale.operator.budget_arbiter import Membership, selects
from rlscale.operator.budget_models import BUDGET_PLURAL, CapacityBudgetSpec
from rlscale.operator.kube import KubeApi, merge_patch
from rlscale.operator.metrics import OperatorMetrics
from rlscale.operator.models import API_GROUP, API_VERSION, PLURAL
from rlscale.operator.modelstore import ModelStore
from rlscale.operator.prometheus import PrometheusReader
from rlscale.operator.reconcile import Conflicts, PolicyRef, Reconciler
from rlscale.operator.settings import OperatorSettings
from rlscale.operator.shard import ShardMembership

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What all policies of one operator process share."""

    reconciler: Reconciler
    metrics: OperatorMetrics
    executor: ThreadPoolExecutor
    reader: PrometheusReader
    shards: ShardMembership | None = None  # with --shard-identity: which policies are this replica's

    @classmethod
    def build(
        cls,
        settings: OperatorSettings,
        api_client: k8s.ApiClient,
        metrics: OperatorMetrics | None = None,
    ) -> Runtime:
        metrics = metrics or OperatorMetrics()
        executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rlscale-io")
        kube = KubeApi(api_client, executor)
        reader = PrometheusReader(
            executor,
            observe_latency=metrics.prometheus_latency.observe,
            observe_error=lambda kind: metrics.prometheus_errors.labels(kind).inc(),
        )
        store = ModelStore(kube.get_configmap, refresh_s=settings.model_refresh_s)
        shards = None
        if settings.shard_identity and settings.shard_namespace:
            shards = ShardMembership(
                kube, settings.shard_identity, settings.shard_namespace, lease_s=settings.shard_lease_s, clock=time.time
            )
        return cls(Reconciler(kube, reader, store, settings, metrics), metrics, executor, reader, shards)

    def close(self) -> None:
        self.reader.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def default_api_client() -> k8s.ApiClient:
    """In a pod: the service account; elsewhere: the current kubeconfig context."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


# --- pure helpers ----------------------------------------------------------------------------------------------


def find_conflicts(
    namespace: str,
    name: str,
    target: str | None,
    hpas: Iterable[str],
    policies: Iterable[tuple[str, str]],
) -> Conflicts:
    """Other autoscalers of ``namespace/target``: HPAs, and whether an older policy owns it.

    Among policies on one Deployment the oldest (creation time, then name) keeps it; the
    others refuse, so exactly one acts and the choice is stable across restarts.
    """
    if not target:
        return Conflicts()
    owners = sorted(set(policies))
    owner = owners[0][1] if owners else name
    return Conflicts(hpas=tuple(sorted(set(hpas))), owner_policy=None if owner == name else owner)


def next_delay(interval_s: float, last_decision_time: str | None, now: float, *, jitter: float = 0.0) -> float:
    """Seconds until the next reconcile is due: one interval after the last recorded decision.

    ``jitter`` (0..1) spreads the first ticks of many policies over the interval after an
    operator start, instead of a thundering herd.
    """
    if last_decision_time:
        try:
            last = datetime.fromisoformat(last_decision_time.replace("Z", "+00:00")).timestamp()
            return max(0.0, min(interval_s, last + interval_s - now))
        except ValueError:
            pass
    return jitter * interval_s


def phase_of(namespace: str, interval_s: float) -> float:
    """Where in each interval the policies of ``namespace`` tick: a stable spread of namespaces over the interval.

    All policies of a namespace with the same interval tick at the same moments, so their
    Prometheus reads are one batched query and their decisions one ``decide_batch``; the
    namespaces are spread over the interval so the operator's work is not one burst.
    """
    return (zlib.crc32(namespace.encode()) % 10_000) / 10_000 * interval_s


def aligned(t: float, interval_s: float, phase: float) -> float:
    """The first tick ``phase + k * interval_s`` at or after ``t`` (computed the same way by every policy, so
    policies due together have bit-identical due times)."""
    return phase + math.ceil((t - phase) / interval_s) * interval_s


def _interval(spec: Mapping[str, Any]) -> float:
    value = spec.get("intervalSeconds", 15)
    return float(value) if isinstance(value, int | float) and 5 <= value <= 3600 else 15.0


# --- kopf handlers ---------------------------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure Kopf and build the shared runtime (tests may have put one in ``memo``)."""
    settings.posting.level = logging.WARNING  # Kopf's own per-handler events would flood at 1000 policies
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.finalizer = "rlscale.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rlscale.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="rlscale.io")
    if getattr(memo, "runtime", None) is None:
        op_settings = getattr(memo, "settings", None) or OperatorSettings()
        memo.runtime = Runtime.build(op_settings, default_api_client())
        if op_settings.metrics_port:
            memo.runtime.metrics.serve(op_settings.metrics_port, op_settings.metrics_addr)
    runtime: Runtime = memo.runtime
    if runtime.shards is not None:
        await runtime.shards.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None and runtime.shards is not None:
        await runtime.shards.stop()
    if runtime is not None and getattr(memo, "owns_runtime", True):
        runtime.close()


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")  # type: ignore[arg-type]  # kopf types handlers as **kwargs-only
def hpa_targets(namespace: str, name: str, spec: Mapping[str, Any], **_: Any) -> dict[tuple[str, str], str] | None:
    """HPAs by the Deployment they scale."""
    ref = spec.get("scaleTargetRef", {}) or {}
    if ref.get("kind") == "Deployment" and ref.get("name"):
        return {(namespace, str(ref["name"])): name}
    return None


@kopf.index(API_GROUP, API_VERSION, PLURAL)  # type: ignore[arg-type]  # kopf types handlers as **kwargs-only
def policy_targets(
    namespace: str, name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], tuple[str, str]] | None:
    """Policies by the Deployment they scale, with their creation time (the oldest keeps it)."""
    target = (spec.get("targetRef") or {}).get("name")
    if not target:
        return None
    return {(namespace, str(target)): (str(meta.get("creationTimestamp") or ""), name)}


@kopf.index(API_GROUP, API_VERSION, PLURAL)  # type: ignore[arg-type]  # kopf types handlers as **kwargs-only
def policy_labels(
    namespace: str, name: str, labels: Mapping[str, str], spec: Mapping[str, Any], **_: Any
) -> dict[str, tuple[str, dict[str, str], str, str]]:
    """Policies by namespace, with their labels (a CapacityBudget selects its members among them) and target.

    The target (Deployment, first managed container) lets the budget count what a member holds
    before it has taken part in an arbitration.
    """
    target = str((spec.get("targetRef") or {}).get("name") or "")
    containers = spec.get("containers") or [""]
    return {namespace: (name, dict(labels), target, str(containers[0]))}


@kopf.index(API_GROUP, API_VERSION, BUDGET_PLURAL)  # type: ignore[arg-type]  # kopf types handlers as **kwargs-only
def budgets(
    namespace: str, name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], **_: Any
) -> dict[str, tuple[str, dict[str, Any], int]]:
    """CapacityBudgets by namespace: their spec (validated when used) and generation."""
    return {namespace: (name, dict(spec), int(meta.get("generation") or 0))}


def find_budget(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    budgets: Iterable[tuple[str, Mapping[str, Any], int]],
    policies: Iterable[tuple[str, Mapping[str, str], str, str]],
) -> Membership | None:
    """The CapacityBudget that selects this policy, with every member; None when none does.

    When several budgets select one policy, the first by name applies (a policy is decided
    in one budget only) and the others leave it out. A budget whose spec does not validate
    (an older stored object) selects nothing.
    """
    for budget_name, spec_raw, generation in sorted(budgets, key=lambda b: b[0]):
        try:
            spec = CapacityBudgetSpec.model_validate(spec_raw)
        except ValidationError:
            continue
        selector = spec.policy_selector.match_labels
        if not selects(selector, labels):
            continue
        selected = {n: (target, container) for n, lab, target, container in policies if selects(selector, lab)}
        members = sorted(set(selected) | {name})
        targets = tuple((n, *selected[n]) for n in members if n in selected)
        return Membership(budget_name, spec, tuple(members), generation, targets)
    return None


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=10.0)  # type: ignore[arg-type]  # kopf types handlers as **kwargs-only
async def reconcile_loop(
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    hpa_targets: kopf.Index[tuple[str, str], str],
    policy_targets: kopf.Index[tuple[str, str], tuple[str, str]],
    policy_labels: kopf.Index[str, tuple[str, dict[str, str], str, str]],
    budgets: kopf.Index[str, tuple[str, dict[str, Any], int]],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Reconcile one policy every ``intervalSeconds`` until it is deleted or the operator stops."""
    runtime: Runtime = memo.runtime
    last_status: dict[str, Any] = {}
    runtime.metrics.policies.inc()
    # --start-spread 0 (tests, the demo): every policy at once, now, then every interval on its own schedule.
    align = runtime.reconciler.settings.align_ticks and runtime.reconciler.settings.start_spread > 0

    def next_due(after: float) -> float:
        interval = _interval(spec)
        return aligned(after, interval, phase_of(namespace, interval)) if align else after

    try:
        delay = next_delay(
            _interval(spec),
            (status.get("lastDecision") or {}).get("time"),
            time.time(),
            jitter=0.0 if align else random.random() * runtime.reconciler.settings.start_spread,
        )
        # The first tick: one interval after the last decision (on the namespace's grid when aligned).
        due = next_due(time.time() + delay)
        while not stopped:
            await stopped.wait(max(0.0, due - time.time()))
            if stopped:
                break
            shards = runtime.shards
            if shards is not None and not shards.owns(namespace, name, due):
                runtime.reconciler.forget(namespace, name)  # another replica writes its status now
                due = next_due(due + _interval(spec) / 2) if align else due + _interval(spec)
                continue
            # About to hand the policy to another replica: write everything it needs (the counter, the gate).
            handing_over = shards is not None and not shards.owns(namespace, name, due + _interval(spec))
            runtime.metrics.reconcile_lateness.observe(max(0.0, time.time() - due))
            target = (spec.get("targetRef") or {}).get("name")
            key = (namespace, str(target))
            conflicts = find_conflicts(
                namespace,
                name,
                target,
                hpa_targets.get(key, ()),
                policy_targets.get(key, ()),
            )
            # The watch may not have delivered our own last status write yet; use whichever is newer.
            current = _newer(dict(status), last_status)

            def post(kind: str, reason: str, message: str) -> None:
                kopf.event(body, type=kind, reason=reason, message=message)

            membership = find_budget(
                namespace, name, meta.get("labels") or {}, budgets.get(namespace, ()), policy_labels.get(namespace, ())
            )
            try:
                outcome = await runtime.reconciler.reconcile(
                    PolicyRef(namespace, name, int(meta.get("generation") or 0)),
                    dict(spec),
                    current,
                    conflicts,
                    post,
                    due=due,
                    final=handing_over,
                    budget=membership,
                )
            except Exception:  # never let one bad reconcile kill the loop; the next tick retries
                logger.exception("reconcile failed")
                due = next_due(time.time() + _interval(spec))
                continue
            last_status = merge_patch(current, outcome.status)
            due = next_due(due + outcome.interval_s) if not align else next_due(due + outcome.interval_s / 2)
            if due < time.time():  # far behind (e.g. a long API outage): do not burst to catch up
                due = next_due(time.time())
    finally:
        runtime.metrics.policies.dec()
        runtime.metrics.forget_policy(namespace, name)
        runtime.reconciler.forget(namespace, name)


def _decisions(status: Mapping[str, Any]) -> int:
    try:
        return int((status.get("controllerState") or {}).get("decisions", -1))
    except (TypeError, ValueError):
        return -1


def _newer(watched: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """The status with the higher decision counter (ties: what the API server sent us)."""
    if not written:
        return watched
    return written if _decisions(written) > _decisions(watched) else watched
