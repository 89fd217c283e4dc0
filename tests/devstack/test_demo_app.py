"""The demo workload: its capacity model follows the CPU limit, and it serves the metrics the operator queries."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from rlscale.devstack import demo_app
from rlscale.devstack.demo_app import (
    CpuAllowance,
    DemoApp,
    DemoConfig,
    capacity_rps,
    read_cpu_allowance,
    worker_count,
)
from rlscale.operator.queries import SIGNALS

# --- the capacity model -----------------------------------------------------------------------------


def _cgroup_v2(root: Path, cpu_max: str, own: str = "/") -> Path:
    """A fake cgroup v2 mount (and /proc/self/cgroup) with ``cpu.max`` in the process's own cgroup."""
    path = root / own.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    (path / "cpu.max").write_text(cpu_max + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _cgroup_v2(root, "50000 100000")
    allowance = read_cpu_allowance(root, proc, cpus_available=8)
    assert allowance.cores == 0.5
    assert "cgroup v2" in allowance.source


def test_cgroup_v2_nested_own_cgroup(tmp_path: Path) -> None:
    """Without a cgroup namespace the container's cgroup is a sub-directory named in /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    (root).mkdir()
    (root / "cpu.max").write_text("max 100000\n")
    proc = _cgroup_v2(root, "150000 100000", own="/kubepods.slice/pod-1/cri-abc")
    assert read_cpu_allowance(root, proc, cpus_available=8).cores == 1.5


def test_cgroup_v2_unlimited_means_all_cpus(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _cgroup_v2(root, "max 100000")
    allowance = read_cpu_allowance(root, proc, cpus_available=6)
    assert allowance.cores == 6
    assert "no CPU quota" in allowance.source


def test_quota_never_exceeds_available_cpus(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = _cgroup_v2(root, "800000 100000")
    assert read_cpu_allowance(root, proc, cpus_available=2).cores == 2


def test_cgroup_v1(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    v1 = root / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    allowance = read_cpu_allowance(root, tmp_path / "no-proc-file", cpus_available=8)
    assert allowance.cores == 2.5 and "cgroup v1" in allowance.source
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert read_cpu_allowance(root, tmp_path / "no-proc-file", cpus_available=8).cores == 8


def test_cgroup_v1_own_cgroup(tmp_path: Path) -> None:
    """On a cgroup v1 host without a cgroup namespace the quota sits in the process's own cpu cgroup."""
    root = tmp_path / "cgroup"
    own = root / "cpu" / "kubepods" / "pod-1" / "c1"
    own.mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (own / "cpu.cfs_quota_us").write_text("75000\n")
    (own / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/kubepods/pod-1/c1\n1:cpu:/kubepods/pod-1/c1\n0::/\n")
    allowance = read_cpu_allowance(root, proc, cpus_available=8)
    assert allowance.cores == 0.75 and str(own) in allowance.source


def test_malformed_cpu_max_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    for bad in ("lots", "abc 100000", "0 100000", "50000"):
        proc = _cgroup_v2(root, bad)
        with pytest.raises(ValueError, match=re.escape(str(root / "cpu.max")) + ".*" + re.escape(repr(bad))):
            read_cpu_allowance(root, proc, cpus_available=2)


@pytest.mark.parametrize(
    ("cores", "workers"), [(0.1, 1), (0.5, 1), (1.0, 1), (1.25, 2), (2.0, 2), (3.9, 4), (16.0, 16)]
)
def test_worker_count(cores: float, workers: int) -> None:
    assert worker_count(cores) == workers


def test_capacity_follows_the_cpu_limit() -> None:
    """At 20 ms of CPU per request: 25 req/s per pod at 500m, 50 at 1 CPU, 100 at 2 CPUs."""
    assert capacity_rps(0.5, 0.020) == pytest.approx(25.0)
    assert capacity_rps(1.0, 0.020) == pytest.approx(50.0)
    assert capacity_rps(2.0, 0.020) == pytest.approx(100.0)
    limits = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]
    caps = [capacity_rps(c, 0.02) for c in limits]
    assert caps == sorted(caps) and len(set(caps)) == len(caps)
    with pytest.raises(ValueError, match="seconds_per_request"):
        capacity_rps(1.0, 0.0)


def test_app_sizes_itself_from_the_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same app started under a 500m and a 2-CPU limit gets 1 and 2 workers and a 4x larger queue bound."""
    apps = {}
    for quota in ("50000 100000", "200000 100000"):
        root = tmp_path / quota.split()[0]
        proc = _cgroup_v2(root / "cgroup", quota)
        allowance = read_cpu_allowance(root / "cgroup", proc, cpus_available=4)
        apps[quota] = DemoApp(DemoConfig(queue_per_worker=3), allowance, hash_rate=1e9)
    small, large = apps["50000 100000"], apps["200000 100000"]
    assert (small.workers, large.workers) == (1, 2)
    assert (small.max_in_flight, large.max_in_flight) == (4, 8)
    assert small.bytes_per_request == large.bytes_per_request == 20_000_000  # 20 ms at 1 GB/s


def test_work_is_calibrated_to_cpu_time() -> None:
    """The hash rate is measured on the CPU clock; one request's bytes are work_ms of that."""
    rate = demo_app.measure_hash_rate(min_cpu_s=0.02)
    assert rate > 1e6  # any real machine hashes more than 1 MB per CPU-second
    app = DemoApp(DemoConfig(work_ms=10), CpuAllowance(cores=1, source="test"), hash_rate=rate)
    assert app.bytes_per_request == int(rate * 0.010)


def test_config_errors_name_the_flag() -> None:
    runner = CliRunner()
    result = runner.invoke(demo_app.main, ["--work-ms", "-5", "--capacity"])
    assert result.exit_code == 2
    assert "--work-ms" in result.output and "greater than or equal to 0" in result.output
    result = runner.invoke(demo_app.main, ["--cpu-cores", "0.5", "--work-ms", "20", "--capacity"])
    assert result.exit_code == 0, result.output
    assert "0.5 cores (--cpu-cores)" in result.output and "capacity ≈ 25.0 req/s per pod" in result.output


# --- the running service ----------------------------------------------------------------------------


@asynccontextmanager
async def _serving(app: DemoApp) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    server = TestServer(app.web_app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield str(server.make_url("")), session
    finally:
        await server.close()


async def _metrics(base: str, session: aiohttp.ClientSession) -> str:
    async with session.get(base + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


def _sample(exposition: str, name: str, **labels: str) -> float:
    for line in exposition.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    raise AssertionError(f"no sample {name}{labels}")


def _small_app(**config: Any) -> DemoApp:
    return DemoApp(DemoConfig(**{"work_ms": 1.0, **config}), CpuAllowance(cores=1, source="test"), hash_rate=1e8)


def test_serves_requests_and_metrics() -> None:
    async def scenario() -> str:
        async with _serving(_small_app()) as (base, session):
            for _ in range(3):
                async with session.get(base + "/") as resp:
                    assert resp.status == 200
            for probe in ("/healthz", "/readyz"):
                async with session.get(base + probe) as resp:
                    assert resp.status == 200
            return await _metrics(base, session)

    text = asyncio.run(scenario())
    assert _sample(text, "http_requests_total", code="200", method="GET", path="/") == 3  # probes not counted
    assert _sample(text, "http_request_duration_seconds_count", method="GET", path="/") == 3
    assert _sample(text, "http_request_duration_seconds_bucket", le="+Inf", path="/") == 3
    assert _sample(text, "http_requests_in_flight") == 0
    assert _sample(text, "demo_cpu_allowance_cores") == 1
    assert _sample(text, "demo_workers") == 1
    assert _sample(text, "process_cpu_seconds_total") > 0


def test_sheds_load_beyond_the_queue_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one worker and no queue, a second concurrent request gets 503 while the first is in flight."""
    release = threading.Event()
    started = threading.Event()

    def blocking_work(n_bytes: int) -> None:
        started.set()
        release.wait(10)

    monkeypatch.setattr(demo_app, "do_work", blocking_work)

    async def scenario() -> tuple[int, int, str, str]:
        app = _small_app(queue_per_worker=0)
        assert app.max_in_flight == 1
        async with _serving(app) as (base, session):
            first = asyncio.create_task(session.get(base + "/"))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
            during = await _metrics(base, session)
            async with session.get(base + "/") as resp:
                second, retry = resp.status, resp.headers.get("Retry-After", "")
            release.set()
            async with await first as resp:
                first_status = resp.status
            return first_status, second, retry, during + "\n#after\n" + await _metrics(base, session)

    first, second, retry, text = asyncio.run(scenario())
    assert (first, second, retry) == (200, 503, "1")
    during, after = text.split("#after")
    assert _sample(during, "http_requests_in_flight") == 1
    assert _sample(after, "http_requests_total", code="503") == 1
    assert _sample(after, "http_requests_total", code="200") == 1
    assert _sample(after, "http_requests_in_flight") == 0


def _selector_names(query: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(query.replace("{window}", "1m")), visit)
    return names


def _exposed_names(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", exposition, re.M)}


def test_serves_every_metric_the_operator_queries_by_default() -> None:
    """Each default query's series names come from the demo's /metrics, or from cAdvisor (container_*)."""
    text = asyncio.run(_fetch_metrics_once())
    exposed = _exposed_names(text)
    wanted: set[str] = set()
    for signal in SIGNALS:
        wanted |= _selector_names(signal.default)
    from_app = {n for n in wanted if not n.startswith("container_")}
    assert from_app, "the default queries read application metrics"
    assert from_app <= exposed, from_app - exposed
    # The error-rate query filters on the status code label the demo writes.
    assert any('code=~"5.."' in s.default for s in SIGNALS)
    assert re.search(r'^http_requests_total\{[^}]*code="200"', text, re.M)


async def _fetch_metrics_once() -> str:
    async with _serving(_small_app()) as (base, session):
        async with session.get(base + "/") as resp:
            assert resp.status == 200
        return await _metrics(base, session)
