"""The twin exporter: its numbers follow the simulator and the Deployment it reads.

These drive the twin with a fake Deployment reader and a fake clock (no cluster, no
Prometheus); tests/e2e/test_twin_e2e.py scrapes it with a real Prometheus and evaluates the
operator's default PromQL templates.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

from rlscale.devstack.twin import LATENCY_BUCKETS_S, DeploymentState, TwinExporter, TwinTarget, lognormal_cdf
from rlscale.operator.queries import SIGNALS
from rlscale.training.sim_config import SimConfig

NS, DEP, CONTAINER = "shop", "web", "app"


class FakeDeployment:
    """A Deployment whose replicas and limits a test changes; pod names follow the ReplicaSet pattern."""

    def __init__(self, replicas: int = 2, cpu_m: int = 500, mem_mib: int = 1024) -> None:
        self.replicas, self.cpu_m, self.mem_mib = replicas, cpu_m, mem_mib
        self.fail = False

    def __call__(self) -> DeploymentState:
        if self.fail:
            raise ConnectionError("API server unreachable")
        pods = tuple(f"{DEP}-5d8f7c9b4-{i:05d}" for i in range(self.replicas))
        return DeploymentState(self.replicas, self.cpu_m, self.mem_mib, pods)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_twin(dep: FakeDeployment, load: list[float], clock: Callable[[], float], speed: float = 60.0) -> TwinExporter:
    service = SimConfig(absolute_rps_per_unit=1.0, arrival_noise=0.0, initial_cpu_limit_m=500)
    return TwinExporter(
        None, TwinTarget(NS, DEP, CONTAINER), np.array(load), service=service, speed=speed, clock=clock, read_state=dep
    )  # type: ignore[arg-type]


def histogram_quantile(q: float, cdf: np.ndarray) -> float:
    """Prometheus' interpolation inside the bucket where the quantile falls (seconds)."""
    bounds = np.array(LATENCY_BUCKETS_S)
    i = int(np.searchsorted(cdf, q))
    lo, hi = (bounds[i - 1], bounds[i]) if i > 0 else (0.0, bounds[0])
    clo = cdf[i - 1] if i > 0 else 0.0
    return float(lo + (hi - lo) * (q - clo) / (cdf[i] - clo))


@pytest.mark.parametrize(("p50", "p99"), [(20.0, 60.0), (50.0, 400.0), (120.0, 5000.0), (3.0, 3.5)])
def test_histogram_reproduces_the_simulated_quantiles(p50: float, p99: float) -> None:
    cdf = lognormal_cdf(np.array(LATENCY_BUCKETS_S), p50, p99)
    assert np.all(np.diff(cdf) >= 0)
    assert histogram_quantile(0.5, cdf) * 1000 == pytest.approx(p50, rel=0.08)
    assert histogram_quantile(0.99, cdf) * 1000 == pytest.approx(p99, rel=0.08)


def test_twin_follows_the_load_and_the_replicas_it_reads() -> None:
    dep, clock = FakeDeployment(replicas=1), Clock()
    twin = make_twin(dep, [40.0] * 5 + [200.0] * 100, clock)
    twin.start()
    try:
        for _ in range(8):  # 8 simulated minutes: into the busy period
            clock.t += 1.0
            twin.scrape()
        busy = twin.snapshot()
        assert busy is not None and busy.load_rps == pytest.approx(200.0, rel=0.01)
        assert busy.replicas == 1 and busy.cpu_utilization > 0.99 and busy.error_rate > 0.5  # saturated, dropping
        dep.replicas, dep.cpu_m = 6, 750
        for _ in range(5):
            clock.t += 1.0
            twin.scrape()
        relieved = twin.snapshot()
        assert relieved is not None and relieved.replicas == 6 and relieved.cpu_limit_m == 750
        assert relieved.cpu_utilization < 0.6 and relieved.latency_p99_ms < busy.latency_p99_ms
    finally:
        twin.stop()


def test_counters_grow_with_wall_time_and_pods_come_and_go() -> None:
    dep, clock = FakeDeployment(replicas=2), Clock()
    twin = make_twin(dep, [50.0] * 100, clock)
    twin.start()
    try:
        clock.t += 1.0
        first = twin.scrape()
        clock.t += 2.0
        second = twin.scrape()

        def ok(text: str, pod: str) -> float:
            m = re.search(rf'http_requests_total\{{namespace="{NS}",pod="{pod}",code="200"\}} (\S+)', text)
            assert m, text[:500]
            return float(m.group(1))

        pod = f"{DEP}-5d8f7c9b4-00000"
        # Two pods share ~50 req/s: each counter grows ~25 per wall second.
        assert ok(second, pod) - ok(first, pod) == pytest.approx(2 * 25.0, rel=0.1)
        dep.replicas = 1
        clock.t += 1.0
        third = twin.scrape()
        assert f"{DEP}-5d8f7c9b4-00001" not in third  # a deleted pod's series disappear
        assert ok(third, pod) > ok(second, pod)  # the surviving pod's counter keeps growing
    finally:
        twin.stop()


def test_an_api_error_keeps_the_last_known_shape() -> None:
    dep, clock = FakeDeployment(replicas=3), Clock()
    twin = make_twin(dep, [50.0] * 100, clock)
    twin.start()
    try:
        dep.fail = True
        clock.t += 1.0
        text = twin.scrape()
        assert twin.api_errors == 1 and "API server unreachable" in twin.last_error
        assert text.count('code="200"') == 3
        assert "rlscale_twin_api_errors_total 1" in text
    finally:
        twin.stop()


def test_serves_metrics_over_http_and_nothing_else() -> None:
    twin = make_twin(FakeDeployment(), [50.0] * 100, time.monotonic)
    twin.start()
    try:
        with urllib.request.urlopen(f"{twin.url}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert resp.status == 200 and "container_cpu_usage_seconds_total{" in body
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{twin.url}/other", timeout=5)
        assert info.value.code == 404
    finally:
        twin.stop()


def test_every_metric_the_default_queries_read_is_exported() -> None:
    clock = Clock()
    twin = make_twin(FakeDeployment(), [50.0] * 100, clock)
    twin.start()
    try:
        clock.t += 1.0
        text = twin.scrape()
    finally:
        twin.stop()
    wanted = {name for s in SIGNALS for name in re.findall(r"([a-z_]+)\{", s.default)}
    exported = set(re.findall(r"^([a-z_]+)\{", text, re.M))
    assert wanted and wanted <= exported, wanted - exported
