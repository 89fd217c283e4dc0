"""The demo workload: a small HTTP service whose capacity follows its CPU limit and replica count.

The operator needs a target whose behaviour under load is *real*: more requests than it
can serve must show up as rising latency, queueing and finally errors, and both levers
the policy pulls (replicas and the CPU limit) must change that. So every request does a
fixed amount of genuine CPU work — SHA-256 over a buffer, calibrated at start-up to
``--work-ms`` of CPU time — on a pool of worker threads sized from the container's CPU
allowance. ``hashlib`` releases the GIL for buffers of
2 KiB and more, so the threads really run in parallel and the kernel's CFS quota (the
CPU limit) is what caps throughput: one pod serves about ``cores / cost_per_request``
requests per second, and a Service in front of N pods about N times that.

Requests beyond the workers wait in a bounded queue; beyond that the service sheds load
with 503, which the operator sees as its error rate. It serves the metric names the
operator's default queries read (``http_requests_total``, the
``http_request_duration_seconds`` histogram and the ``http_requests_in_flight`` gauge)
plus the standard ``process_*`` metrics, on ``/metrics`` of the same port.

Run: ``python -m rlscale.devstack.demo_app --port 8080`` (see ``--help``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "METRIC_IN_FLIGHT",
    "METRIC_LATENCY",
    "METRIC_REQUESTS",
    "CpuAllowance",
    "DemoApp",
    "DemoConfig",
    "capacity_rps",
    "measure_hash_rate",
    "read_cpu_allowance",
    "worker_count",
]

log = logging.getLogger(__name__)

#: Metric names the operator's default PromQL queries read. Changing one breaks the demo.
METRIC_REQUESTS = "http_requests_total"
METRIC_LATENCY = "http_request_duration_seconds"
METRIC_IN_FLIGHT = "http_requests_in_flight"

#: Latency buckets from 1 ms to 10 s: the demo's service times are milliseconds, and an
#: overloaded pod's queueing delay reaches seconds before requests are shed.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The unit of work: SHA-256 over this many bytes per call. Above CPython's 2 KiB
#: threshold, so each call runs without the GIL.
_CHUNK = 64 * 1024
_BUFFER = os.urandom(_CHUNK)

#: The path that does work and is counted; probes and /metrics are not, so scrapes and
#: kubelet checks do not look like user traffic.
WORK_PATH = "/"


class CpuAllowance(BaseModel):
    """How many CPU cores this process may use, and where that number came from."""

    model_config = ConfigDict(frozen=True)

    cores: float = Field(gt=0)
    source: str


def _parse_cgroup_v2(path: Path) -> float | None:
    """Cores from a cgroup v2 ``cpu.max`` file (``"<quota|max> <period>"``); None when unlimited."""
    text = path.read_text().strip()
    parts = text.split()
    try:
        if len(parts) != 2:
            raise ValueError
        if parts[0] == "max":
            return None
        quota, period = int(parts[0]), int(parts[1])
        if quota <= 0 or period <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}: expected '<quota|max> <period>' (positive integers), got {text!r}") from None
    return quota / period


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup paths from ``/proc/self/cgroup``: (v2 ``0::`` path, v1 ``cpu`` controller path)."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "" and line.startswith("0::"):
            v2 = path.strip()
        elif "cpu" in controllers.split(","):
            v1 = path.strip()
    return v2, v1


def _under(root: Path, own: str | None) -> list[Path]:
    """The process's own cgroup directory below ``root`` (if it has one), then ``root`` itself.

    Without a cgroup namespace the own path names a sub-directory; inside one (or when a
    runtime mounts the container's cgroup at the root) the root is the container's.
    """
    dirs = [root / own.lstrip("/")] if own and own != "/" else []
    return [*dirs, root]


def _v1_cores(directory: Path) -> float | None:
    """Cores from the cgroup v1 CFS files in ``directory``; None when unlimited (quota -1)."""
    quota_file, period_file = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
    try:
        quota, period = int(quota_file.read_text()), int(period_file.read_text())
    except ValueError:
        raise ValueError(f"{directory}: cpu.cfs_quota_us / cpu.cfs_period_us are not integers") from None
    return quota / period if quota > 0 and period > 0 else None


def read_cpu_allowance(
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cpus_available: int | None = None,
) -> CpuAllowance:
    """The CPU limit of the container this runs in, or the CPUs the process may run on.

    Kubernetes turns ``resources.limits.cpu`` into a CFS quota: ``cpu.max`` on cgroup v2,
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` on cgroup v1 (mounted at ``cpu/`` or
    ``cpu,cpuacct/``). Each is looked up in the process's own cgroup first, then at the
    mount root. Without a quota the answer is the number of CPUs in the affinity mask,
    and a quota never counts for more than those.
    """
    if cpus_available is None:
        cpus_available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    own_v2, own_v1 = _own_cgroups(proc_cgroup)
    for directory in _under(cgroup_root, own_v2):
        path = directory / "cpu.max"
        if path.is_file():
            cores = _parse_cgroup_v2(path)
            if cores is not None:
                return CpuAllowance(cores=min(cores, cpus_available), source=f"cgroup v2 {path}")
            break
    for mount in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"):
        for directory in _under(mount, own_v1):
            if not (directory / "cpu.cfs_quota_us").is_file():
                continue
            cores = _v1_cores(directory)
            if cores is not None:
                return CpuAllowance(cores=min(cores, cpus_available), source=f"cgroup v1 {directory}")
            break
    return CpuAllowance(cores=float(cpus_available), source="cpus available (no CPU quota)")


def worker_count(cores: float) -> int:
    """Worker threads for a CPU allowance: enough to use every (partial) core, no more.

    With fewer threads than cores the pod could not use its limit; with more, the extra
    threads would only time-slice the same quota and hide queueing inside the kernel.
    """
    return max(1, math.ceil(cores - 1e-9))


def capacity_rps(cores: float, seconds_per_request: float) -> float:
    """Requests per second one pod can sustain: its cores divided by the CPU cost of a request.

    ``seconds_per_request`` is the CPU time of one request's work on one unthrottled core
    (``--work-ms``; the app calibrates its hashing to it at start-up). Event-loop overhead
    is not counted: at the default 20 ms per request it is under 5 % of the cost.
    """
    if seconds_per_request <= 0:
        raise ValueError(f"seconds_per_request must be > 0, got {seconds_per_request}")
    return min(cores, worker_count(cores)) / seconds_per_request


def do_work(n_bytes: int) -> None:
    """Burn CPU: SHA-256 over ``n_bytes`` (in 64 KiB calls, each without the GIL)."""
    h = hashlib.sha256()
    full, rest = divmod(n_bytes, _CHUNK)
    for _ in range(full):
        h.update(_BUFFER)
    if rest:
        h.update(_BUFFER[:rest])


def measure_hash_rate(min_cpu_s: float = 0.05) -> float:
    """Bytes this machine hashes per CPU-second on one core.

    Measured with the thread's CPU clock, not the wall clock, so a pod that is already
    throttled by its CPU quota (or shares a busy node) still measures the speed of the
    core, not of its slice of it.
    """
    n = 0
    t0 = time.thread_time()
    while True:
        do_work(16 * _CHUNK)
        n += 16 * _CHUNK
        elapsed = time.thread_time() - t0
        if elapsed >= min_cpu_s:
            return n / elapsed


class DemoConfig(BaseModel):
    """Settings of the demo service (flags of ``python -m rlscale.devstack.demo_app``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("0.0.0.0", min_length=1, description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0: any free port).")
    work_ms: float = Field(
        20.0, ge=0, le=10_000, description="CPU milliseconds of work per request on one core (0: no work)."
    )
    queue_per_worker: int = Field(
        32, ge=0, le=100_000, description="Requests that may wait per worker before the service answers 503."
    )
    cpu_cores: float | None = Field(
        None, gt=0, le=1024, description="Override the detected CPU allowance (cores); default: read the cgroup."
    )


@dataclass(frozen=True, slots=True)
class _Metrics:
    requests: Counter
    latency: Histogram
    in_flight: Gauge
    cores: Gauge
    workers: Gauge
    queue_limit: Gauge


def _make_metrics(registry: CollectorRegistry) -> _Metrics:
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return _Metrics(
        requests=Counter(
            METRIC_REQUESTS, "HTTP requests served, by method, path and status code.", ["method", "path", "code"],
            registry=registry,
        ),
        latency=Histogram(
            METRIC_LATENCY, "Time from receiving a request to sending its response, including queueing.",
            ["method", "path"], buckets=LATENCY_BUCKETS, registry=registry,
        ),
        in_flight=Gauge(METRIC_IN_FLIGHT, "Requests being worked on or waiting for a worker.", registry=registry),
        cores=Gauge("demo_cpu_allowance_cores", "CPU cores this pod may use (its CPU limit).", registry=registry),
        workers=Gauge("demo_workers", "Worker threads doing request work.", registry=registry),
        queue_limit=Gauge(
            "demo_queue_limit", "Requests in flight beyond which the service answers 503.", registry=registry
        ),
    )  # fmt: skip


class DemoApp:
    """The aiohttp application plus its worker pool and metrics registry.

    Each instance has its own registry, so several can run in one process (tests).
    """

    def __init__(
        self, config: DemoConfig, allowance: CpuAllowance | None = None, hash_rate: float | None = None
    ) -> None:
        """Detect (or take) the CPU allowance and calibrate (or take) this machine's hash rate."""
        self.config = config
        if config.cpu_cores is not None:
            allowance = CpuAllowance(cores=config.cpu_cores, source="--cpu-cores")
        self.allowance = allowance or read_cpu_allowance()
        self.workers = worker_count(self.allowance.cores)
        self.max_in_flight = self.workers * (1 + config.queue_per_worker)
        self.hash_rate = hash_rate if hash_rate is not None else measure_hash_rate()
        self.bytes_per_request = int(self.hash_rate * config.work_ms / 1000.0)
        self.registry = CollectorRegistry()
        self.metrics = _make_metrics(self.registry)
        self.metrics.cores.set(self.allowance.cores)
        self.metrics.workers.set(self.workers)
        self.metrics.queue_limit.set(self.max_in_flight)
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="demo-work")

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(WORK_PATH, self._work)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.on_cleanup.append(self._shutdown)
        return app

    async def _work(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        code = 200
        if self._in_flight >= self.max_in_flight:
            code = 503
            response = web.Response(status=code, text="overloaded\n", headers={"Retry-After": "1"})
        else:
            self._in_flight += 1
            self.metrics.in_flight.inc()
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, do_work, self.bytes_per_request)
                response = web.Response(text="ok\n")
            finally:
                self._in_flight -= 1
                self.metrics.in_flight.dec()
        self.metrics.requests.labels(request.method, WORK_PATH, str(code)).inc()
        self.metrics.latency.labels(request.method, WORK_PATH).observe(time.perf_counter() - start)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _shutdown(self, app: web.Application) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--host", default="0.0.0.0", help="Address to listen on.")
@click.option("--port", type=int, default=8080, help="Port to listen on.")
@click.option("--work-ms", type=float, default=20.0, help="CPU milliseconds of work per request on one core.")
@click.option("--queue-per-worker", type=int, default=32, help="Waiting requests per worker before 503.")
@click.option("--cpu-cores", type=float, default=None, help="Override the detected CPU allowance (cores).")
@click.option("--capacity", is_flag=True, help="Print the detected CPU allowance and capacity, then exit.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(
    host: str,
    port: int,
    work_ms: float,
    queue_per_worker: int,
    cpu_cores: float | None,
    capacity: bool,
    log_level: str,
) -> None:
    """Serve the rlscale demo workload: CPU-bound HTTP requests with Prometheus metrics."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = DemoConfig(
            host=host, port=port, work_ms=work_ms, queue_per_worker=queue_per_worker, cpu_cores=cpu_cores
        )
    except ValidationError as exc:
        raise click.UsageError(_describe(exc)) from exc
    demo = DemoApp(config)
    rps = capacity_rps(demo.allowance.cores, config.work_ms / 1000.0) if config.work_ms else math.inf
    summary = (
        f"cpu allowance {demo.allowance.cores:g} cores ({demo.allowance.source}); {demo.workers} workers; "
        f"{config.work_ms:g} ms CPU per request ({demo.bytes_per_request} bytes hashed at "
        f"{demo.hash_rate / 1e6:.0f} MB/s); capacity ≈ {rps:.1f} req/s per pod; "
        f"503 above {demo.max_in_flight} in flight"
    )
    if capacity:
        click.echo(summary)
        return
    log.info("%s", summary)
    web.run_app(demo.web_app(), host=config.host, port=config.port, access_log=None, print=None)


def _describe(exc: ValidationError) -> str:
    """One line per invalid field, named as its command-line flag."""
    lines = []
    for err in exc.errors():
        field = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        lines.append(f"{field}: {err['msg']}")
    return "; ".join(lines)


if __name__ == "__main__":
    main()
