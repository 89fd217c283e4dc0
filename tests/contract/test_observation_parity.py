"""Simulator/operator parity: one world state, two producers, the same encoded observation.

The policy is trained on the simulator's observations and run on the operator's. Both
derive from the declaration in :mod:`rlscale.policy.observation`, but each has its own
source code (the simulator's metrics pipeline; the operator's Deployment reader,
Prometheus queries and unit conversions). This test renders random simulator states the
way a cluster would show them — a Deployment object, and Prometheus HTTP answers in each
signal's documented unit (``rlscale.operator.queries.SIGNALS``), served on loopback and read
by the operator's real :class:`PrometheusReader` — and checks that the operator's path
gives the simulator's encoded observation, feature by feature, missing metrics included.

The conversion to Prometheus units below is written out by hand from the signals' units,
not taken from the declaration: a wrong ``scale`` or ``per`` in the declaration fails here.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from rlscale.operator.observe import build_observation, deployment_view
from rlscale.operator.prometheus import Endpoint, PrometheusReader
from rlscale.operator.queries import SIGNALS, Target, build_queries
from rlscale.policy.decide import DecisionConfig
from rlscale.policy.observation import FIELD_SOURCES, METRIC_FIELDS, SIGNAL_READS
from rlscale.policy.spec import FEATURE_NAMES, encode_matrix
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig

_MIB = 1024.0 * 1024.0


def _prometheus_units(cols: Mapping[str, float]) -> dict[float, dict[str, float]]:
    """What Prometheus would answer, per seconds-before-now, in each signal's unit (NaN = no series)."""
    ready = max(cols["ready_replicas"], 1.0)
    cpu_m, mem_mib = cols["cpu_limit_m"], cols["memory_limit_mib"]
    now = {
        "cpu_usage": cols["cpu_utilization"] * cpu_m / 1000.0,  # cores per pod
        "memory_working_set": cols["memory_utilization"] * mem_mib * _MIB,  # bytes, most-loaded pod
        "request_rate": cols["request_rate"],  # 1/s
        "error_rate": cols["error_rate"],  # fraction
        "latency_p50": cols["latency_p50_ms"] / 1000.0,  # seconds
        "latency_p99": cols["latency_p99_ms"] / 1000.0,
        "in_flight": cols["queue_per_replica"] * ready,  # whole Deployment
    }
    out = {0.0: now, 300.0: {"latency_p99": cols["latency_p99_prev_ms"] / 1000.0}}
    # Every lagged request rate: the same signal (requests per second), evaluated that long ago.
    for name, src in FIELD_SOURCES.items():
        if src.kind == "lagged" and src.lag_of == "request_rate":
            out.setdefault(src.offset_s, {})["request_rate"] = cols[name]
    return out


class _FakePrometheus:
    """A loopback HTTP server speaking Prometheus' instant-query API for one prepared answer."""

    def __init__(self) -> None:
        self.answers: dict[float, dict[str, float]] = {}
        self.now = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                params = {**parse_qs(url.query), **parse_qs(body)}
                at = float(params["time"][0])
                values = outer.answers.get(round(outer.now - at, 3), {})
                result = [
                    {"metric": {"rlscale_signal": key}, "value": [at, repr(float(v))]}
                    for key, v in values.items()
                    if not math.isnan(v)
                ]
                data = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[_FakePrometheus]:
    server = _FakePrometheus()
    yield server
    server.close()


def _deployment(cols: Mapping[str, float]) -> dict[str, Any]:
    limits = {"cpu": f"{int(cols['cpu_limit_m'])}m", "memory": f"{int(cols['memory_limit_mib'])}Mi"}
    return {
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {
            "replicas": int(cols["replicas"]),
            "template": {"spec": {"containers": [{"name": "app", "resources": {"limits": limits}}]}},
        },
        "status": {"readyReplicas": int(cols["ready_replicas"]), "observedGeneration": 1},
    }


def _operator_observation(prometheus: _FakePrometheus, cols: Mapping[str, float], config: DecisionConfig) -> np.ndarray:
    """The operator's path: Deployment → view, Prometheus answers → reader → observation → encoding."""
    prometheus.now = cols["timestamp"]
    prometheus.answers = _prometheus_units(cols)
    view = deployment_view(_deployment(cols), ["app"])
    queries = build_queries({}, Target("shop", "web", ("app",), "1m"), trusted=False)
    reader = PrometheusReader(ThreadPoolExecutor(1))
    endpoint = Endpoint(url=prometheus.url)

    async def read_all() -> dict[float, Mapping[str, float | None]]:
        out: dict[float, Mapping[str, float | None]] = {}
        for offset, keys in SIGNAL_READS.items():
            chosen = tuple(q for q in queries if q.key in keys)
            got = await reader.read(
                endpoint, chosen, at=cols["timestamp"] - offset, timeout_s=5.0, max_sample_age_s=120.0
            )
            out[offset] = got.values
        return out

    try:
        readings = asyncio.run(read_all())
    finally:
        reader.close()
    obs, unknown = build_observation(cols["timestamp"], view, readings)
    assert sorted(unknown) == sorted(n for n in METRIC_FIELDS if math.isnan(cols[n]))
    return encode_matrix(obs.raw(config))[0]


def test_signal_units_cover_every_signal() -> None:
    """The hand-written rendering above knows every signal the declaration reads."""
    cols = dict.fromkeys(("ready_replicas", "cpu_limit_m", "memory_limit_mib"), 1.0)
    rendered = _prometheus_units(cols | dict.fromkeys(METRIC_FIELDS, 1.0))
    for offset, keys in SIGNAL_READS.items():
        assert set(keys) <= set(rendered.get(offset, {})), offset
    assert {s.key for s in SIGNALS} == set(rendered[0.0])


@pytest.mark.parametrize("seed", range(12))
def test_operator_path_encodes_what_the_simulator_encodes(prometheus: _FakePrometheus, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim_config = SimConfig(metrics_missing_prob=0.25, metric_noise=0.1)
    lim = sim_config.limits
    n_envs = 4
    load = rng.gamma(2.0, 1.0, size=600) * rng.uniform(0.2, 3.0)
    sim = VectorSim(sim_config, load, n_envs=n_envs, seed=seed, autoreset=False, episode_steps=400)
    obs = sim.reset()
    for _ in range(int(rng.integers(0, 12))):
        obs, *_ = sim.step_targets(
            rng.integers(lim.min_replicas, lim.max_replicas + 1, n_envs),
            rng.choice([250, 500, 1000, 2000], n_envs),
            rng.choice([512, 1024, 2048], n_envs),
        )
    config = DecisionConfig(limits=lim, objective=sim_config.objective)
    columns = sim.columns()
    for i in range(n_envs):
        cols = {name: float(v[i]) for name, v in columns.items()}
        want = obs[i]
        # Besides the simulator's own gaps (a whole failed query), lose single series at random.
        dropped = [n for n in METRIC_FIELDS if rng.random() < 0.2]
        if dropped:
            for name in dropped:
                cols[name] = math.nan
            raw = np.array([[cols[name]] for name in columns], dtype=np.float64)
            want = encode_matrix(raw)[0]
        got = _operator_observation(prometheus, cols, config)
        for j, name in enumerate(FEATURE_NAMES):
            assert got[j] == pytest.approx(want[j], rel=1e-5, abs=1e-6), (
                f"seed {seed} env {i}: feature {name}: operator {got[j]} != simulator {want[j]} (dropped {dropped})"
            )
