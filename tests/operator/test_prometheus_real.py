"""The Prometheus reader against a real Prometheus scraping an exporter whose values the test controls.

Needs the ``prometheus`` binary (Debian: ``apt-get install -y prometheus``); skipped with
that instruction when it is absent. The exporter serves the metric names the default
queries use, for pods of the policy's Deployment *and* of another namespace with wildly
different values — so a query that leaked across namespaces would read the wrong numbers.
Counters grow at exact rates (their value is rate × elapsed time at scrape), so the
expected ``rate()`` is known.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from rlscale.devstack.procs import free_port
from rlscale.devstack.prometheus import LocalPrometheus, PrometheusNotFoundError, ensure_prometheus_binary
from rlscale.operator.observe import build_observation, deployment_view
from rlscale.operator.prometheus import Endpoint, PrometheusReader
from rlscale.operator.queries import Target, build_queries

pytestmark = pytest.mark.slow

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
# Cumulative fraction of requests at or under each bucket bound.
CUMULATIVE = (0.30, 0.60, 0.90, 0.995, 1.0)


class Workload:
    """Metric values for the exporter; ``nan_memory`` and ``stopped`` switch behaviours on."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.pods = {"shop": ["web-5d8c7b9f4-aaaaa", "web-5d8c7b9f4-bbbbb"], "other": ["web-5d8c7b9f4-zzzzz"]}
        self.cpu_cores = {"shop": 0.3, "other": 50.0}  # per pod
        self.memory = {"shop": 256 * 2**20, "other": 64 * 2**30}
        self.rps = {"shop": 40.0, "other": 9000.0}  # per pod
        self.err_fraction = {"shop": 0.05, "other": 0.9}
        self.in_flight = {"shop": 3.0, "other": 1000.0}
        self.nan_memory = False

    def collect(self) -> Iterator[Any]:
        dt = time.time() - self.t0
        cpu = CounterMetricFamily("container_cpu_usage_seconds", "cpu", labels=["namespace", "pod", "container"])
        mem = GaugeMetricFamily("container_memory_working_set_bytes", "mem", labels=["namespace", "pod", "container"])
        req = CounterMetricFamily("http_requests", "requests", labels=["namespace", "pod", "code"])
        lat = HistogramMetricFamily("http_request_duration_seconds", "latency", labels=["namespace", "pod"])
        inf = GaugeMetricFamily("http_requests_in_flight", "in flight", labels=["namespace", "pod"])
        for ns, pods in self.pods.items():
            for pod in pods:
                cpu.add_metric([ns, pod, "app"], self.cpu_cores[ns] * dt)
                cpu.add_metric([ns, pod, "sidecar"], 7.0 * dt)  # not a managed container
                mem.add_metric([ns, pod, "app"], math.nan if self.nan_memory else self.memory[ns])
                total = self.rps[ns] * dt
                req.add_metric([ns, pod, "200"], total * (1 - self.err_fraction[ns]))
                req.add_metric([ns, pod, "503"], total * self.err_fraction[ns])
                buckets = [(str(b), total * f) for b, f in zip(BUCKETS, CUMULATIVE, strict=True)]
                lat.add_metric([ns, pod], buckets=[*buckets, ("+Inf", total)], sum_value=total * 0.1)
                inf.add_metric([ns, pod], self.in_flight[ns])
        yield from (cpu, mem, req, lat, inf)


def _quantile(q: float) -> float:
    """histogram_quantile's linear interpolation over the fixed distribution."""
    lower_bound, lower_frac = 0.0, 0.0
    for bound, frac in zip(BUCKETS, CUMULATIVE, strict=True):
        if q <= frac:
            return lower_bound + (bound - lower_bound) * (q - lower_frac) / (frac - lower_frac)
        lower_bound, lower_frac = bound, frac
    return BUCKETS[-1]


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    try:
        return ensure_prometheus_binary()
    except PrometheusNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def stack(
    prometheus_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workload, LocalPrometheus, Any]]:
    workload = Workload()
    registry = CollectorRegistry()
    registry.register(workload)  # type: ignore[arg-type]
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    # honor_labels keeps the exporter's namespace/pod labels as they are (as for cAdvisor via the kubelet).
    scrape = {"job_name": "exporter", "honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    prom = LocalPrometheus(tmp_path_factory.mktemp("prom"), scrape_configs=[scrape], binary=prometheus_binary)
    prom.start()
    try:
        prom.wait_for_value('http_requests_in_flight{namespace="shop"}', timeout=60)
        time.sleep(8)  # more than the 5s window of scrapes, so rate() does not extrapolate from a partial window
        yield workload, prom, server
    finally:
        prom.stop()
        server.shutdown()
        thread.join(timeout=5)


def _deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}]}
            },
        },
        "status": {"readyReplicas": 2},
    }


def _read(prom: LocalPrometheus, target: Target, at: float | None = None) -> Any:
    queries = build_queries({}, target, trusted=False)
    reader = PrometheusReader(ThreadPoolExecutor(2))
    try:
        return asyncio.run(
            reader.read(Endpoint(prom.url), queries, at=at or time.time(), timeout_s=5, max_sample_age_s=120)
        )
    finally:
        reader.close()


def test_reader_computes_the_observation(stack: tuple[Workload, LocalPrometheus, Any]) -> None:
    _, prom, _ = stack
    values = _read(prom, Target("shop", "web", ("app",), "5s"))
    assert values.error is None, values.problems
    assert values.get("cpu_usage") == pytest.approx(0.3, rel=0.05)  # mean cores per pod, app container only
    assert values.get("memory_working_set") == pytest.approx(256 * 2**20)
    assert values.get("request_rate") == pytest.approx(80.0, rel=0.05)  # 2 pods × 40
    assert values.get("error_rate") == pytest.approx(0.05, rel=0.05)
    assert values.get("latency_p50") == pytest.approx(_quantile(0.5), rel=0.05)
    assert values.get("latency_p99") == pytest.approx(_quantile(0.99), rel=0.05)
    assert values.get("in_flight") == pytest.approx(6.0)

    view = deployment_view(_deployment(), ["app"])
    obs, unknown = build_observation(time.time(), view, {0.0: values.values})
    assert obs.cpu_utilization == pytest.approx(0.6, rel=0.05)  # 0.3 cores / 500m
    assert obs.memory_utilization == pytest.approx(0.25)  # 256Mi / 1Gi
    assert obs.latency_p99_ms == pytest.approx(1000 * _quantile(0.99), rel=0.05)
    assert obs.queue_per_replica == pytest.approx(3.0)
    assert obs.metrics_ok
    assert unknown == ["request_rate_prev", "latency_p99_prev_ms"]


def test_empty_results_are_unknown_not_zero(stack: tuple[Workload, LocalPrometheus, Any]) -> None:
    _, prom, _ = stack
    values = _read(prom, Target("shop", "api", ("app",), "5s"))  # no pods of "api"
    assert all(v is None for v in values.values.values()), values.values
    assert "no data" in values.problems["cpu_usage"]
    # Five minutes ago this Prometheus had no data at all: the trend inputs are unknown.
    past = _read(prom, Target("shop", "web", ("app",), "5s"), at=time.time() - 300)
    assert past.get("request_rate") is None and past.get("latency_p99") is None


def test_nan_is_unknown(stack: tuple[Workload, LocalPrometheus, Any]) -> None:
    workload, prom, _ = stack
    workload.nan_memory = True
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            values = _read(prom, Target("shop", "web", ("app",), "5s"))
            if values.get("memory_working_set") is None:
                break
            time.sleep(0.5)
        assert values.get("memory_working_set") is None
        assert values.problems["memory_working_set"].endswith("NaN")
        assert values.get("cpu_usage") is not None  # the others stay known
    finally:
        workload.nan_memory = False


def test_prometheus_down_is_unknown_with_error() -> None:
    port = free_port()  # nothing listens there
    queries = build_queries({}, Target("shop", "web", ("app",), "5s"), trusted=False)
    reader = PrometheusReader(ThreadPoolExecutor(1))
    try:
        values = asyncio.run(
            reader.read(Endpoint(f"http://127.0.0.1:{port}"), queries, at=time.time(), timeout_s=1, max_sample_age_s=60)
        )
    finally:
        reader.close()
    assert values.error and all(v is None for v in values.values.values())


def test_stopped_exporter_goes_stale(stack: tuple[Workload, LocalPrometheus, Any]) -> None:
    """Scrapes fail → Prometheus marks series stale; after the window every signal is unknown. Runs last."""
    _, prom, server = stack
    server.shutdown()
    deadline = time.time() + 30
    values = None
    while time.time() < deadline:
        values = _read(prom, Target("shop", "web", ("app",), "5s"))
        if all(v is None for v in values.values.values()):
            break
        time.sleep(1)
    assert values is not None and all(v is None for v in values.values.values()), values.values
