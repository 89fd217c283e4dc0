"""Synthetic exporters for the scale benchmark's real Prometheus: the default templates' metrics for N workloads.

``bench/operator_scale.py --prometheus real`` has a real Prometheus scrape this, so the
operator's queries are answered by PromQL over real series. Each Deployment's load is
:class:`_fake_prometheus.Workload` (a sinusoidal CPU demand of its own, divided by the
replicas it has *now*, so scaling changes what is measured: a closed loop), exposed the
way cAdvisor and an instrumented app expose it:

* ``container_cpu_usage_seconds_total`` and ``container_memory_working_set_bytes`` of the
  ``app`` container, per pod;
* ``http_requests_total`` by ``code`` (200 and 503), the latency histogram
  ``http_request_duration_seconds`` (8 buckets, exponential latency with the workload's
  median), ``http_requests_in_flight``.

One pod (``<name>-5d8c7b9f4-<hash>``) stands for all of a Deployment's replicas: it carries
the per-pod CPU and memory and the whole Deployment's request counters. The default
templates average or take the maximum over pods and sum request rates over them, so the
operator reads the same values as from ``replicas`` identical pods, and Prometheus holds
15 series per Deployment instead of 15 × replicas (the benchmark is about the operator).
Counters grow by rate × time since the previous scrape, so ``rate()`` is what was set.
Served by a threaded stdlib HTTP server, one target per namespace.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _fake_prometheus import Workload

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class _Counters:
    cpu: float = 0.0
    ok: float = 0.0
    failed: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    last: float = 0.0


def pod_name(deployment: str) -> str:
    suffix = hashlib.sha256(deployment.encode()).hexdigest()[:5]
    return f"{deployment}-5d8c7b9f4-{suffix}"


class NamespaceExporter:
    """The text exposition of every Deployment of one namespace, advanced at each scrape."""

    def __init__(
        self, namespace: str, deployments: Sequence[str], replicas_of: Callable[[str, str], int | None], seed: int
    ) -> None:
        self.namespace = namespace
        self._replicas_of = replicas_of
        self._workloads = {d: Workload.for_target(namespace, d, seed) for d in deployments}
        self._counters = {d: _Counters(last=time.time()) for d in deployments}
        self._lock = threading.Lock()
        self.scrapes = 0

    def render(self) -> bytes:
        with self._lock:
            self.scrapes += 1
            now = time.time()
            ns = self.namespace
            cpu, mem, req, hist, inflight = [], [], [], [], []
            for name, w in self._workloads.items():
                c = self._counters[name]
                s = w.signals(now, self._replicas_of(ns, name) or 1)
                dt = max(0.0, now - c.last)
                c.last = now
                rate = s["request_rate"]
                c.cpu += s["cpu_usage"] * dt
                c.failed += rate * s["error_rate"] * dt
                c.ok += rate * (1.0 - s["error_rate"]) * dt
                # Exponential latency with the workload's median: P(X <= b) = 1 - 2^(-b / p50).
                p50 = s["latency_p50"]
                for i, b in enumerate(BUCKETS):
                    c.buckets[i] += rate * dt * (1.0 - math.pow(2.0, -b / p50))
                c.buckets[-1] += rate * dt
                c.latency_sum += rate * dt * p50 / math.log(2.0)
                pod = pod_name(name)
                lp = f'namespace="{ns}",pod="{pod}"'
                lc = lp + ',container="app"'
                cpu.append(f"container_cpu_usage_seconds_total{{{lc}}} {c.cpu!r}")
                mem.append(f"container_memory_working_set_bytes{{{lc}}} {s['memory_working_set']!r}")
                req.append(f'http_requests_total{{{lp},code="200"}} {c.ok!r}')
                req.append(f'http_requests_total{{{lp},code="503"}} {c.failed!r}')
                for b, v in zip(BUCKETS, c.buckets, strict=False):
                    hist.append(f'http_request_duration_seconds_bucket{{{lp},le="{b}"}} {v!r}')
                hist.append(f'http_request_duration_seconds_bucket{{{lp},le="+Inf"}} {c.buckets[-1]!r}')
                hist.append(f"http_request_duration_seconds_sum{{{lp}}} {c.latency_sum!r}")
                hist.append(f"http_request_duration_seconds_count{{{lp}}} {c.buckets[-1]!r}")
                inflight.append(f"http_requests_in_flight{{{lp}}} {s['in_flight']!r}")
        parts = [
            "# TYPE container_cpu_usage_seconds_total counter",
            *cpu,
            "# TYPE container_memory_working_set_bytes gauge",
            *mem,
            "# TYPE http_requests_total counter",
            *req,
            "# TYPE http_request_duration_seconds histogram",
            *hist,
            "# TYPE http_requests_in_flight gauge",
            *inflight,
        ]
        return ("\n".join(parts) + "\n").encode()


class ExporterServer:
    """One HTTP server on loopback serving ``/metrics/<namespace>`` for each namespace's exporter."""

    def __init__(self, exporters: Sequence[NamespaceExporter]) -> None:
        by_path = {f"/metrics/{e.namespace}": e for e in exporters}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter = by_path.get(self.path)
                if exporter is None:
                    self.send_error(404)
                    return
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-exporter", daemon=True)
        self.exporters = list(exporters)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> ExporterServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def scrape_configs(self, interval: str) -> list[dict[str, object]]:
        """Prometheus scrape jobs, one per namespace; ``honor_labels`` keeps namespace/pod as exported."""
        return [
            {
                "job_name": f"bench-{e.namespace}",
                "honor_labels": True,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": f"/metrics/{e.namespace}",
                "static_configs": [{"targets": [self.address]}],
            }
            for e in self.exporters
        ]
