"""Batched reads against a real Prometheus: the same values as one policy's own queries, and no tenant leak.

The exporter serves the default templates' metrics for several Deployments of namespace
``shop`` — including ``web`` and ``web-api``, whose pod names share a prefix, a pod that
belongs to no Deployment, and a sidecar container — and for Deployments of namespace
``other`` with wildly different values, among them one named ``web`` like shop's and one,
``vault``, that exists only there. Each policy's signals read from its namespace's batch
must equal what its own rendered default queries return from the same Prometheus at the
same time; a policy must never see a series of another namespace through the batch; and
the policies of one namespace asking for one evaluation time must cost Prometheus one
request (counted by Prometheus itself).

Needs the ``prometheus`` binary (Debian: ``apt-get install -y prometheus``); skipped without it.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from rlscale.devstack.procs import free_port
from rlscale.devstack.prometheus import LocalPrometheus, PrometheusNotFoundError, ensure_prometheus_binary
from rlscale.operator.batchread import BatchReader
from rlscale.operator.prometheus import Endpoint, PrometheusReader, SignalValues
from rlscale.operator.queries import BATCHED, QueryError, Target, batched_query, build_queries, check_scope

pytestmark = pytest.mark.slow

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
KEYS = tuple(BATCHED)
WINDOW = "5s"

#: namespace → pod → (cpu cores of app, of sidecar, memory bytes of app, requests/s, error fraction, p-scale, in flight)
PODS: dict[str, dict[str, tuple[float, float, float, float, float, float, float]]] = {
    "shop": {
        "web-5d8c7b9f4-aaaaa": (0.30, 0.05, 256 * 2**20, 40.0, 0.05, 1.0, 3.0),
        "web-5d8c7b9f4-bbbbb": (0.50, 0.05, 300 * 2**20, 60.0, 0.00, 1.0, 1.0),
        "web-api-7f9c6d5b8-ccccc": (0.90, 0.10, 700 * 2**20, 10.0, 0.50, 3.0, 9.0),
        "web-canary": (5.0, 0.0, 9 * 2**30, 500.0, 0.9, 9.0, 99.0),  # no Deployment's pod name
        "cart-6b7c8d9f0-ddddd": (0.10, 0.0, 128 * 2**20, 5.0, 0.0, 0.5, 0.0),
    },
    "other": {
        "web-5d8c7b9f4-zzzzz": (50.0, 0.0, 64 * 2**30, 9000.0, 0.9, 20.0, 1000.0),
        "vault-84c9d7f6b5-yyyyy": (40.0, 0.0, 32 * 2**30, 7000.0, 0.8, 10.0, 800.0),
    },
}


class Exporter:
    """Counters grow at the rates above, so rate() over the window is known."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def collect(self) -> Iterator[Any]:
        dt = time.time() - self.t0
        cpu = CounterMetricFamily("container_cpu_usage_seconds", "cpu", labels=["namespace", "pod", "container"])
        mem = GaugeMetricFamily("container_memory_working_set_bytes", "mem", labels=["namespace", "pod", "container"])
        req = CounterMetricFamily("http_requests", "requests", labels=["namespace", "pod", "code"])
        lat = HistogramMetricFamily("http_request_duration_seconds", "latency", labels=["namespace", "pod"])
        inf = GaugeMetricFamily("http_requests_in_flight", "in flight", labels=["namespace", "pod"])
        for ns, pods in PODS.items():
            for pod, (app, side, memory, rps, err, scale, flight) in pods.items():
                cpu.add_metric([ns, pod, "app"], app * dt)
                cpu.add_metric([ns, pod, "sidecar"], side * dt)
                mem.add_metric([ns, pod, "app"], memory)
                mem.add_metric([ns, pod, "sidecar"], 32 * 2**20)
                total = rps * dt
                req.add_metric([ns, pod, "200"], total * (1 - err))
                if err:
                    req.add_metric([ns, pod, "503"], total * err)
                cumulative = [min(1.0, b / (scale * 0.6)) for b in BUCKETS]
                buckets = [(str(b), total * f) for b, f in zip(BUCKETS, cumulative, strict=True)]
                lat.add_metric([ns, pod], buckets=[*buckets, ("+Inf", total)], sum_value=total * 0.1)
                inf.add_metric([ns, pod], flight)
        yield from (cpu, mem, req, lat, inf)


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    try:
        return ensure_prometheus_binary()
    except PrometheusNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def prom(prometheus_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    registry = CollectorRegistry()
    registry.register(Exporter())  # type: ignore[arg-type]
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    scrape = {"job_name": "exporter", "honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    local = LocalPrometheus(tmp_path_factory.mktemp("prom"), scrape_configs=[scrape], binary=prometheus_binary)
    local.start()
    try:
        local.wait_for_value('http_requests_in_flight{namespace="other"}', timeout=60)
        time.sleep(8)  # a full 5 s window of scrapes, so rate() does not extrapolate from a partial one
        yield local
    finally:
        local.stop()
        server.shutdown()
        thread.join(timeout=5)


def _own(prom: LocalPrometheus, target: Target, at: float) -> SignalValues:
    """What one policy's own rendered default queries return."""
    reader = PrometheusReader(ThreadPoolExecutor(2))
    try:
        queries = build_queries({}, target, trusted=False)
        return asyncio.run(reader.read(Endpoint(prom.url), queries, at=at, timeout_s=5, max_sample_age_s=120))
    finally:
        reader.close()


def _batched(prom: LocalPrometheus, targets: list[Target], at: float) -> tuple[list[SignalValues], int]:
    """Every target read through one BatchReader, concurrently; and how many requests it sent."""
    reader = PrometheusReader(ThreadPoolExecutor(4))
    sent = [0]

    def count() -> None:
        sent[0] += 1

    batches = BatchReader(reader, on_query=count)

    async def run() -> list[SignalValues]:
        return list(
            await asyncio.gather(
                *(
                    batches.read(
                        Endpoint(prom.url),
                        t.namespace,
                        t.deployment,
                        t.containers,
                        batch_keys=KEYS,
                        want=KEYS,
                        window=t.window,
                        at=at,
                        timeout_s=5,
                        max_sample_age_s=120,
                    )
                    for t in targets
                )
            )
        )

    try:
        return asyncio.run(run()), sent[0]
    finally:
        reader.close()


def _prometheus_queries_served(prom: LocalPrometheus) -> float:
    """Prometheus's own count of instant queries answered (its /metrics)."""
    with urllib.request.urlopen(prom.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "prometheus_http_requests_total" and s.labels.get("handler") == "/api/v1/query"
    )


TARGETS = [
    Target("shop", "web", ("app",), WINDOW),
    Target("shop", "web", ("app", "sidecar"), WINDOW),
    Target("shop", "web-api", ("app",), WINDOW),
    Target("shop", "cart", ("app",), WINDOW),
    Target("shop", "api", ("app",), WINDOW),  # no pods: unknown
    Target("shop", "vault", ("app",), WINDOW),  # only in "other": unknown here
    Target("other", "web", ("app",), WINDOW),
]


def test_batched_values_equal_each_policys_own_queries(prom: LocalPrometheus) -> None:
    at = time.time() - 1
    batched, sent = _batched(prom, TARGETS, at)
    assert sent == 2  # one request per namespace
    for target, got in zip(TARGETS, batched, strict=True):
        own = _own(prom, target, at)
        assert got.error is None and own.error is None
        for key in KEYS:
            want, value = own.get(key), got.get(key)
            if want is None:
                assert value is None, (target, key, value)
                assert got.problems[key] == own.problems[key], (target, key)
            else:
                assert value is not None and math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-12), (target, key)
    # The known values are the right ones (not just equally wrong): web in shop, app only, 2 pods.
    web = batched[0]
    assert web.get("cpu_usage") == pytest.approx(0.4, rel=0.05)  # mean of 0.3 and 0.5
    assert web.get("memory_working_set") == pytest.approx(300 * 2**20)  # the larger pod
    assert web.get("request_rate") == pytest.approx(100.0, rel=0.05)
    assert web.get("error_rate") == pytest.approx(0.02, rel=0.05)
    assert batched[1].get("cpu_usage") == pytest.approx(0.45, rel=0.05)  # app + sidecar per pod
    assert batched[4].get("request_rate") is None and "no data" in batched[4].problems["request_rate"]


def test_a_policy_cannot_read_another_namespace_through_the_batch(prom: LocalPrometheus) -> None:
    at = time.time() - 1
    (shop_web, shop_vault, other_web), sent = _batched(
        prom,
        [Target("shop", "web", ("app",), WINDOW), Target("shop", "vault", ("app",), WINDOW), other := TARGETS[-1]],
        at,
    )
    assert sent == 2  # never shared across namespaces
    # "other" has a Deployment called web too, with 50 cores and 9000 req/s per pod: none of it reaches shop's web.
    assert shop_web.get("cpu_usage") == pytest.approx(0.4, rel=0.05)
    assert shop_web.get("request_rate") == pytest.approx(100.0, rel=0.05)
    assert other_web.get("cpu_usage") == pytest.approx(50.0, rel=0.05)
    assert other.namespace == "other"
    # A shop policy naming other's Deployment reads nothing.
    assert all(v is None for v in shop_vault.values.values()), shop_vault.values
    # Every selector of a batch is pinned to its namespace; a hostile "namespace" stays a quoted string.
    check_scope(batched_query(KEYS, "shop", WINDOW), "shop", "batch")
    hostile = 'shop"} or http_requests_total{namespace="other'
    query = batched_query(KEYS, hostile, WINDOW)
    check_scope(query, hostile, "batch")
    with pytest.raises(QueryError):
        check_scope(query, "other", "batch")
    assert prom.query(query) == []  # no namespace has that name: nothing at all


def test_one_request_per_namespace_and_evaluation_time(prom: LocalPrometheus) -> None:
    targets = [Target("shop", f"w{i}", ("app",), WINDOW) for i in range(40)] + TARGETS[:4]
    before = _prometheus_queries_served(prom)
    at = time.time() - 1
    _, sent = _batched(prom, targets, at)
    after = _prometheus_queries_served(prom)
    assert sent == 1
    assert after - before == 1  # Prometheus itself answered one query for 44 policies


def test_prometheus_down_makes_every_signal_unknown() -> None:
    reader = PrometheusReader(ThreadPoolExecutor(1))
    sent = [0]
    batches = BatchReader(reader, on_query=lambda: sent.__setitem__(0, sent[0] + 1))
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    at = time.time()

    async def run() -> list[SignalValues]:
        return list(
            await asyncio.gather(
                *(
                    batches.read(
                        endpoint,
                        "shop",
                        name,
                        ("app",),
                        batch_keys=KEYS,
                        want=KEYS,
                        window=WINDOW,
                        at=at,
                        timeout_s=1,
                        max_sample_age_s=60,
                    )
                    for name in ("web", "cart")
                )
            )
        )

    try:
        results = asyncio.run(run())
    finally:
        reader.close()
    for r in results:
        assert r.error and all(v is None for v in r.values.values())
    assert sent[0] == 1  # the failure is shared too: no retry storm against a Prometheus that is down
