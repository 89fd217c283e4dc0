"""Real load on real pods, measured: the real-node counterpart of the twin exporter.

On a real node the demo Deployment's pods run the demo app (:mod:`.demo_app`), so
nothing needs simulating. This module replays a load pattern with the load generator
(:mod:`.loadgen`) from the host straight at the pods' IPs — there is no kube-proxy, so
it round-robins over the pods that are Ready, as a Service would over its endpoints —
and samples what Prometheus measured (the pods' own ``/metrics`` and the kubelet's
cAdvisor) into :class:`~.twin.TwinSample` rows, so the demo's summary, plot and decision
log read real measurements through the same code that reads the twin's.

:class:`RealWorkload` has the part of :class:`~.twin.TwinExporter`'s interface the demo
uses (``start``, ``stop``, ``snapshot``, ``samples``, ``simulated_seconds``, ``step_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from rlscale.training.workloads import Trace

from .loadgen import LoadConfig, LoadGenerator, LoadPlan, LoadSummary, Pattern
from .prometheus import LocalPrometheus
from .twin import TwinSample, TwinTarget, read_deployment_state

__all__ = ["PodEndpoints", "RealWorkload", "pattern_of"]

log = logging.getLogger(__name__)


def pattern_of(trace: Trace, step_s: float = 60.0) -> Pattern:
    """A trace's rows as the load generator's step function (one row per ``step_s``)."""
    values = tuple(float(v) for v in trace.values)
    return Pattern(
        t_seconds=tuple(i * step_s for i in range(len(values))), values=values, step_s=step_s, source=trace.name
    )


class PodEndpoints:
    """URLs of a Deployment's Ready pods, refreshed from the API every ``period_s`` in a thread.

    Also remembers every pod it has seen (by UID), which is how the demo counts the
    pods its scaling created, and, with ``sd_file``, writes every running pod as a
    Prometheus ``file_sd`` target labelled with ``namespace`` and ``pod`` (Debian's
    Prometheus is built without Kubernetes service discovery; file discovery is what it
    has, and it picks up a rewritten file within a second or so).
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        port: int,
        *,
        period_s: float = 1.0,
        sd_file: Path | None = None,
    ) -> None:
        """``selector``: a label selector (``app=demo``) of the pods."""
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.port = port
        self.period_s = period_s
        self.sd_file = sd_file
        self.seen: set[str] = set()
        self._urls: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-endpoints", daemon=True)

    def urls(self) -> list[str]:
        """The current Ready pods' URLs (a copy; may be empty)."""
        return list(self._urls)

    def refresh(self) -> None:
        """Read the pods once."""
        pods = client.CoreV1Api(self.api).list_namespaced_pod(self.namespace, label_selector=self.selector).items
        urls = []
        targets: list[dict[str, Any]] = []
        for pod in pods:
            meta: Any = pod.metadata
            self.seen.add(str(meta.uid))
            if pod.status is None or not pod.status.pod_ip or pod.status.phase != "Running":
                continue
            labels = {"namespace": self.namespace, "pod": str(meta.name)}
            targets.append({"targets": [f"{pod.status.pod_ip}:{self.port}"], "labels": labels})
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if ready and meta.deletion_timestamp is None:
                urls.append(f"http://{pod.status.pod_ip}:{self.port}/")
        self._urls = sorted(urls)
        if self.sd_file is not None:
            tmp = self.sd_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(targets))
            tmp.replace(self.sd_file)

    def start(self) -> PodEndpoints:
        """Read once, then keep refreshing in the background (a no-op when already started)."""
        if not self._thread.is_alive():
            self.refresh()
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.refresh()
            except Exception as exc:  # the API may blip; keep the last list
                log.debug("refreshing pod endpoints failed: %s", exc)


class RealWorkload:
    """Replay ``trace`` at ``speed`` against the target's real pods; sample Prometheus every ``sample_every_s``.

    ``peak_rps`` maps the busiest row of the replayed trace onto a request rate; pick it
    from the pods' capacity (the demo app serves ``cpu_limit / work_ms`` requests per
    second per pod).
    """

    def __init__(
        self,
        api: client.ApiClient,
        target: TwinTarget,
        trace: Trace,
        prometheus: LocalPrometheus,
        *,
        speed: float,
        peak_rps: float,
        port: int = 8080,
        endpoints: PodEndpoints | None = None,
        slo_ms: float = 250.0,
        max_error_rate: float = 0.01,
        sample_every_s: float = 5.0,
        window: str = "10s",
        seed: int = 0,
    ) -> None:
        """Configure (not start)."""
        self.api = api
        self.target = target
        self.prometheus = prometheus
        self.speed = speed
        self.slo_ms = slo_ms
        self.max_error_rate = max_error_rate
        self.sample_every_s = sample_every_s
        self.window = window
        pattern = pattern_of(trace)
        busiest = max(pattern.values) or 1.0
        self.plan = LoadPlan(pattern=pattern, speedup=speed, scale=peak_rps / busiest, offset_s=0.0)
        self.config = LoadConfig(
            url="http://127.0.0.1/",  # unused: every request goes to a Ready pod's own URL
            speedup=speed,
            duration_s=min(7 * 86_400.0, self.plan.pattern_duration_s()),
            max_in_flight=512,
            timeout_s=5.0,
            seed=seed,
            report_every_s=30.0,
        )
        self.endpoints = endpoints or PodEndpoints(
            api, target.namespace, f"app.kubernetes.io/name={target.deployment}", port
        )
        self.generator = LoadGenerator(self.config, self.plan, targets=self.endpoints.urls)
        self.load_summary: LoadSummary | None = None
        self._samples: list[TwinSample] = []
        self._t0 = 0.0
        self._stop = threading.Event()
        self._load_loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    @property
    def step_s(self) -> float:
        """Pattern seconds one sample stands for."""
        return self.sample_every_s * self.speed

    @property
    def simulated_seconds(self) -> float:
        """Pattern seconds replayed so far."""
        return (time.monotonic() - self._t0) * self.speed if self._t0 else 0.0

    @property
    def pods_seen(self) -> int:
        """Distinct pods of the target seen while running (those the scaling created included)."""
        return len(self.endpoints.seen)

    def snapshot(self) -> TwinSample | None:
        """The latest sample."""
        return self._samples[-1] if self._samples else None

    def samples(self) -> list[TwinSample]:
        """Every sample so far, oldest first."""
        return list(self._samples)

    def start(self) -> RealWorkload:
        """Start the endpoint watch (unless already running), the load and the sampler."""
        self.endpoints.start()
        self._t0 = time.monotonic()
        for name, fn in (("real-load", self._run_load), ("real-sampler", self._sample_loop)):
            thread = threading.Thread(target=fn, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the load (requests in flight are abandoned), the sampler and the watch."""
        self._stop.set()
        loop = self._load_loop
        if loop is not None and loop.is_running():
            for task in asyncio.all_tasks(loop):
                loop.call_soon_threadsafe(task.cancel)
        for thread in self._threads:
            thread.join(timeout=15)
        self.endpoints.stop()

    def __enter__(self) -> RealWorkload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- threads ------------------------------------------------------------------------

    def _run_load(self) -> None:
        loop = self._load_loop = asyncio.new_event_loop()
        try:
            self.load_summary = loop.run_until_complete(self.generator.run())
        except (asyncio.CancelledError, RuntimeError) as exc:
            log.debug("load generator stopped: %r", exc)
            self.load_summary = self.generator.summary
        finally:
            with contextlib.suppress(Exception):
                loop.close()

    def _sample_loop(self) -> None:
        next_at = self._t0 + self.sample_every_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.sample_every_s
            try:
                sample = self.measure()
            except Exception as exc:  # Prometheus or the API may blip; skip one sample
                log.debug("sampling failed: %s", exc)
                continue
            if sample is not None:
                self._samples.append(sample)

    def _value(self, promql: str) -> float:
        result = self.prometheus.query(promql)
        if not result:
            return math.nan
        return float(result[0]["value"][1])

    def measure(self) -> TwinSample | None:
        """One sample: what Prometheus measured over the last window, and the Deployment's state."""
        state = read_deployment_state(self.api, self.target)
        if state is None:
            return None
        t, w = self.target, self.window
        sel = f'namespace="{t.namespace}", pod=~"{t.deployment}-.*"'
        total = self._value(f"sum(rate(http_requests_total{{{sel}}}[{w}]))")
        errors = self._value(f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[{w}])) or vector(0)')
        p50, p99 = (
            self._value(
                f"histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[{w}])))"
            )
            for q in (0.5, 0.99)
        )
        cpu = self._value(
            f'avg(sum by (pod) (rate(container_cpu_usage_seconds_total{{{sel}, container="{t.container}"}}[{w}])))'
        )
        elapsed = time.monotonic() - self._t0
        offered = self.plan.rate_at(elapsed)
        total = 0.0 if math.isnan(total) else total
        error_rate = min(1.0, errors / total) if total > 0 and not math.isnan(errors) else 0.0
        p50_ms = 0.0 if math.isnan(p50) else p50 * 1000.0
        p99_ms = 0.0 if math.isnan(p99) else p99 * 1000.0
        pods = self._pods()
        return TwinSample(
            wall_s=elapsed,
            sim_s=max(0.0, elapsed - self.sample_every_s) * self.speed,
            load_rps=offered,
            served_rps=total * (1.0 - error_rate),
            error_rate=error_rate,
            latency_p50_ms=p50_ms,
            latency_p99_ms=p99_ms,
            cpu_utilization=(cpu / (state.cpu_limit_m / 1000.0)) if not math.isnan(cpu) and state.cpu_limit_m else 0.0,
            replicas=state.replicas,
            ready_replicas=float(pods["ready"]),
            cpu_limit_m=state.cpu_limit_m,
            memory_limit_mib=state.memory_limit_mib,
            slo_violated=p99_ms > self.slo_ms or error_rate > self.max_error_rate,
            oom_kills=float(pods["oom_kills"]),
        )

    def _pods(self) -> dict[str, int]:
        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            self.target.namespace, label_selector=self.endpoints.selector
        )
        ready = oom = 0
        for pod in pods.items:
            status: Any = pod.status
            if status is None:
                continue
            ready += any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
            for cs in status.container_statuses or []:
                last = cs.last_state.terminated if cs.last_state else None
                oom += bool(last is not None and last.reason == "OOMKilled")
        return {"ready": ready, "oom_kills": oom}


def wait_ready_pods(endpoints: PodEndpoints, count: int, timeout: float, what: Callable[[], str] = lambda: "") -> None:
    """Block until ``count`` pods are Ready (refreshing the endpoints), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        endpoints.refresh()
        if len(endpoints.urls()) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {count} Ready pods {what()}".strip())
        time.sleep(0.5)
