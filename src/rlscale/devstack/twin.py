"""Twin exporter: the workload metrics a fake (kwok) Deployment would have, predicted by rlscale's simulator.

Why it exists: on the local control plane pods are fake (kwok plays the kubelet), so no
container runs and nothing produces CPU, memory or request metrics. The operator under
test must still read *real* Prometheus and act through the *real* API server, and what it
reads must react to what it did. The twin closes that loop:

    Prometheus ──scrape──► twin ──GET──► API server (Deployment replicas + limits, its pods)
                             │
                             └─► rlscale.training.sim.VectorSim.step_targets(replicas, limits)
                                 under a load trace, time-compressed by ``speed``

On every scrape the twin reads the Deployment's *current* replicas and container limits
and its running pods, advances the simulator to "now" (``speed`` simulated seconds per
wall second) with those targets, and serves, per pod, what the simulator predicts, under
the names and labels the operator's default queries (:mod:`rlscale.operator.queries`)
expect: ``container_cpu_usage_seconds_total`` and ``container_memory_working_set_bytes``
(cAdvisor's names, with ``namespace``/``pod``/``container``), ``http_requests_total``
(``code`` 200 or 503), the ``http_request_duration_seconds`` histogram and
``http_requests_in_flight``.

The service model is the simulator's, not a copy: pods become ready after the start-up
delay, a limit change rolls the pods, load past capacity queues and drops, memory grows
with in-flight requests. Rates are the simulator's per-second values served in wall time
(a counter grows by ``rate × wall seconds``), so ``rate(...)`` in PromQL reads the
simulated requests per second; latencies are physical and not compressed. The latency
histogram is filled from a log-normal fitted to the simulated p50 and p99, with buckets
fine enough (×1.15) that ``histogram_quantile`` returns them within a few percent.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from rlscale.policy.limits import ScalingLimits
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

__all__ = [
    "LATENCY_BUCKETS_S",
    "DeploymentState",
    "TwinExporter",
    "TwinSample",
    "TwinTarget",
    "read_deployment_state",
]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
#: Latency histogram bounds (seconds): 1 ms to ~60 s, ×1.15 apart, so interpolation inside one bucket errs < 15 %.
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(
    round(0.001 * 1.15**i, 6) for i in range(int(math.log(60_000) / math.log(1.15)) + 2)
)
_Z99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True, slots=True)
class TwinTarget:
    """The Deployment the twin mirrors and the container whose limits drive the simulated pods."""

    namespace: str
    deployment: str
    container: str


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """What the twin reads from the API server on each scrape."""

    replicas: int
    cpu_limit_m: int
    memory_limit_mib: int
    pods: tuple[str, ...]  # running, not terminating


@dataclass(frozen=True, slots=True)
class TwinSample:
    """One simulated interval: what the service really did (the simulator's truth, not a noisy view)."""

    wall_s: float  # wall seconds since the twin started, at the end of the interval
    sim_s: float  # simulated seconds since the trace's first row, at the start of the interval
    load_rps: float
    served_rps: float
    error_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_utilization: float
    replicas: int
    ready_replicas: float
    cpu_limit_m: int
    memory_limit_mib: int
    slo_violated: bool
    oom_kills: float


def _json(call: Callable[[], Any]) -> dict[str, Any] | None:
    """Run a client call made with ``_preload_content=False`` and decode its JSON; None on 404.

    Plain JSON instead of the client's model objects: the twin reads a few fields every second.
    """
    try:
        resp = call()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data: dict[str, Any] = json.loads(resp.data)
    return data


def read_deployment_state(api: client.ApiClient, target: TwinTarget) -> DeploymentState | None:
    """Replicas, the container's limits and the running pods of the target; ``None`` if it is gone."""
    ns, name = target.namespace, target.deployment
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    dep = _json(lambda: apps.read_namespaced_deployment(name, ns, _preload_content=False))
    if dep is None:
        return None
    spec = dep.get("spec") or {}
    containers = {c.get("name"): c for c in (spec.get("template") or {}).get("spec", {}).get("containers", [])}
    if target.container not in containers:
        raise ValueError(f"Deployment {name} has no container {target.container!r}")
    limits = (containers[target.container].get("resources") or {}).get("limits") or {}
    missing = [k for k in ("cpu", "memory") if k not in limits]
    if missing:
        raise ValueError(f"container {target.container!r} of Deployment {name} has no {' and no '.join(missing)} limit")
    cpu_m = math.ceil(float(parse_quantity(limits["cpu"])) * 1000)
    mem_mib = math.ceil(float(parse_quantity(limits["memory"])) / _MIB)
    selector = ",".join(f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()))
    pods = _json(lambda: core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False)) or {}
    running = tuple(
        sorted(
            str(p["metadata"]["name"])
            for p in pods.get("items", [])
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        )
    )
    replicas = spec.get("replicas")
    return DeploymentState(int(replicas if replicas is not None else 1), cpu_m, mem_mib, running)


@dataclass(slots=True)
class _PodSeries:
    """Cumulative counters of one pod (Prometheus counters never go down while the pod lives)."""

    ok: float = 0.0
    errors: float = 0.0
    cpu_seconds: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS_S)))
    latency_sum: float = 0.0
    latency_count: float = 0.0


def lognormal_cdf(bounds_s: np.ndarray, p50_ms: float, p99_ms: float) -> np.ndarray:
    """P(latency ≤ bound) for a log-normal with the given median and 99th percentile."""
    p50 = max(p50_ms, 0.01) / 1000.0
    p99 = max(p99_ms / 1000.0, p50 * 1.0001)
    sigma = math.log(p99 / p50) / _Z99
    z = (np.log(bounds_s) - math.log(p50)) / (sigma * math.sqrt(2.0))
    return np.asarray(0.5 * (1.0 + np.vectorize(math.erf)(z)), dtype=np.float64)


class TwinExporter:
    """Serves the simulated metrics of one Deployment on ``http://127.0.0.1:<port>/metrics``.

    ``service`` describes the simulated service (CPU per request, memory, start-up delay,
    how the trace maps to requests/s); the twin overrides its limits and initial state
    with what the Deployment has when :meth:`start` runs. ``speed`` is simulated seconds
    per wall second. ``history`` holds one :class:`TwinSample` per simulated interval.
    """

    def __init__(
        self,
        api: client.ApiClient,
        target: TwinTarget,
        trace: Trace | Sequence[float] | np.ndarray,
        *,
        service: SimConfig | None = None,
        speed: float = 60.0,
        tick_s: float = 1.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        read_state: Callable[[], DeploymentState | None] | None = None,
    ) -> None:
        """Configure (not start). ``tick_s`` is the wall time one simulated interval should take at most."""
        if speed <= 0:
            raise ValueError(f"speed: must be > 0, got {speed}")
        if tick_s <= 0:
            raise ValueError(f"tick_s: must be > 0, got {tick_s}")
        self.api = api
        self.target = target
        self.trace = trace
        self.service = service or SimConfig()
        self.speed = float(speed)
        self.step_s = float(min(60.0, max(1.0, speed * tick_s)))
        self.seed = seed
        self.host = host
        self.port = port
        self.clock = clock
        self._read_state = read_state or (lambda: read_deployment_state(api, target))
        self.history: list[TwinSample] = []
        self.scrapes = 0
        self.api_errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._sim: VectorSim | None = None
        self._t0 = 0.0
        self._steps = 0
        self._last_wall = 0.0
        self._last_info: dict[str, Any] | None = None
        self._state: DeploymentState | None = None
        self._pods: dict[str, _PodSeries] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bounds = np.array(LATENCY_BUCKETS_S)

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (``/metrics`` serves the exposition)."""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as a Prometheus static target."""
        return f"{self.host}:{self.port}"

    def start(self) -> TwinExporter:
        """Read the Deployment, build the simulator from its current shape and start serving."""
        state = self._read_state()
        if state is None:
            raise ValueError(f"Deployment {self.target.namespace}/{self.target.deployment} not found")
        self._sim = self._build_sim(state)
        self._state = state
        self._t0 = self._last_wall = self.clock()
        self._advance(self._t0, state)
        twin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = twin.scrape().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="twin-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TwinExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _build_sim(self, state: DeploymentState) -> VectorSim:
        base = self.service
        # Wide limits: the twin is the world, not the policy; it must accept whatever the API says.
        limits = ScalingLimits(
            min_replicas=0,
            max_replicas=max(1000, state.replicas),
            cpu_limit_min_m=1,
            cpu_limit_max_m=max(1_000_000, state.cpu_limit_m),
            memory_limit_min_mib=1,
            memory_limit_max_mib=max(16_777_216, state.memory_limit_mib),
        )
        cfg = SimConfig.model_validate(
            {
                **base.model_dump(),
                "limits": limits,
                "step_s": self.step_s,
                "initial_replicas": state.replicas,
                "initial_cpu_limit_m": state.cpu_limit_m,
                "initial_memory_limit_mib": state.memory_limit_mib,
            }
        )
        sim = VectorSim(
            cfg, self.trace, n_envs=1, seed=self.seed, autoreset=False, fixed_start=True, episode_steps=10**9
        )
        sim.reset()
        return sim

    # --- the loop --------------------------------------------------------------------------------------

    def scrape(self) -> str:
        """Read the Deployment, advance the simulator to now, return the exposition text."""
        try:
            state = self._read_state()
        except Exception as exc:  # API hiccup: keep serving the last known shape, never invent a new one
            with self._lock:
                self.api_errors += 1
                self.last_error = repr(exc)
            log.warning("twin: reading the Deployment failed: %r", exc)
            state = self._state
        with self._lock:
            self.scrapes += 1
            self._advance(self.clock(), state)
            return self._render()

    def _advance(self, now: float, state: DeploymentState | None) -> None:
        sim = self._sim
        assert sim is not None
        self._state = state
        replicas = state.replicas if state is not None else 0
        due = int((now - self._t0) * self.speed / self.step_s) + 1  # the interval containing now is computed
        for _ in range(min(due - self._steps, 10_000)):
            cpu = state.cpu_limit_m if state is not None else int(sim.cpu_limit_m[0])
            mem = state.memory_limit_mib if state is not None else int(sim.memory_limit_mib[0])
            _, _, _, _, info = sim.step_targets([replicas], [cpu], [mem])
            self._last_info = info
            self._record(now, info)
            self._steps += 1
        wall_dt = max(0.0, now - self._last_wall)
        self._last_wall = now
        if self._last_info is None or state is None:
            self._pods = {}
            return
        self._accumulate(wall_dt, state, self._last_info)

    def _record(self, now: float, info: dict[str, Any]) -> None:
        def f(key: str) -> float:
            return float(np.asarray(info[key])[0])

        self.history.append(
            TwinSample(
                wall_s=now - self._t0,
                sim_s=self._steps * self.step_s,
                load_rps=f("request_rate"),
                served_rps=f("served") / self.step_s,
                error_rate=f("error_rate"),
                latency_p50_ms=f("latency_p50_ms"),
                latency_p99_ms=f("latency_p99_ms"),
                cpu_utilization=f("cpu_utilization"),
                replicas=int(f("replicas")),
                ready_replicas=f("ready_replicas"),
                cpu_limit_m=int(f("cpu_limit_m")),
                memory_limit_mib=int(f("memory_limit_mib")),
                slo_violated=bool(np.asarray(info["slo_violated"])[0]),
                oom_kills=f("oom_kills"),
            )
        )

    def _accumulate(self, wall_dt: float, state: DeploymentState, info: dict[str, Any]) -> None:
        """Grow each running pod's counters by the simulated per-second rates × the wall time since the last scrape."""
        self._pods = {name: self._pods.get(name) or _PodSeries() for name in state.pods}
        n = len(self._pods)
        if n == 0 or wall_dt <= 0:
            return

        def f(key: str) -> float:
            v = float(np.asarray(info[key])[0])
            return v if math.isfinite(v) else 0.0

        served_rps = f("served") / self.step_s
        dropped_rps = f("dropped") / self.step_s
        cpu_cores = f("cpu_utilization") * f("cpu_limit_m") / 1000.0  # per pod
        p50, p99 = f("latency_p50_ms"), f("latency_p99_ms")
        cdf = lognormal_cdf(self._bounds, p50, p99) if served_rps > 0 else np.zeros(len(self._bounds))
        sigma = math.log(max(p99, p50 * 1.0001) / max(p50, 0.01)) / _Z99
        mean_s = max(p50, 0.01) / 1000.0 * math.exp(sigma * sigma / 2.0)
        per_pod = served_rps * wall_dt / n
        for series in self._pods.values():
            series.ok += per_pod
            series.errors += dropped_rps * wall_dt / n
            series.cpu_seconds += cpu_cores * wall_dt
            series.buckets += per_pod * cdf
            series.latency_sum += per_pod * mean_s
            series.latency_count += per_pod

    def _render(self) -> str:
        t = self.target
        info = self._last_info
        if info is None or not self._pods:
            return self._meta_lines()

        def f(key: str) -> float:
            v = float(np.asarray(info[key])[0])
            return v if math.isfinite(v) else math.nan

        n = len(self._pods)
        ws_bytes = f("memory_utilization") * f("memory_limit_mib") * _MIB
        inflight = f("queue_per_replica") * f("ready_replicas") / n
        pods = sorted(self._pods.items())
        out: list[str] = []

        def sample(name: str, pod: str, value: float, **labels: str) -> None:
            pairs = {"namespace": t.namespace, "pod": pod, **labels}
            out.append(name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "} " + f"{value:.6f}")

        out.append("# TYPE container_cpu_usage_seconds_total counter")
        for p, s in pods:
            sample("container_cpu_usage_seconds_total", p, s.cpu_seconds, container=t.container)
        if math.isfinite(ws_bytes):
            out.append("# TYPE container_memory_working_set_bytes gauge")
            for p, _ in pods:
                sample("container_memory_working_set_bytes", p, ws_bytes, container=t.container)
        out.append("# TYPE http_requests_total counter")
        for p, s in pods:
            sample("http_requests_total", p, s.ok, code="200")
            sample("http_requests_total", p, s.errors, code="503")
        out.append("# TYPE http_request_duration_seconds histogram")
        for p, s in pods:
            for le, count in zip(LATENCY_BUCKETS_S, s.buckets, strict=True):
                sample("http_request_duration_seconds_bucket", p, float(count), le=repr(le))
            sample("http_request_duration_seconds_bucket", p, s.latency_count, le="+Inf")
            sample("http_request_duration_seconds_sum", p, s.latency_sum)
            sample("http_request_duration_seconds_count", p, s.latency_count)
        if math.isfinite(inflight):
            out.append("# TYPE http_requests_in_flight gauge")
            for p, _ in pods:
                sample("http_requests_in_flight", p, inflight)
        return "\n".join(out) + "\n" + self._meta_lines()

    def _meta_lines(self) -> str:
        """The twin's own state (``rlscale_twin_*``): handy in Prometheus next to what the operator sees."""
        last = self.history[-1] if self.history else None
        out = [
            "# TYPE rlscale_twin_scrapes_total counter",
            f"rlscale_twin_scrapes_total {self.scrapes}",
            "# TYPE rlscale_twin_api_errors_total counter",
            f"rlscale_twin_api_errors_total {self.api_errors}",
            "# TYPE rlscale_twin_simulated_seconds gauge",
            f"rlscale_twin_simulated_seconds {self._steps * self.step_s:.1f}",
        ]
        if last is not None:
            out += [
                "# TYPE rlscale_twin_offered_rps gauge",
                f"rlscale_twin_offered_rps {last.load_rps:.6f}",
                "# TYPE rlscale_twin_latency_p99_seconds gauge",
                f"rlscale_twin_latency_p99_seconds {last.latency_p99_ms / 1000.0:.6f}",
            ]
        return "\n".join(out) + "\n"

    # --- read-outs -------------------------------------------------------------------------------------

    def snapshot(self) -> TwinSample | None:
        """The latest simulated interval."""
        with self._lock:
            return self.history[-1] if self.history else None

    def samples(self) -> list[TwinSample]:
        """A copy of the history."""
        with self._lock:
            return list(self.history)

    @property
    def simulated_seconds(self) -> float:
        """Simulated time covered so far."""
        with self._lock:
            return self._steps * self.step_s
