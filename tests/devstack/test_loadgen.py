"""The load generator: trace reading with clear errors, the pattern/plan arithmetic, bounded real runs."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from pydantic import ValidationError

from rlscale.devstack import loadgen
from rlscale.devstack.demo_app import CpuAllowance, DemoApp, DemoConfig
from rlscale.devstack.loadgen import (
    GeneratedPattern,
    LoadConfig,
    LoadGenerator,
    LoadPlan,
    Pattern,
    TraceError,
    read_trace,
)
from rlscale.devstack.procs import free_port

PUBLIC_TRACES = Path("/work/shared/traces")


def _trace(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


# --- traces -------------------------------------------------------------------------------------


def test_read_trace(tmp_path: Path) -> None:
    pattern = read_trace(_trace(tmp_path, "t_seconds,value\n0,10\n60,20\n120,0\n"))
    assert pattern.t_seconds == (0, 60, 120) and pattern.values == (10, 20, 0)
    assert pattern.step_s == 60 and pattern.end_s == 180


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "trace.csv:1: header must be 't_seconds,value'"),
        ("time,value\n0,1\n", "trace.csv:1: header must be 't_seconds,value', found 'time,value'"),
        ("t_seconds,value\n", "no data rows"),
        ("t_seconds,value\n0,1\n60,abc\n", "trace.csv:3: value: not a number: 'abc'"),
        ("t_seconds,value\n0,1\nx,2\n", "trace.csv:3: t_seconds: not a number: 'x'"),
        ("t_seconds,value\n0,1\n60,-4\n", "trace.csv:3: value: must be >= 0, found -4"),
        ("t_seconds,value\n0,1\n60,nan\n", "trace.csv:3: value: must be finite"),
        ("t_seconds,value\n60,1\n0,2\n", "trace.csv:3: t_seconds: must increase, 0 follows 60"),
        ("t_seconds,value\n0,1\n60,2,3\n", "trace.csv:3: expected 2 columns"),
        ("t_seconds,value\n0,1\n60,2\n180,3\n", "one fixed step, found steps [60.0, 120.0]"),
    ],
)
def test_bad_traces_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError) as err:
        read_trace(_trace(tmp_path, text))
    assert message in str(err.value)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path / "nope.csv")


@pytest.mark.skipif(not PUBLIC_TRACES.is_dir(), reason="the public traces live in /work/shared/traces")
def test_reads_every_public_trace() -> None:
    for path in sorted(PUBLIC_TRACES.glob("*.csv")):
        pattern = read_trace(path)
        assert pattern.step_s == 60 and len(pattern.values) >= 1440, path


# --- patterns and plans ---------------------------------------------------------------------------


def test_pattern_lookup() -> None:
    p = Pattern(t_seconds=(0, 60, 120), values=(1, 2, 3), step_s=60, source="t")
    assert [p.value_at(t) for t in (-5, 0, 59.9, 60, 179, 500)] == [1, 1, 1, 2, 3, 3]
    assert [p.next_boundary(t) for t in (0, 30, 60, 150)] == [60, 60, 120, 180]
    assert math.isinf(p.next_boundary(180))
    assert p.max_between(0, 60) == 1 and p.max_between(30, 121) == 3


def test_pattern_rejects_inconsistent_data() -> None:
    with pytest.raises(ValidationError, match="must increase strictly"):
        Pattern(t_seconds=(0, 0), values=(1, 1), step_s=60, source="t")
    with pytest.raises(ValidationError, match="finite and >= 0"):
        Pattern(t_seconds=(0,), values=(-1,), step_s=60, source="t")


def test_generated_pattern_is_seeded_and_shaped() -> None:
    a, b = GeneratedPattern(seed=1).build(), GeneratedPattern(seed=1).build()
    assert a == b and a != GeneratedPattern(seed=2).build()
    assert len(a.values) == 1440 and a.step_s == 60
    smooth = GeneratedPattern(noise=0.0).build()
    night = smooth.value_at(3 * 3600)
    plateau = smooth.value_at(10 * 3600)
    flash = smooth.value_at(0.6 * 86_400 + 600)
    assert night == pytest.approx(4.0, abs=0.1)
    assert plateau == pytest.approx(40.0, rel=0.02)
    assert flash == pytest.approx(2 * smooth.value_at(0.6 * 86_400 - 60), rel=0.05)
    assert max(smooth.values) <= 40.0 * 2.0 + 1e-9 and min(smooth.values) >= 4.0 - 1e-9


def test_generated_pattern_validation() -> None:
    with pytest.raises(ValidationError, match=r"base_rps \(50.0\) must not exceed peak_rps"):
        GeneratedPattern(base_rps=50, peak_rps=10)
    with pytest.raises(ValidationError, match="flash_factor"):
        GeneratedPattern(flash_factor=0.5)


def test_plan_compresses_time() -> None:
    p = Pattern(t_seconds=(0, 60, 120), values=(1, 2, 3), step_s=60, source="t")
    plan = LoadPlan(pattern=p, speedup=60, scale=10, offset_s=0)
    assert [plan.rate_at(t) for t in (0, 0.99, 1.0, 2.5)] == [10, 10, 20, 30]
    assert plan.pattern_duration_s() == 3.0
    assert plan.next_change_s(0.5) == pytest.approx(1.0, abs=1e-5)
    late = LoadPlan(pattern=p, speedup=60, scale=1, offset_s=60)
    assert late.rate_at(0) == 2 and late.pattern_duration_s() == 2.0
    looping = LoadPlan(pattern=p, speedup=60, scale=1, offset_s=0, loop=True)
    assert looping.rate_at(3.5) == 1 and math.isinf(looping.pattern_duration_s())


def test_peak_rps_maps_the_busiest_replayed_step(tmp_path: Path) -> None:
    trace = _trace(tmp_path, "t_seconds,value\n0,100\n60,400\n120,200\n180,1000\n")
    whole = LoadConfig(url="http://x/", trace=trace, peak_rps=50).plan()
    assert whole.scale == pytest.approx(0.05)  # 1000 -> 50
    window = LoadConfig(url="http://x/", trace=trace, peak_rps=50, speedup=60, duration_s=2).plan()
    assert window.scale == pytest.approx(50 / 400)  # only the first two minutes are replayed
    scaled = LoadConfig(url="http://x/", trace=trace, scale=1 / 60).plan()
    assert scaled.rate_at(0) == pytest.approx(100 / 60)  # requests per minute -> per second


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trace": "t.csv"}, "give peak_rps (map its busiest step"),
        ({"peak_rps": 5, "scale": 1}, "at most one of peak_rps and scale"),
        ({"speedup": 0}, "speedup"),
        ({"duration_s": 8 * 86_400}, "duration_s"),
        ({"max_requests": 0}, "max_requests"),
        ({"url": "ftp://x/"}, "url"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        LoadConfig(**{"url": "http://x/", **kwargs})  # type: ignore[arg-type]
    assert message in str(err.value)


def test_offset_past_the_end() -> None:
    with pytest.raises(ValueError, match="offset_s: 90000 is past the end"):
        LoadConfig(url="http://x/", offset_s=90_000).plan()


# --- real runs ----------------------------------------------------------------------------------


async def _run_against_demo(config: LoadConfig, plan: LoadPlan | None = None) -> loadgen.LoadSummary:
    demo = DemoApp(DemoConfig(work_ms=0), CpuAllowance(cores=2, source="test"), hash_rate=1e9)
    server = TestServer(demo.web_app(), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        cfg = config.model_copy(update={"url": str(server.make_url("/"))})
        return await LoadGenerator(cfg, plan or cfg.plan()).run()
    finally:
        await server.close()


def test_run_is_bounded_by_request_count() -> None:
    config = LoadConfig(url="http://x/", peak_rps=400, speedup=1000, max_requests=25, report_every_s=60)
    summary = asyncio.run(_run_against_demo(config))
    assert summary.ended_by == "max_requests"
    assert summary.arrivals == 25
    assert summary.ok + summary.http_error + summary.timeout + summary.connection_error == summary.sent
    assert summary.ok == summary.sent and summary.sent > 0
    assert summary.latency_p50_s is not None and summary.latency_p99_s is not None
    assert summary.latency_p50_s <= summary.latency_p99_s


def test_run_ends_with_the_pattern() -> None:
    pattern = Pattern(t_seconds=(0, 1, 2), values=(30, 0, 30), step_s=1, source="t")
    config = LoadConfig(url="http://x/", speedup=10, report_every_s=60)
    plan = LoadPlan(pattern=pattern, speedup=10, scale=1, offset_s=0)
    summary = asyncio.run(_run_against_demo(config, plan))
    assert summary.ended_by == "pattern_end"
    assert summary.sent == summary.ok


def test_run_is_bounded_by_duration() -> None:
    config = LoadConfig(url="http://x/", peak_rps=20, duration_s=0.3, report_every_s=60)
    summary = asyncio.run(_run_against_demo(config))
    assert summary.ended_by == "duration"


def test_unreachable_target_counts_connection_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    config = LoadConfig(url=url, peak_rps=200, speedup=1000, max_requests=10, timeout_s=2)
    summary = asyncio.run(LoadGenerator(config, config.plan()).run())
    assert summary.sent == 10 and summary.connection_error == 10 and summary.ok == 0


def test_cli_prints_a_json_summary_and_names_bad_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"http://127.0.0.1:{free_port()}/"
    result = runner.invoke(
        loadgen.main, ["--url", url, "--peak-rps", "100", "--speedup", "1000", "--max-requests", "3"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["sent"] == 3 and summary["ended_by"] == "max_requests"
    bad = runner.invoke(loadgen.main, ["--url", url, "--speedup", "0"])
    assert bad.exit_code == 2 and "--speedup: Input should be greater than 0" in bad.output
    trace = _trace(tmp_path, "t_seconds,value\n0,1\n60,oops\n")
    bad = runner.invoke(loadgen.main, ["--url", url, "--trace", str(trace), "--peak-rps", "5"])
    assert bad.exit_code == 2 and "trace.csv:3: value: not a number: 'oops'" in bad.output
    bad = runner.invoke(loadgen.main, ["--url", url, "--trace", str(trace)])
    assert bad.exit_code == 2 and "--trace: a trace's values are in its source's own units" in bad.output
    bad = runner.invoke(loadgen.main, ["--url", url, "--peak-rps", "5", "--scale", "2"])
    assert bad.exit_code == 2 and "--peak-rps: give at most one of peak_rps and scale" in bad.output
