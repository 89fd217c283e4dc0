"""The twin exporter against a real Prometheus: the operator's own queries read what it simulates.

A real Prometheus scrapes the twin and evaluates the operator's default PromQL templates,
so a renamed metric or label on either side fails here. The twin's own arithmetic is
tested without Prometheus in tests/devstack/test_twin.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pytest

from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.twin import DeploymentState, TwinExporter, TwinTarget
from rlscale.operator.queries import Target, build_queries
from rlscale.training.sim_config import SimConfig

pytestmark = pytest.mark.e2e

NS, DEP, CONTAINER = "shop", "web", "app"


def three_pods() -> DeploymentState:
    """A fixed Deployment (3 replicas, 1000m, 1 GiB), pod names following the ReplicaSet pattern."""
    return DeploymentState(3, 1000, 1024, tuple(f"{DEP}-5d8f7c9b4-{i:05d}" for i in range(3)))


def test_the_operators_default_queries_read_the_simulated_truth(
    local_prometheus: Callable[..., LocalPrometheus],
) -> None:
    service = SimConfig(absolute_rps_per_unit=1.0, arrival_noise=0.0)
    twin = TwinExporter(
        None, TwinTarget(NS, DEP, CONTAINER), np.full(400, 150.0), service=service, speed=60.0, read_state=three_pods
    )  # type: ignore[arg-type]
    twin.start()
    try:
        prom = local_prometheus(
            scrape_configs=[{"job_name": "twin", "honor_labels": True, "static_configs": [{"targets": [twin.address]}]}]
        )
        queries = {q.key: q.query for q in build_queries({}, Target(NS, DEP, (CONTAINER,), "10s"), trusted=False)}
        prom.wait_for_value(queries["request_rate"], timeout=30)
        time.sleep(11)  # a full rate window of scrapes
        got = {key: float(prom.query(q)[0]["value"][1]) for key, q in queries.items()}
        truth = twin.snapshot()
        assert truth is not None
        assert got["request_rate"] == pytest.approx(150.0, rel=0.1)
        assert got["error_rate"] == pytest.approx(truth.error_rate, abs=0.01)
        assert got["cpu_usage"] == pytest.approx(truth.cpu_utilization * 1.0, rel=0.1)  # cores per pod at 1000m
        assert got["latency_p99"] * 1000 == pytest.approx(truth.latency_p99_ms, rel=0.15)
        assert got["latency_p50"] * 1000 == pytest.approx(truth.latency_p50_ms, rel=0.15)
        assert got["memory_working_set"] > 0 and got["in_flight"] >= 0
        assert all(math.isfinite(v) for v in got.values())
    finally:
        twin.stop()
