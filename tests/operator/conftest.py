"""Fixtures for the operator tests: the kmock API emulator, a Prometheus HTTP API stand-in, and a running operator.

The *real* Prometheus tests (``test_prometheus_real.py``) use
:class:`rlscale.devstack.prometheus.LocalPrometheus`; the operator tests against kmock use
``fake_prometheus`` — a kmock HTTP server answering ``/api/v1/query`` from a dict of
signal values — because what they check is the Kubernetes side, and they must control
every metric exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).parent))

from kmock_ext import RESOURCES, OperatorEmulator

from rlscale.operator.handlers import Runtime
from rlscale.operator.queries import BATCHED, WORKLOAD_LABEL
from rlscale.operator.settings import OperatorSettings

_SIGNAL_RE = re.compile(r'"rlscale_signal", "(\w+)"')

_LOGIN: dict[str, str] = {}


@kopf.on.login()
def _login_to_emulator(**_: Any) -> kopf.ConnectionInfo | None:
    """Tests log Kopf in to the emulator; outside tests this handler is never imported."""
    server = _LOGIN.get("server")
    return kopf.ConnectionInfo(server=server, insecure=True) if server else None


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[OperatorEmulator]:
    async with OperatorEmulator() as emu, kmock.Server(emu):
        for key, info in RESOURCES.items():
            emu.resources[key] = info
        yield emu


def steady_service(cpu_usage: float, request_rate: float = 50.0) -> dict[str, float | str | None]:
    """:attr:`FakePrometheus.values` of a steady service: ``cpu_usage`` cores, ``request_rate`` req/s, 100 MiB,
    20 ms p50 and 100 ms p99, no errors, one request in flight — what most reconcile tests feed it."""
    return {
        "cpu_usage": cpu_usage,
        "memory_working_set": 100 * 2**20,
        "request_rate": request_rate,
        "error_rate": 0.0,
        "latency_p50": 0.02,
        "latency_p99": 0.1,
        "in_flight": 1.0,
    }


class FakePrometheus:
    """``/api/v1/query`` answering each ``rlscale_signal`` from :attr:`values` (``None`` = no data).

    ``down`` makes it answer 503; ``queries`` records what was asked.
    """

    def __init__(self, handler: kmock.RawHandler) -> None:
        self.handler = handler
        self.values: dict[str, float | str | None] = {}
        self.down = False
        self.queries: list[dict[str, str]] = []
        self.workloads: tuple[str, ...] = ("web",)  # the Deployments a batched query returns series for
        self.headers: list[dict[str, str]] = []
        handler["get /api/v1/query"] << self._answer

    @property
    def url(self) -> str:
        return str(self.handler.url).rstrip("/")

    def _answer(self, request: kmock.Request) -> Any:
        self.queries.append(dict(request.params))
        self.headers.append(dict(request.headers))
        if self.down:
            return kmock.Response(status=503, payload={"status": "error", "error": "down"})  # type: ignore[call-arg]
        at = float(request.params.get("time", time.time()))
        result = []
        query = request.params["query"]
        batched = WORKLOAD_LABEL in query  # a namespace's batch: the same value for each of `workloads`
        for key in _SIGNAL_RE.findall(query):
            value = self.values.get(key)
            if value is None:
                continue
            if not batched:
                result.append({"metric": {"rlscale_signal": key}, "value": [at, str(value)]})
                continue
            for w in self.workloads:
                labels = {"rlscale_signal": key, WORKLOAD_LABEL: w}
                if BATCHED[key].per_pod:  # one pod, one managed container
                    labels |= {"pod": f"{w}-5d8f7b9c4-x2x7q", "container": "app"}
                result.append({"metric": labels, "value": [at, str(value)]})
        return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest_asyncio.fixture()
async def fake_prometheus() -> AsyncIterator[FakePrometheus]:
    async with kmock.RawHandler() as handler, kmock.Server(handler):
        yield FakePrometheus(handler)


def api_client(url: str) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    cfg.host = url.rstrip("/")
    cfg.verify_ssl = False
    return k8s.ApiClient(cfg)


@contextlib.asynccontextmanager
async def running_operator(
    emu: OperatorEmulator, settings: OperatorSettings | None = None, namespaces: tuple[str, ...] = ("shop",)
) -> AsyncIterator[Runtime]:
    """Run the real Kopf operator (rlscale's handlers) against the emulator until the block ends."""
    from rlscale.operator import handlers  # noqa: F401  (registers the handlers)

    _LOGIN["server"] = str(emu.url).rstrip("/")
    settings = settings or OperatorSettings(metrics_port=0, start_spread=0.0, workers=4)
    runtime = Runtime.build(settings, api_client(str(emu.url)))
    stop = asyncio.Event()
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.networking.request_timeout = 10
    kopf_settings.watching.reconnect_backoff = 0.2
    # kmock 0.8 cannot parse GET /api/v1/namespaces (it reads "namespaces" as the namespace
    # prefix), so Kopf's namespace/CRD scanning is off here; the namespaces are exact names.
    kopf_settings.scanning.disabled = True
    task = asyncio.create_task(
        kopf.operator(
            standalone=True,
            namespaces=list(namespaces),
            memo=kopf.Memo(runtime=runtime, settings=settings),
            settings=kopf_settings,
            stop_flag=stop,
        )
    )
    try:
        yield runtime
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=15)
        runtime.close()
        _LOGIN.pop("server", None)


async def eventually(check: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@pytest.fixture()
def operator_settings() -> OperatorSettings:
    return OperatorSettings(metrics_port=0, start_spread=0.0, workers=4)
