"""How many AutoscalePolicies one operator process keeps on time: N policies at a 15 s interval.

What runs, per N (each N on a fresh control plane, torn down afterwards):

* **the real operator**: ``rlscale run`` as its own process (Kopf, one daemon per policy,
  rlscale's handlers, thread pool, Kubernetes and Prometheus clients, the built-in ONNX
  policy), with the ServiceAccount token and RBAC that ``helm install charts/rlscale``
  grants, so its requests go through the API server's RBAC and priority-and-fairness
  as in a cluster;
* **the real kube-apiserver + etcd** of the devstack (``rlscale.devstack.cluster``), and
  nothing else of it: no controller-manager, scheduler or kwok. Pods would only add
  control-plane load that has nothing to do with the operator, so this process plays the
  part of the Deployment controller for the one thing the operator reads back: it
  watches Deployments and writes ``status.replicas``/``readyReplicas`` = ``spec.replicas``
  (as if every pod became ready at once);
* **a fake Prometheus** (``bench/_fake_prometheus.py``, aiohttp on loopback; why: see there)
  answering the operator's combined queries with per-Deployment values that swing over
  time and depend on the current replica count, so decisions vary (scale up, hold, scale
  down, sometimes a limit change) as in a closed loop.

N Deployments and N AutoscalePolicies (``intervalSeconds: 15``, rollout ``gradual`` at a
0.5 ratio, so both the learned policy and the HPA baseline act) are spread over a few
namespaces. By default the operator meets them for the first time, so Kopf adds its
finalizer to every policy at start-up (a burst of one connection per policy);
``--adopted`` creates them with the finalizer set, as after an operator restart. After a
warm-up (every daemon started and one full interval passed) the benchmark measures for
``--duration`` seconds:

* reconciles made vs. due (N × window / interval), from the operator's own
  ``rlscale_decisions_total`` + ``rlscale_refusals_total`` and, independently, from the
  decision counters in the policies' status on the API server;
* on time: reconciles that started less than one interval (and less than 1 s) after they
  were due, over the reconciles due, so a reconcile that never happened counts as late
  (capped at the reconciles made: after an overrun the operator restarts a policy's
  schedule and its lateness histogram does not see the skipped tick);
  lag p50/p99 from ``rlscale_reconcile_lateness_seconds`` and reconcile latency p50/p99
  from ``rlscale_reconcile_seconds`` (interpolated inside histogram buckets, as PromQL's
  ``histogram_quantile`` does);
* operator RSS (steady: median of 1 s samples in the window; peak: ``VmHWM``, whole life)
  and CPU (cores), through psutil; API server, etcd and this harness's CPU likewise, and
  the whole host's busy cores (the machine is shared: the rest is other people's load);
  CPU milliseconds per reconcile, which does not depend on N.

    nice .venv/bin/python bench/operator_scale.py --policies 100 500 1000 --duration 120

``--profile`` records the operator with py-spy during the window and prints where its CPU
goes. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil

# bench/ is sys.path[0] when this file is run as a script.
from _exporter import ExporterServer, NamespaceExporter
from _fake_prometheus import CPU_LIMIT_CORES, FakePrometheus, Workload
from _soak import BOUNDS, SoakSamples, summarise
from kubernetes import config as k8s_config
from prometheus_client.parser import text_string_to_metric_families

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess, helm_install, service_account_kubeconfig
from rlscale.devstack.prometheus import LocalPrometheus
from rlscale.devstack.tools import locate_tools_bin

T = TypeVar("T")

RELEASE = "rlscale"
OPERATOR_NS = "rlscale-system"
TARGET_POLICIES = 1000
TARGET_RSS_MB = 300.0
PAGE = "/apis/rlscale.io/v1alpha1/autoscalepolicies"
FINALIZER = "rlscale.io/finalizer"  # the operator's (handlers.startup)


# --- the control plane: etcd + kube-apiserver only ------------------------------------------------------------------


class ApiServerOnly(LocalCluster):
    """The devstack's etcd and kube-apiserver, without controllers, scheduler, kwok or nodes.

    Only the first phases of ``LocalCluster.start`` run (same PKI, flags and readiness
    checks as the e2e tier); ``stop`` is inherited.
    """

    def _phases(self) -> list[tuple[str, Callable[[], None]]]:
        return [(name, fn) for name, fn in super()._phases() if name in ("pki", "etcd", "kube-apiserver")]


# --- process and host statistics (psutil) -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss_mib(pid: int) -> float:
    """Resident set size now, MiB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def peak_rss_mib(pid: int) -> float:
    """The process's resident high-water mark over its whole life (``VmHWM``), MiB.

    psutil has no peak RSS on Linux (only Windows reports one), so this one field is read
    from ``/proc/<pid>/status``.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM in /proc/{pid}/status")


def memory_breakdown(pid: int) -> dict[str, float]:
    """Anonymous (heap) vs. file-backed (code, libraries) resident MiB, and threads.

    psutil's ``shared`` is the resident file-backed and shared-memory pages (``RssFile +
    RssShmem``), so ``rss - shared`` is the anonymous memory.
    """
    proc = psutil.Process(pid)
    with proc.oneshot():
        mem = proc.memory_info()
        threads = proc.num_threads()
    return {
        "anon_mib": round((mem.rss - mem.shared) / 2**20, 1),
        "file_mib": round(mem.shared / 2**20, 1),
        "threads": threads,
    }


def socket_count(pid: int) -> int:
    """Open sockets of a process (its API and Prometheus connections, listeners, watches).

    Those the kernel's inet and unix tables list: a socket not yet bound or connected is
    not counted (the operator's are all one or the other).
    """
    return len(psutil.Process(pid).net_connections(kind="all"))


def host_busy_seconds() -> float:
    """CPU-seconds the whole host spent not idle (all cores): user, nice, system, irq, softirq, steal.

    Guest time is already inside user and nice; idle and iowait are not busy.
    """
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


# --- the operator's /metrics -------------------------------------------------------------------------------------


@dataclass
class Scrape:
    """The few series the benchmark reads from the operator's /metrics."""

    counters: dict[str, float] = field(default_factory=dict)  # name -> sum over labels
    by_label: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> label value -> count
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # histogram -> [(le, cum count)]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        out = cls()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    out.buckets.setdefault(s.name[: -len("_bucket")], []).append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_total") or s.name == "rlscale_policies":
                    out.counters[s.name] = out.counters.get(s.name, 0.0) + s.value
                    label = (
                        s.labels.get("reason")
                        or s.labels.get("source")
                        or s.labels.get("kind")
                        or s.labels.get("outcome")
                        or ""
                    )
                    per = out.by_label.setdefault(s.name, {})
                    per[label] = per.get(label, 0.0) + s.value
        for b in out.buckets.values():
            b.sort()
        return out

    @classmethod
    def merge(cls, scrapes: Sequence[Scrape]) -> Scrape:
        """Several replicas' scrapes as one: counters and histogram buckets summed."""
        out = cls()
        for sc in scrapes:
            for k, v in sc.counters.items():
                out.counters[k] = out.counters.get(k, 0.0) + v
            for k, per in sc.by_label.items():
                mine = out.by_label.setdefault(k, {})
                for label, v in per.items():
                    mine[label] = mine.get(label, 0.0) + v
            for k, buckets in sc.buckets.items():
                mine_b = dict(out.buckets.get(k, []))
                for le, c in buckets:
                    mine_b[le] = mine_b.get(le, 0.0) + c
                out.buckets[k] = sorted(mine_b.items())
        return out


def bucket_delta(a: Scrape, b: Scrape, name: str) -> list[tuple[float, float]]:
    before = dict(a.buckets.get(name, []))
    return [(le, count - before.get(le, 0.0)) for le, count in b.buckets.get(name, [])]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile on cumulative (le, count) pairs; +Inf if it falls in the +Inf bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return math.inf
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return math.inf


def count_below(bound: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Observations ≤ the largest bucket bound ≤ ``bound`` (0 when there is none)."""
    usable = [c for le, c in buckets if le <= bound]
    return usable[-1] if usable else 0.0


def top_finite_bucket(buckets: Sequence[tuple[float, float]]) -> float:
    finite = [le for le, _ in buckets if not math.isinf(le)]
    return finite[-1] if finite else math.nan


# --- the world around the operator: setup client, Deployment "controller", fake Prometheus ----------------------


class World:
    """An asyncio loop in a background thread holding the fake Prometheus and the Deployment status writer.

    The operator and the control plane are started from the main thread: the devstack
    gives its children PR_SET_PDEATHSIG, which fires when the *starting thread* exits.
    """

    def __init__(self, server: str, token: str, ca_file: Path, seed: int) -> None:
        self.server = server
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._replicas: dict[tuple[str, str], int] = {}
        self.status_writes = 0
        self._names: dict[str, set[str]] = {}
        self.prometheus = FakePrometheus(
            self.replicas_of, seed=seed, deployments_in=lambda ns: sorted(self._names.get(ns, ()))
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-world", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._mirror: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None

    # lifecycle
    def start(self) -> str:
        self._thread.start()
        return self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._stop(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> str:
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=32)
        self._session = aiohttp.ClientSession(
            self.server, headers=self._headers, connector=connector, read_bufsize=2**20
        )
        self._sem = asyncio.Semaphore(8)
        self._mirror = asyncio.create_task(self._mirror_deployments())
        return await self.prometheus.start()

    async def _stop(self) -> None:
        if self._mirror is not None:
            self._mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror
        for t in list(self._writes):
            t.cancel()
        await self.prometheus.stop()
        if self._session is not None:
            await self._session.close()

    # API helpers
    async def _request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        assert self._session is not None
        headers = {"Content-Type": content_type or "application/json"} if body is not None else None
        data = json.dumps(body) if body is not None else None
        for attempt in range(5):
            async with self._session.request(method, path, data=data, headers=headers) as resp:
                if resp.status == 429 or resp.status >= 500:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                text = await resp.text()
                if resp.status >= 400:
                    raise RuntimeError(f"{method} {path}: HTTP {resp.status} {text[:300]}")
                return json.loads(text) if text else None
        raise RuntimeError(f"{method} {path}: still throttled/failing after retries")

    async def _bounded(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._sem is not None
        async with self._sem:
            return await coro

    # the "Deployment controller": status.replicas/readyReplicas follow spec.replicas
    def _observe(self, dep: Mapping[str, Any]) -> None:
        meta, spec, status = dep["metadata"], dep.get("spec") or {}, dep.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        self._replicas[(ns, name)] = replicas
        self._names.setdefault(ns, set()).add(name)
        gen = int(meta.get("generation", 0))
        want = {
            "observedGeneration": gen,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if any(status.get(k) != v for k, v in want.items()):
            path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/status"
            task = asyncio.create_task(self._write_status(path, want))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write_status(self, path: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError, aiohttp.ClientError):
            await self._bounded(self._request("PATCH", path, {"status": status}, "application/merge-patch+json"))
            self.status_writes += 1

    async def _mirror_deployments(self) -> None:
        assert self._session is not None
        while True:
            try:
                listing = await self._request("GET", "/apis/apps/v1/deployments")
                for item in listing["items"]:
                    self._observe(item)
                rv = listing["metadata"]["resourceVersion"]
                params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1800"}
                timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
                async with self._session.get("/apis/apps/v1/deployments", params=params, timeout=timeout) as resp:
                    async for line in resp.content:
                        if line.strip():
                            event = json.loads(line)
                            if event.get("type") in ("ADDED", "MODIFIED"):
                                self._observe(event["object"])
            except (aiohttp.ClientError, RuntimeError, json.JSONDecodeError):
                await asyncio.sleep(1.0)

    def replicas_known(self) -> int:
        return len(self._replicas)

    def replicas_of(self, namespace: str, name: str) -> int | None:
        return self._replicas.get((namespace, name))

    # objects
    async def create_objects(self, namespaces: Sequence[str], n: int, interval: int, adopted: bool) -> None:
        now = time.time()
        jobs = []
        for i in range(n):
            ns, name = namespaces[i % len(namespaces)], f"app-{i:05d}"
            demand = Workload.for_target(ns, name, self.prometheus._seed).demand(now)
            replicas = max(1, min(20, math.ceil(demand / (0.7 * CPU_LIMIT_CORES))))
            jobs.append(self._bounded(self._create(ns, name, replicas, interval, adopted)))
        await asyncio.gather(*jobs)

    async def _create(self, ns: str, name: str, replicas: int, interval: int, adopted: bool) -> None:
        await self._request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(ns, name, replicas))
        body = policy(ns, name, interval)
        if adopted:  # as an earlier operator left them: Kopf has nothing to patch when it starts
            body["metadata"]["finalizers"] = [FINALIZER]
        await self._request("POST", f"/apis/rlscale.io/v1alpha1/namespaces/{ns}/autoscalepolicies", body)

    async def create_namespace(self, name: str) -> None:
        await self._request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})


def deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A Deployment with an app container (limits set) and a sidecar the operator must not touch."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.invalid/app:1",
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "512Mi"},
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                            },
                        },
                        {
                            "name": "sidecar",
                            "image": "example.invalid/sidecar:1",
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                        },
                    ]
                },
            },
        },
    }


def policy(namespace: str, name: str, interval: int) -> dict[str, Any]:
    """A policy as a user would write it: the target, its app container, bounds, a gradual rollout."""
    return {
        "apiVersion": "rlscale.io/v1alpha1",
        "kind": "AutoscalePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"name": name},
            "containers": ["app"],
            "intervalSeconds": interval,
            "limits": {"minReplicas": 1, "maxReplicas": 20},
            "rollout": {"mode": "gradual", "initialRatio": 0.5},
            "prometheus": {"timeoutSeconds": 5},
        },
    }


# --- one run -----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    policies: int
    adopted: bool
    window_s: float
    expected: int
    reconciles_metrics: int
    decisions_status: int
    per_policy_decisions_min: int
    per_policy_decisions_median: float
    interval_s: int
    on_time_fraction: float  # reconciles started < interval after due / reconciles due
    lag_under_1s_fraction: float  # the same with 1 s
    lag_p50_s: float
    lag_p99_s: float
    reconcile_p50_s: float
    reconcile_p99_s: float
    reconcile_top_bucket_s: float  # a quantile above it is reported as +inf
    scale_actions: int
    refusals: dict[str, float]
    rss_steady_mib: float
    rss_peak_mib: float
    memory: dict[str, float]
    operator_cpu_cores: float
    apiserver_cpu_cores: float
    etcd_cpu_cores: float
    harness_cpu_cores: float
    host_busy_cores: float
    fake_prometheus_requests: int
    policy_json_bytes: float
    setup_s: float
    warmup_s: float
    replicas: int = 1
    prometheus: str = "fake"
    operator_cpu_cores_per_replica: list[float] = field(default_factory=list)
    prometheus_queries_per_s: float = math.nan  # answered by Prometheus (its own count, or the fake's)
    prometheus_batch_requests: int = 0  # sent by the operator(s): namespace batches
    prometheus_policy_requests: int = 0  # sent by the operator(s): one policy's custom templates
    prometheus_cpu_cores: float | None = None
    prometheus_rss_mib: float | None = None
    status_writes: int = 0
    status_writes_skipped: int = 0
    decision_batches: int = 0
    soak: dict[str, Any] = field(default_factory=dict)  # with --soak: bench/_soak.py's figures and verdict

    def summary(self) -> dict[str, Any]:
        """The fields the issue's JSON asks for, first, then everything else."""
        head = {
            "policies": self.policies,
            "replicas": self.replicas,
            "prometheus": self.prometheus,
            "reconciles_made": self.reconciles_metrics,
            "reconciles_due": self.expected,
            "on_time_fraction": self.on_time_fraction,
            "lag_p50_ms": self.lag_p50_s * 1000,
            "lag_p99_ms": self.lag_p99_s * 1000,
            "rss_steady_mib": self.rss_steady_mib,
            "operator_cpu_cores": self.operator_cpu_cores,
            "prometheus_queries_per_s": self.prometheus_queries_per_s,
            "prometheus_cpu_cores": self.prometheus_cpu_cores,
            "apiserver_cpu_cores": self.apiserver_cpu_cores,
        }
        return {**head, **{k: v for k, v in asdict(self).items() if k not in head}}

    @property
    def achieved_ratio(self) -> float:
        return self.reconciles_metrics / self.expected if self.expected else math.nan

    @property
    def others_cpu_cores(self) -> float:
        """Cores the rest of the host used meanwhile (other people's jobs): what this run competed with."""
        ours = self.operator_cpu_cores + self.apiserver_cpu_cores + self.etcd_cpu_cores + self.harness_cpu_cores
        return max(0.0, self.host_busy_cores - ours)

    def cpu_ms_per_reconcile(self, cores: float) -> float:
        """CPU milliseconds per reconcile made: the capacity figure that does not depend on N."""
        made = self.reconciles_metrics / self.window_s if self.window_s else 0.0
        return 1000 * cores / made if made else math.nan


def _wait(pred: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _policy_counters(cluster: LocalCluster) -> tuple[dict[str, int], float]:
    """Each policy's decision counter (status.controllerState.decisions), and the mean object size in bytes.

    The size matters: every status write sends the whole object back to the operator on its watch.
    """
    items = cluster.request("GET", PAGE, timeout=120)["items"]
    out = {}
    for p in items:
        state = (p.get("status") or {}).get("controllerState") or {}
        out[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = int(state.get("decisions", 0) or 0)
    size = statistics.mean(len(json.dumps(p, separators=(",", ":"))) for p in items) if items else 0.0
    return out, size


def run_one(n: int, args: argparse.Namespace, bin_dir: Path, replicas: int = 1) -> Result:
    interval: int = args.interval
    namespaces = [f"bench-{i}" for i in range(args.namespaces)]
    work = Path(tempfile.mkdtemp(prefix=f"rlscale-scale-{n}-", dir=args.work_dir))
    t_setup = time.monotonic()
    cluster = ApiServerOnly(bin_dir, work / "cluster", audit=False)
    world: World | None = None
    operators: list[OperatorProcess] = []
    profiler: subprocess.Popen[bytes] | None = None
    exporter: ExporterServer | None = None
    prometheus: LocalPrometheus | None = None
    try:
        cluster.start()
        world = World(cluster.server, cluster.admin_token, cluster.ca_file, args.seed)
        prom_url = world.start()
        for ns in namespaces:
            world.call(world.create_namespace(ns))
        admin = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        values = {"watchNamespaces": namespaces}
        release = helm_install(
            bin_dir / "helm", cluster.kubeconfig, RELEASE, OPERATOR_NS, values, work, shard_replicas=replicas
        )
        sa_kubeconfig = service_account_kubeconfig(
            admin, cluster.server, cluster.ca_file, OPERATOR_NS, release.service_account, work / "operator.kubeconfig"
        )
        admin.close()
        _wait(lambda: _crd_served(cluster), 60, "the AutoscalePolicy CRD to be served")
        world.call(world.create_objects(namespaces, n, interval, args.adopted))
        _wait(lambda: world is not None and world.replicas_known() >= n, 60, "the Deployment mirror to see all")
        if args.prometheus == "real":
            exporter, prometheus = _start_real_prometheus(world, namespaces, n, interval, args.seed, work)
            prom_url = prometheus.url
        setup_s = time.monotonic() - t_setup

        for r in range(replicas):
            shard_args = ["--shard-identity", f"replica-{r}", "--shard-namespace", OPERATOR_NS] if replicas > 1 else []
            operators.append(
                OperatorProcess(
                    sa_kubeconfig,
                    work,
                    namespaces=namespaces,
                    prometheus_url=prom_url,
                    extra_args=[
                        "--workers",
                        str(args.workers),
                        "--status-heartbeat-s",
                        str(args.status_heartbeat_s),
                        *shard_args,
                    ],
                    env=dict(kv.split("=", 1) for kv in args.operator_env),
                    name=f"operator-{r}",
                )
            )
        t_op = time.monotonic()
        for op in operators:
            op.start(timeout_s=180)
        op_pids = [op.pid for op in operators]
        assert all(op_pids)
        op_pid = op_pids[0]
        assert op_pid is not None

        def policies_running() -> bool:
            return all(Scrape.parse(op.metrics_text()).counters.get("rlscale_policies", 0) >= n for op in operators)

        _wait(policies_running, 300, f"{n} policy daemons")
        time.sleep(interval + 5)  # every first tick (spread over one interval) has happened
        warmup_s = time.monotonic() - t_op

        pids = {
            **{f"operator-{r}": pid for r, pid in enumerate(op_pids)},
            "apiserver": cluster.processes["kube-apiserver"].pid,
            "etcd": cluster.processes["etcd"].pid,
            "harness": os.getpid(),
        }
        if prometheus is not None:
            pids["prometheus"] = prometheus._proc.pid if prometheus._proc is not None else None
        counters0, _ = _policy_counters(cluster)
        scrape0 = Scrape.merge([Scrape.parse(op.metrics_text()) for op in operators])
        queries0 = _prometheus_queries(prometheus) if prometheus is not None else float(world.prometheus.requests)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items() if p}
        host0, wall0 = host_busy_seconds(), time.monotonic()
        if args.profile:
            profiler = _start_profiler(op_pid, args.duration, work / "profile.txt")
        samples: list[float] = []
        per_replica_rss: list[list[float]] = [[] for _ in op_pids]
        prom_rss: list[float] = []
        sockets: list[int] = []
        soak = SoakSamples([], [], [], [], [])
        op_proc = psutil.Process(op_pid)
        # A whole number of intervals: every policy is due the same number of times in it whatever its phase
        # (with aligned ticks a namespace's policies are due together, so a window edge that cut a tick
        # would count or miss a whole namespace).
        duration = math.ceil(args.duration / interval) * interval
        while time.monotonic() - wall0 < duration:
            for r, pid in enumerate(op_pids):
                assert pid is not None
                per_replica_rss[r].append(rss_mib(pid))
            samples.append(per_replica_rss[0][-1])
            if pids.get("prometheus"):
                prom_rss.append(rss_mib(int(pids["prometheus"] or 0)))
            sockets.append(socket_count(op_pid))
            threads, fds = op_proc.num_threads(), op_proc.num_fds()
            soak.add(time.monotonic() - wall0, per_replica_rss[0][-1], threads, sockets[-1], fds)
            time.sleep(1.0)
        wall1, host1 = time.monotonic(), host_busy_seconds()
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items() if p}
        scrape1 = Scrape.merge([Scrape.parse(op.metrics_text()) for op in operators])
        queries1 = _prometheus_queries(prometheus) if prometheus is not None else float(world.prometheus.requests)
        counters1, policy_bytes = _policy_counters(cluster)
        peak = max(peak_rss_mib(p) for p in op_pids if p)
        memory = {**memory_breakdown(op_pid), "sockets_max": max(sockets), "sockets_median": statistics.median(sockets)}
        window = wall1 - wall0
        profile_text = _finish_profiler(profiler, work / "profile.txt") if profiler is not None else ""
        profiler = None

        lag = bucket_delta(scrape0, scrape1, "rlscale_reconcile_lateness_seconds")
        latency = bucket_delta(scrape0, scrape1, "rlscale_reconcile_seconds")
        per_policy = [counters1.get(k, 0) - counters0.get(k, 0) for k in counters1]

        def delta(name: str) -> float:
            return scrape1.counters.get(name, 0.0) - scrape0.counters.get(name, 0.0)

        def delta_by(name: str, label: str) -> float:
            return scrape1.by_label.get(name, {}).get(label, 0.0) - scrape0.by_label.get(name, {}).get(label, 0.0)

        # Due: one per policy per interval, or more if the operator made more (a window edge). On time: started
        # less than an interval late, and at most as many as were made: when a reconcile overruns, the operator
        # restarts that policy's schedule from "now" and reports the next start as not late, so under overload
        # the lateness histogram alone would hide the ticks that never happened.
        due = max(n * window / interval, lag[-1][1] if lag else 0.0)
        made = delta("rlscale_decisions_total") + delta("rlscale_refusals_total")
        refusals = {
            k: v - scrape0.by_label.get("rlscale_refusals_total", {}).get(k, 0.0)
            for k, v in scrape1.by_label.get("rlscale_refusals_total", {}).items()
        }
        result = Result(
            policies=n,
            adopted=args.adopted,
            window_s=round(window, 1),
            expected=round(n * window / interval),
            reconciles_metrics=round(made),
            decisions_status=sum(per_policy),
            per_policy_decisions_min=min(per_policy) if per_policy else 0,
            per_policy_decisions_median=statistics.median(per_policy) if per_policy else 0,
            interval_s=interval,
            on_time_fraction=min(count_below(interval, lag), made) / due if due else math.nan,
            lag_under_1s_fraction=min(count_below(1.0, lag), made) / due if due else math.nan,
            lag_p50_s=histogram_quantile(0.5, lag),
            lag_p99_s=histogram_quantile(0.99, lag),
            reconcile_p50_s=histogram_quantile(0.5, latency),
            reconcile_p99_s=histogram_quantile(0.99, latency),
            reconcile_top_bucket_s=top_finite_bucket(latency),
            scale_actions=round(delta("rlscale_actions_applied_total")),
            refusals={k: v for k, v in refusals.items() if v},
            rss_steady_mib=round(max(statistics.median(x) for x in per_replica_rss), 1),
            rss_peak_mib=round(peak, 1),
            memory=memory,
            operator_cpu_cores=round(sum(cpu1[k] - cpu0[k] for k in cpu1 if k.startswith("operator-")) / window, 3),
            operator_cpu_cores_per_replica=[
                round((cpu1[f"operator-{r}"] - cpu0[f"operator-{r}"]) / window, 3) for r in range(len(op_pids))
            ],
            replicas=len(op_pids),
            prometheus=args.prometheus,
            prometheus_queries_per_s=round((queries1 - queries0) / window, 2),
            prometheus_batch_requests=round(delta_by("rlscale_prometheus_requests_total", "batch")),
            prometheus_policy_requests=round(delta_by("rlscale_prometheus_requests_total", "policy")),
            prometheus_cpu_cores=(
                round((cpu1["prometheus"] - cpu0["prometheus"]) / window, 3) if "prometheus" in cpu1 else None
            ),
            prometheus_rss_mib=round(statistics.median(prom_rss), 1) if prom_rss else None,
            status_writes=round(delta_by("rlscale_status_writes_total", "written")),
            status_writes_skipped=round(delta_by("rlscale_status_writes_total", "skipped")),
            soak=summarise(soak, min(count_below(interval, lag), made) / due if due else math.nan) if args.soak else {},
            decision_batches=round(bucket_delta(scrape0, scrape1, "rlscale_decision_batch_size")[-1][1])
            if bucket_delta(scrape0, scrape1, "rlscale_decision_batch_size")
            else 0,
            apiserver_cpu_cores=round((cpu1["apiserver"] - cpu0["apiserver"]) / window, 3),
            etcd_cpu_cores=round((cpu1["etcd"] - cpu0["etcd"]) / window, 3),
            harness_cpu_cores=round((cpu1["harness"] - cpu0["harness"]) / window, 3),
            host_busy_cores=round((host1 - host0) / window, 3),
            fake_prometheus_requests=world.prometheus.requests,
            policy_json_bytes=round(policy_bytes),
            setup_s=round(setup_s, 1),
            warmup_s=round(warmup_s, 1),
        )
        if profile_text:
            print(f"--- py-spy profile of the operator, {n} policies ({window:.0f} s window) ---\n{profile_text}")
        return result
    finally:
        if profiler is not None:
            profiler.kill()
        for op in operators:
            op.stop(timeout=20)
        if prometheus is not None:
            prometheus.stop()
        if exporter is not None:
            exporter.stop()
        if world is not None:
            world.stop()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


def _start_real_prometheus(
    world: World, namespaces: Sequence[str], n: int, interval: int, seed: int, work: Path
) -> tuple[ExporterServer, LocalPrometheus]:
    """The synthetic exporters (bench/_exporter.py) and a real Prometheus scraping them every interval.

    Returns once Prometheus holds two scrapes of every workload, so ``rate()`` has data.
    """
    names: dict[str, list[str]] = {ns: [] for ns in namespaces}
    for i in range(n):
        names[namespaces[i % len(namespaces)]].append(f"app-{i:05d}")
    exporter = ExporterServer([NamespaceExporter(ns, names[ns], world.replicas_of, seed) for ns in namespaces]).start()
    prometheus = LocalPrometheus(
        work / "prometheus", scrape_configs=exporter.scrape_configs(f"{interval}s"), scrape_interval=f"{interval}s"
    )
    try:
        prometheus.start()

        def scraped_twice() -> bool:
            assert prometheus is not None
            got = prometheus.query("count(count_over_time(http_requests_in_flight[5m]) >= 2)")
            return bool(got) and float(got[0]["value"][1]) >= n

        _wait(scraped_twice, 10 * interval + 120, f"Prometheus to scrape all {n} workloads twice", interval=2.0)
    except BaseException:
        prometheus.stop()
        exporter.stop()
        raise
    return exporter, prometheus


def _prometheus_queries(prometheus: LocalPrometheus) -> float:
    """Instant queries the real Prometheus has answered, by its own count (``prometheus_http_requests_total``)."""
    with urllib.request.urlopen(prometheus.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "prometheus_http_requests_total" and sample.labels.get("handler") == "/api/v1/query"
    )


def _crd_served(cluster: LocalCluster) -> bool:
    try:
        cluster.request("GET", PAGE + "?limit=1")
        return True
    except OSError:
        return False


# --- profiling ---------------------------------------------------------------------------------------------------


def _start_profiler(pid: int, duration: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy, sampling only the thread holding the GIL: where the operator's Python CPU goes."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.is_file():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    argv = [str(py_spy), "record", "-p", str(pid), "-d", str(int(duration)), "-r", "100", "--gil", "-f", "raw"]
    return subprocess.Popen(
        [*argv, "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


#: Where a sample's time goes: the innermost frame whose file path (as py-spy prints it, relative to its
#: sys.path entry, e.g. "operator/kube.py", "kopf/_core/...") starts with one of these, tried in order.
AREAS: tuple[tuple[str, str], ...] = (
    ("policy/", "decide(): features, ONNX, mask, gate (policy/)"),
    ("operator/kube.py", "Kubernetes calls (kubernetes client, urllib3, TLS)"),
    ("operator/prometheus.py", "Prometheus reads (requests, JSON)"),
    ("operator/queries.py", "PromQL render + scope check (promql-parser)"),
    ("operator/models.py", "spec/status models (pydantic)"),
    ("operator/reconcile.py", "reconcile glue (status build, conditions)"),
    ("operator/", "other operator code"),
    ("kopf/", "Kopf (watch streams, event processing, daemons)"),
    ("prometheus_client/", "/metrics serving"),
    ("asyncio/", "asyncio event loop"),
    ("concurrent/futures/", "thread-pool plumbing"),
)


def _area(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        path = frame.rpartition(" (")[2]
        for prefix, area in AREAS:
            if path.startswith(prefix):
                return area
    return "other"


def _finish_profiler(proc: subprocess.Popen[bytes], out: Path, top: int = 20) -> str:
    """Shares of GIL-holding samples by area and by function (self), from py-spy's collapsed stacks."""
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.is_file():
        return "(py-spy wrote nothing; is ptrace allowed?)"
    self_n: collections.Counter[str] = collections.Counter()
    area_n: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        self_n[_short(frames[-1])] += count
        area_n[_area(frames)] += count
    if not total:
        return "(no samples)"
    rows = [f"{total} samples (100/s) of the thread holding the GIL; by area:"]
    rows += [f"  {100 * c / total:5.1f}%  {a}" for a, c in area_n.most_common()]
    rows.append("by function (self):")
    rows += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_n.most_common(top)]
    return "\n".join(rows)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (last/three/parts.py:123)"
    name, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return f"{name} ({'/'.join(Path(path).parts[-3:])}:{line})" if path else frame


# --- report ------------------------------------------------------------------------------------------------------


def _fmt_s(v: float, top: float = math.nan) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return f"> {top:g} s"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'N':>5} {'int':>4} | {'made/due':>17} | {'on time':>7} | {'lag<1s':>6} | {'lag p50':>7} | {'lag p99':>7} | "
        f"{'rec p50':>7} | {'rec p99':>7} | {'RSS steady':>10} | {'RSS peak':>8} | {'op CPU':>6} | "
        f"{'apisrv CPU':>10} | {'etcd CPU':>8} | {'others CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        top = r.reconcile_top_bucket_s
        print(
            f"{r.policies:>5} {r.interval_s:>3}s | {r.reconciles_metrics:>6}/{r.expected:<6} "
            f"{100 * r.achieved_ratio:>3.0f}% | "
            f"{100 * r.on_time_fraction:>6.1f}% | {100 * r.lag_under_1s_fraction:>5.1f}% | {_fmt_s(r.lag_p50_s):>7} | "
            f"{_fmt_s(r.lag_p99_s):>7} | {_fmt_s(r.reconcile_p50_s, top):>7} | {_fmt_s(r.reconcile_p99_s, top):>7} | "
            f"{r.rss_steady_mib:>6.0f} MiB | {r.rss_peak_mib:>4.0f} MiB | {r.operator_cpu_cores:>6.2f} | "
            f"{r.apiserver_cpu_cores:>10.2f} | {r.etcd_cpu_cores:>8.2f} | {r.others_cpu_cores:>10.2f}"
        )
    print(
        "(made/due: reconciles in the window vs. N x window / interval; on time: reconciles that started less than "
        "one interval (or 1 s) after they were due (at most as many as were made), over those due; lag: how late "
        "a reconcile started; rec: how long it took; CPU in cores; RSS in MiB = 2^20 bytes, steady = median in the "
        "window, peak = the process's high-water mark; others: CPU that other people's jobs used on this shared "
        "2-core machine during the window, i.e. what the run competed with)"
    )
    for r in results:
        op_ms, api_ms = r.cpu_ms_per_reconcile(r.operator_cpu_cores), r.cpu_ms_per_reconcile(r.apiserver_cpu_cores)
        print(
            f"{r.policies:>5} at {r.interval_s} s: {op_ms:.1f} ms operator CPU and {api_ms:.1f} ms API-server CPU "
            f"per reconcile; one operator core would serve ~{r.interval_s * 1000 / op_ms:.0f} policies at "
            f"{r.interval_s} s"
        )
    for r in results:
        if r.policies != TARGET_POLICIES:
            continue
        steady_mb, peak_mb = (x * 2**20 / 1e6 for x in (r.rss_steady_mib, r.rss_peak_mib))
        print(
            f"target ({TARGET_POLICIES} policies on time, RSS <= {TARGET_RSS_MB:.0f} MB) at {r.interval_s} s"
            f"{', adopted' if r.adopted else ''}: on time {100 * r.on_time_fraction:.1f}% "
            f"(= {r.on_time_fraction:.2f} x target), RSS steady {steady_mb:.0f} MB ({steady_mb / TARGET_RSS_MB:.2f} x "
            f"budget), peak {peak_mb:.0f} MB ({peak_mb / TARGET_RSS_MB:.2f} x)"
        )


def _jsonable(value: Any) -> Any:
    """Results as strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--interval", type=int, default=15)
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds, after the warm-up")
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8, help="the operator's --workers")
    parser.add_argument(
        "--status-heartbeat-s",
        type=float,
        default=60.0,
        help="the operator's --status-heartbeat-s (0: a status write after every reconcile, as before batching)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the fake workloads")
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the operator"
    )
    parser.add_argument(
        "--adopted",
        action="store_true",
        help="create the policies with the operator's finalizer already set, as after an operator restart "
        "(default: a first start, where Kopf adds it to every policy at once)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during the window")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of the per-run temp dirs")
    parser.add_argument("--keep", action="store_true", help="keep the per-run dirs (logs, profile)")
    parser.add_argument(
        "--prometheus",
        choices=("fake", "real"),
        default="fake",
        help="real: a real Prometheus scraping synthetic exporters of every workload (bench/_exporter.py); "
        "fake: bench/_fake_prometheus.py answers the queries directly",
    )
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1], help="operator replicas sharing the policies (each N x each R)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help='print {"runs": [...]} as JSON at the end (to PATH if given, else to stdout)',
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="the fault suite's soak (docs/operator.md): unless given otherwise, 100 adopted policies at a 5 s "
        "interval for 3600 s against a real Prometheus; judges RSS slope, threads, sockets, fds and on-time "
        "against bench/_soak.py's bounds and exits 1 if any fails",
    )
    args = parser.parse_args()
    if args.soak:
        soak = {"policies": [100], "interval": 5, "duration": 3600.0, "prometheus": "real"}
        for key, value in soak.items():
            if getattr(args, key) == parser.get_default(key):  # not given on the command line
                setattr(args, key, value)
        args.adopted = True

    bin_dir = locate_tools_bin(("etcd", "kube-apiserver", "helm"))
    if args.prometheus == "fake":
        print(
            "NOTE: Prometheus is FAKED (bench/_fake_prometheus.py, aiohttp on loopback); --prometheus real runs a real "
            "one. The API server is real (kube-apiserver + etcd, no controllers; this harness writes Deployment "
            "status).",
            file=sys.stderr,
            flush=True,
        )
    results: list[Result] = []
    for n in args.policies:
        for replicas in args.replicas:
            print(f"--- {n} policies, {replicas} replica(s), {args.prometheus} Prometheus: setting up ...", flush=True)
            r = run_one(n, args, bin_dir, replicas)
            results.append(r)
            print(json.dumps(_jsonable(r.summary())), flush=True)
    print_table(results)
    verdicts = [r.soak for r in results if r.soak]
    for r in results:
        if r.soak:
            head = f"soak, {r.policies} policies at {r.interval_s} s for {r.window_s / 60:.0f} min"
            print(f"{head}: {_soak_line(r.soak)}")
    if args.json:
        text = json.dumps({"runs": [_jsonable(r.summary()) for r in results]}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    if any(not v["passed"] for v in verdicts):
        sys.exit(1)


def _soak_line(v: Mapping[str, Any]) -> str:
    """One line of the soak's figures and verdict."""
    return (
        f"RSS {v['rss_first_mib']:.0f} -> {v['rss_last_mib']:.0f} MiB, slope {v['rss_slope_mib_per_h']:+.1f} MiB/h "
        f"over the last two thirds (bound {BOUNDS['rss_slope_mib_per_h']}; whole window "
        f"{v['rss_slope_whole_mib_per_h']:+.1f}); threads {v['threads_first']:.0f} -> {v['threads_last']:.0f}, "
        f"sockets {v['sockets_first']:.0f} -> {v['sockets_last']:.0f}, fds {v['fds_first']:.0f} -> "
        f"{v['fds_last']:.0f}; on time {100 * v['on_time_fraction']:.2f}% -> "
        + ("PASSED" if v["passed"] else f"FAILED {v['failed']}")
    )


if __name__ == "__main__":
    main()
