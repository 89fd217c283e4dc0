"""How many AutoscalePolicies one operator process keeps on time: N policies at a 15 s interval.

The operator under test is the real one (Kopf, rlscale's handlers, the Reconciler with its
thread pool, Prometheus client and Kubernetes client). The API server is kmock's emulator
(with the test suite's extensions) and Prometheus is a stand-in HTTP API answering every
signal with steady values; both run in a **separate process**, so the operator's RSS and
CPU are measured alone. Each policy's Deployment sits at its HPA target, so the steady
state is what a real cluster mostly sees: read, decide, hold, write status.

Reported per N: reconciles made vs. expected, the fraction of intervals on time (a
policy's next reconcile started within interval + 1 s of the previous one and each
reconcile took less than the interval), p50/p99 reconcile latency, operator RSS (current
and peak) and CPU (cores used), and the emulator's CPU.

    .venv/bin/python bench/operator_scale.py --policies 100 500 1000 --duration 90

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

NAMESPACE = "bench"


# --- the API emulator + Prometheus stand-in (child process) ------------------------------------------------------


async def _serve(n: int, interval: int, url_file: Path) -> None:
    import kmock
    from kmock_ext import RESOURCES, OperatorEmulator, deployment, policy

    values = {
        "cpu_usage": 0.35,  # 0.35 cores of a 500m limit: utilisation 0.7, the HPA target: hold
        "memory_working_set": 200 * 2**20,
        "request_rate": 50.0,
        "error_rate": 0.0,
        "latency_p50": 0.02,
        "latency_p99": 0.08,
        "in_flight": 2.0,
    }
    import re

    signal_re = re.compile(r'"rlscale_signal", "(\w+)"')

    def answer(request: kmock.Request) -> Any:
        at = float(request.params.get("time", time.time()))
        keys = signal_re.findall(request.params["query"])
        result = [{"metric": {"rlscale_signal": k}, "value": [at, str(values[k])]} for k in keys]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    async with (
        OperatorEmulator() as emu,
        kmock.Server(emu),
        kmock.RawHandler() as prom,
        kmock.Server(prom),
    ):
        prom["get /api/v1/query"] << answer
        for key, info in RESOURCES.items():
            emu.resources[key] = info
        prom_url = str(prom.url).rstrip("/")
        asp = kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies")
        for i in range(n):
            name = f"app-{i:05d}"
            emu.objects[kmock.resource("apps", "v1", "deployments"), NAMESPACE, name] = deployment(
                name, NAMESPACE, replicas=4
            )
            emu.objects[asp, NAMESPACE, name] = policy(name, NAMESPACE, name, prom_url, intervalSeconds=interval)
        url_file.write_text(json.dumps({"api": str(emu.url).rstrip("/")}))
        await asyncio.Event().wait()


# --- the operator (this process) ---------------------------------------------------------------------------------


def _rss_mib() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _child_cpu_s(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def _run_operator(api_url: str, n: int, interval: int, duration: float, child: int) -> dict[str, Any]:
    import conftest  # the tests' Kopf login handler for the emulator
    import kopf

    from rlscale.operator import handlers  # noqa: F401
    from rlscale.operator.handlers import Runtime
    from rlscale.operator.settings import OperatorSettings

    conftest._LOGIN["server"] = api_url
    settings = OperatorSettings(metrics_port=0, workers=8)
    runtime = Runtime.build(settings, conftest.api_client(api_url))
    starts: dict[str, list[tuple[float, float]]] = {}
    original = runtime.reconciler.reconcile

    async def timed(ref: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        out = await original(ref, *args, **kwargs)
        starts.setdefault(ref.name, []).append((t0, time.monotonic() - t0))
        return out

    runtime.reconciler.reconcile = timed  # type: ignore[method-assign]
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = True
    kopf_settings.posting.level = 40
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            standalone=True,
            namespaces=[NAMESPACE],
            memo=kopf.Memo(runtime=runtime, settings=settings),
            settings=kopf_settings,
            stop_flag=stop,
        )
    )
    # Warm-up: one interval for every policy to start (first ticks are spread over it).
    await asyncio.sleep(interval + 5)
    cpu0, wall0, child0 = time.process_time(), time.monotonic(), _child_cpu_s(child)
    await asyncio.sleep(duration)
    cpu1, wall1, child1 = time.process_time(), time.monotonic(), _child_cpu_s(child)
    rss, peak = _rss_mib()
    stop.set()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=30)
    runtime.close()

    gaps_ok = gaps = made = 0
    latencies: list[float] = []
    for series in starts.values():
        window = [(t, d) for t, d in series if wall0 <= t <= wall1]
        made += len(window)
        latencies += [d for _, d in window]
        for (t_prev, d_prev), (t, _) in itertools.pairwise(window):
            gaps += 1
            gaps_ok += int(t - t_prev <= interval + 1.0 and d_prev < interval)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    expected = n * (wall1 - wall0) / interval
    return {
        "policies": n,
        "policies_seen": len(starts),
        "reconciles": made,
        "expected": round(expected),
        "on_time_fraction": round(gaps_ok / gaps, 4) if gaps else 0.0,
        "reconcile_p50_ms": round(1000 * pct(0.5), 1),
        "reconcile_p99_ms": round(1000 * pct(0.99), 1),
        "rss_mib": round(rss, 1),
        "peak_rss_mib": round(peak, 1),
        "operator_cpu_cores": round((cpu1 - cpu0) / (wall1 - wall0), 3),
        "emulator_cpu_cores": round((child1 - child0) / (wall1 - wall0), 3),
    }


def _one(n: int, interval: int, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp) / "urls.json"
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(n), "--interval", str(interval), "--url-file", str(url_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not url_file.exists() or not url_file.read_text():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator process did not start")
                time.sleep(0.2)
            api = json.loads(url_file.read_text())["api"]
            return asyncio.run(_run_operator(api, n, interval, duration, child.pid))
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--interval", type=int, default=15)
    parser.add_argument("--duration", type=float, default=90.0, help="measured seconds (after one warm-up interval)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve, args.interval, args.url_file))
        return
    import logging

    logging.basicConfig(level=logging.ERROR)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    for n in args.policies:
        result = _one(n, args.interval, args.duration)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
