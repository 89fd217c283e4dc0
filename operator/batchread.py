"""Batched Prometheus reads: one query per namespace and evaluation time, shared by its policies.

Each policy on the default templates used to send its own combined query twice per
interval — about 400 queries/s against Prometheus at 1000 policies. Here the default
templates have a namespace-wide form (:data:`~rlscale.operator.queries.BATCHED`) that
returns every workload's series grouped by the Deployment its pods belong to; the first
policy of a namespace that asks for a given evaluation time sends it, every other policy
of that namespace asking for the same time awaits the same answer (single flight), and each
takes out its own Deployment's series. The handlers start every policy of a namespace with
the same interval at the same moments and evaluate at the moment the tick was due, so the
whole namespace asks for the same time: one request per namespace, Prometheus and
evaluation time, whatever the number of policies. Custom per-policy templates are still
read one policy at a time by :class:`~rlscale.operator.prometheus.PrometheusReader`.

Tenant scoping is as strict as for one policy: a batch is keyed by the policy's namespace
(and its Prometheus endpoint, credentials included), its query pins every selector to that
namespace (checked with the same scope check as untrusted templates), and a policy reads
only the series of its own ``spec.targetRef.name`` from its own namespace's batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlscale.operator.prometheus import Endpoint, PrometheusReader, SignalValues, describe, one_value
from rlscale.operator.queries import BATCHED, SIGNAL_BY_KEY, SIGNAL_LABEL, WORKLOAD_LABEL, batched_query

#: (signal, workload) → the batch's series for it.
_Series = dict[tuple[str, str], list[Any]]


@dataclass(frozen=True, slots=True)
class _Key:
    endpoint: str
    namespace: str
    window: str
    keys: tuple[str, ...]
    at: float


@dataclass(slots=True)
class _Batch:
    series: _Series = field(default_factory=dict)
    error: str | None = None
    latency_s: float = 0.0


def _index(raw: list[Any]) -> _Series:
    out: _Series = {}
    for s in raw:
        labels = s.get("metric", {})
        out.setdefault((labels.get(SIGNAL_LABEL, ""), labels.get(WORKLOAD_LABEL, "")), []).append(s)
    return out


def _per_pod(series: list[Any], containers: frozenset[str], how: str) -> list[Any]:
    """The default template's pod aggregation, finished in Python for one policy's containers.

    Sum over the policy's containers per pod, then ``avg`` or ``max`` over pods, as one
    series carrying the oldest sample time; no pod with one of the containers → no series.
    """
    per_pod: dict[str, float] = {}
    oldest: float | None = None
    for s in series:
        labels = s.get("metric", {})
        if labels.get("container") not in containers:
            continue
        try:
            ts, value = float(s["value"][0]), float(s["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return [s]  # let one_value say what is unreadable about it
        pod = str(labels.get("pod", ""))
        per_pod[pod] = per_pod.get(pod, 0.0) + value
        oldest = ts if oldest is None else min(oldest, ts)
    if not per_pod or oldest is None:
        return []
    values = list(per_pod.values())
    value = max(values) if how == "max" else sum(values) / len(values)
    return [{"metric": {}, "value": [oldest, repr(value)]}]


class BatchReader:
    """Single-flight, namespace-wide reads of the default templates.

    ``on_query`` is called once per request actually sent (the operator counts them);
    answers are kept ``keep_s`` seconds so a policy that reaches its read late in a tick
    still shares its namespace's request.
    """

    def __init__(
        self,
        reader: PrometheusReader,
        *,
        keep_s: float = 60.0,
        on_query: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._keep_s = keep_s
        self._on_query = on_query
        self._clock = clock
        self._batches: dict[_Key, tuple[float, asyncio.Future[_Batch]]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    @staticmethod
    def batchable(key: str) -> bool:
        """Whether signal ``key``'s default template has a batched form."""
        return key in BATCHED

    async def read(
        self,
        endpoint: Endpoint,
        namespace: str,
        deployment: str,
        containers: tuple[str, ...],
        *,
        batch_keys: tuple[str, ...],
        want: tuple[str, ...],
        window: str,
        at: float,
        timeout_s: float,
        max_sample_age_s: float,
    ) -> SignalValues:
        """Signals ``want`` of ``namespace/deployment`` at ``at``, from the namespace's batch of ``batch_keys``.

        ``batch_keys`` should be the same for every policy of the namespace (all batchable
        signals read at this offset), so that they share one request; ``want`` is this
        policy's part of it. Never raises for Prometheus trouble: the signals are unknown.
        """
        key = _Key(endpoint.cache_key(), namespace, window, batch_keys, at)
        batch = await self._batch(key, endpoint, timeout_s)
        if batch.error is not None:
            return SignalValues(
                values={k: None for k in want},
                problems={k: batch.error for k in want},
                latency_s=batch.latency_s,
                error=batch.error,
            )
        values: dict[str, float | None] = {}
        problems: dict[str, str] = {}
        wanted_containers = frozenset(containers)
        for k in want:
            series = batch.series.get((k, deployment), [])
            how = BATCHED[k].per_pod
            if how is not None:
                series = _per_pod(series, wanted_containers, how)
            value, problem = one_value(series, at, max_sample_age_s)
            values[k] = value
            if problem:
                problems[k] = f"spec.prometheus.queries.{SIGNAL_BY_KEY[k].field}: {problem}"
        return SignalValues(values=values, problems=problems, latency_s=batch.latency_s)

    async def _batch(self, key: _Key, endpoint: Endpoint, timeout_s: float) -> _Batch:
        now = self._clock()
        entry = self._batches.get(key)
        if entry is None or (entry[1].done() and now - entry[0] > self._keep_s):
            self._evict(now)
            future: asyncio.Future[_Batch] = asyncio.get_running_loop().create_future()
            self._batches[key] = (now, future)
            task = asyncio.ensure_future(self._fill(future, key, endpoint, timeout_s))
            self._tasks.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
            entry = self._batches[key]
        return await asyncio.shield(entry[1])

    async def _fill(self, future: asyncio.Future[_Batch], key: _Key, endpoint: Endpoint, timeout_s: float) -> None:
        future.set_result(await self._fetch(key, endpoint, timeout_s))

    async def _fetch(self, key: _Key, endpoint: Endpoint, timeout_s: float) -> _Batch:
        start = time.perf_counter()
        if self._on_query is not None:
            self._on_query()
        try:
            raw = await self._reader.series(
                endpoint, batched_query(key.keys, key.namespace, key.window), at=key.at, timeout_s=timeout_s
            )
            return _Batch(series=_index(raw), latency_s=time.perf_counter() - start)
        except Exception as exc:  # connection refused, timeout, refused query: all mean "unknown"
            return _Batch(error=describe(exc), latency_s=time.perf_counter() - start)

    def _evict(self, now: float) -> None:
        old = [k for k, (t, f) in self._batches.items() if f.done() and now - t > self._keep_s]
        for k in old:
            del self._batches[k]

    def pending(self) -> Mapping[str, int]:
        """Batches held, in flight and done (for tests and debugging)."""
        done = sum(1 for _, f in self._batches.values() if f.done())
        return {"held": len(self._batches), "in_flight": len(self._batches) - done}
