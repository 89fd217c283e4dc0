"""A fast stand-in for Prometheus' instant-query API (``/api/v1/query``), for the operator scale benchmark.

Why a fake: at 1000 policies and a 15 s interval the operator sends 133 combined PromQL
queries per second, each evaluating seven ``rate``/``histogram_quantile`` expressions over
the pods of one Deployment. A real Prometheus serving that from the same two shared cores
as the operator and the API server would be the main consumer of CPU, and the benchmark
would measure Prometheus, not the operator. In production Prometheus runs elsewhere and
the operator only pays for the HTTP round trip and the parsing, which this fake keeps
(same wire format, same combined query, one request per evaluation time). A namespace's batched query
(``rlscale.operator.batchread``, recognised by its ``rlscale_workload`` grouping) is answered for every
Deployment of the namespace at once.

The answers are plausible and differ per policy, so decisions vary: each Deployment gets a
CPU demand that swings sinusoidally around its own mean, with its own period and phase,
and the per-pod signals are that demand divided by the replicas the Deployment has *now*
(looked up through ``replicas_of``), so scaling changes what the operator sees next, as in
a real closed loop. Latency grows with utilisation, errors appear above 90 %.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

#: The pod regex the operator renders is ``re.escape(name) + "-[a-z0-9]+-[a-z0-9]+"``, PromQL-escaped.
_POD_RE = re.compile(r'pod=~"((?:[^"\\]|\\.)*?)-\[a-z0-9\]\+-\[a-z0-9\]\+"')
_NS_RE = re.compile(r'namespace="([^"]*)"')
_SIGNAL_RE = re.compile(r'"rlscale_signal", "(\w+)"')
#: A namespace's batched query (rlscale.operator.batchread) groups by this label instead of naming a pod regex.
_WORKLOAD_LABEL = "rlscale_workload"
_PER_POD = ("cpu_usage", "memory_working_set")  # batched per (workload, pod, container)

CPU_LIMIT_CORES = 0.5  # the benchmark Deployments' app container limit (500m)
RPS_PER_CORE = 200.0


@dataclass(frozen=True, slots=True)
class Workload:
    """One Deployment's demand: ``mean_cores`` × (1 + ``swing`` · sin(2π t / ``period_s`` + ``phase``))."""

    mean_cores: float
    swing: float
    period_s: float
    phase: float

    @classmethod
    def for_target(cls, namespace: str, deployment: str, seed: int = 0) -> Workload:
        """Deterministic per Deployment (a hash), so reruns and both evaluation times agree."""
        h = hashlib.sha256(f"{seed}/{namespace}/{deployment}".encode()).digest()
        u = [b / 255.0 for b in h[:4]]
        return cls(
            mean_cores=0.3 * math.exp(u[0] * math.log(10.0)),  # 0.3 .. 3 cores, log-uniform
            swing=0.3 + 0.4 * u[1],
            period_s=300.0 + 600.0 * u[2],
            phase=2 * math.pi * u[3],
        )

    def demand(self, t: float) -> float:
        return self.mean_cores * (1.0 + self.swing * math.sin(2 * math.pi * t / self.period_s + self.phase))

    def signals(self, t: float, replicas: int) -> dict[str, float]:
        """Every signal the operator reads, in its unit (see ``rlscale.operator.queries.SIGNALS``)."""
        r = max(1, replicas)
        demand = self.demand(t)
        util = demand / (r * CPU_LIMIT_CORES)
        served_util = min(util, 1.0)  # a pod cannot use more than its limit
        busy = min(util, 0.97)
        rate = demand * RPS_PER_CORE
        p50 = 0.01 + 0.01 * busy / (1.0 - busy)
        p99 = 0.04 + 0.05 * busy / (1.0 - busy)
        return {
            "cpu_usage": served_util * CPU_LIMIT_CORES,
            "memory_working_set": (180.0 + 120.0 * served_util) * 2**20,
            "request_rate": rate,
            "error_rate": max(0.0, util - 0.9) * 0.2,
            "latency_p50": p50,
            "latency_p99": p99,
            "in_flight": rate * p50,
        }


class FakePrometheus:
    """``GET``/``POST /api/v1/query`` on loopback; everything else is 404.

    ``replicas_of(namespace, deployment)`` gives the Deployment's current replica count
    (``None`` if unknown: 1 is assumed).
    """

    def __init__(
        self,
        replicas_of: Callable[[str, str], int | None],
        *,
        seed: int = 0,
        deployments_in: Callable[[str], list[str]] | None = None,
    ) -> None:
        self._replicas_of = replicas_of
        self._deployments_in = deployments_in or (lambda _ns: [])
        self._seed = seed
        self._workloads: dict[tuple[str, str], Workload] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.requests = 0
        self.unparsed = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("GET", "/api/v1/query", self._query)
        app.router.add_route("POST", "/api/v1/query", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _workload(self, namespace: str, deployment: str) -> Workload:
        key = (namespace, deployment)
        w = self._workloads.get(key)
        if w is None:
            w = self._workloads[key] = Workload.for_target(namespace, deployment, self._seed)
        return w

    async def _query(self, request: web.Request) -> web.Response:
        self.requests += 1
        params: Any = request.query
        if request.method == "POST":
            params = {**request.query, **(await request.post())}
        query = str(params.get("query", ""))
        at = float(params.get("time") or time.time())
        ns, pod = _NS_RE.search(query), _POD_RE.search(query)
        result: list[dict[str, Any]] = []
        if ns is not None and _WORKLOAD_LABEL in query:  # a namespace's batch: every Deployment in it
            keys = list(_SIGNAL_RE.findall(query))
            for deployment in self._deployments_in(ns.group(1)):
                replicas = self._replicas_of(ns.group(1), deployment) or 1
                values = self._workload(ns.group(1), deployment).signals(at, replicas)
                for key in keys:
                    labels = {"rlscale_signal": key, _WORKLOAD_LABEL: deployment}
                    if key in _PER_POD:
                        labels |= {"pod": f"{deployment}-5d8c7b9f4-abcde", "container": "app"}
                    result.append({"metric": labels, "value": [at, repr(values[key])]})
        elif ns is None or pod is None:
            self.unparsed += 1
        else:
            namespace, deployment = ns.group(1), pod.group(1).replace("\\", "")
            replicas = self._replicas_of(namespace, deployment) or 1
            values = self._workload(namespace, deployment).signals(at, replicas)
            result = [
                {"metric": {"rlscale_signal": key}, "value": [at, repr(values[key])]}
                for key in _SIGNAL_RE.findall(query)
                if key in values
            ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})
