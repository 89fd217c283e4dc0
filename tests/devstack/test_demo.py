"""``rlscale demo``'s parts that need no cluster: the load pattern, the policy it applies, the report.

The demo itself is exercised end to end by running it (docs/e2e.md has a measured run);
these pin what it is built from: that the default pattern really has a flash crowd, that
the policy it creates is valid for the operator's own model, that bad input fails before
anything starts, and that the summary and plot say what the records say.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from rlscale.cli import main
from rlscale.devstack.demo import (
    CROWD_PEAK_FACTOR,
    REAL_LIMITS,
    REAL_PORT,
    _decisions_by_source,
    crowd_window_start,
    demo_deployment,
    demo_policy,
    flash_crowd_day,
    parse_start,
    real_demo_deployment,
)
from rlscale.devstack.demo_report import DecisionRecord, decision_line, format_summary, plot, summarize
from rlscale.devstack.twin import TwinSample
from rlscale.operator.metrics import OperatorMetrics
from rlscale.operator.models import AutoscalePolicySpec, DecisionStatus
from rlscale.operator.observe import deployment_view


def test_the_default_pattern_is_a_generated_day_with_a_flash_crowd() -> None:
    day = flash_crowd_day()
    assert len(day) == 1440 and day.kind == "generated" and day.params["pattern"] == "flash_crowd"
    assert day.values.max() >= CROWD_PEAK_FACTOR * np.median(day.values)
    start = crowd_window_start(day)
    peak = int(np.argmax(day.values))
    assert start < peak and day.values[start] < 1.5 * np.median(day.values)  # starts before the surge
    assert flash_crowd_day(3).params["seed"] == 3


@pytest.mark.parametrize(("text", "row"), [("auto", None), ("0", 0), ("90", 90), ("13:30", 810)])
def test_start_accepts_minutes_and_clock_times(text: str, row: int | None) -> None:
    assert parse_start(text) == row


@pytest.mark.parametrize("text", ["noon", "-5", "1:xx"])
def test_a_bad_start_names_the_option_before_anything_starts(text: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--start", text, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "--start" in result.output and text in result.output
    assert not (tmp_path / "out").exists()


def test_the_demo_policy_and_deployment_are_what_the_operator_accepts() -> None:
    spec = AutoscalePolicySpec.model_validate(demo_policy("http://127.0.0.1:9090", "gradual")["spec"])
    view = deployment_view(demo_deployment(), spec.containers)
    limits = spec.limits
    assert limits.min_replicas <= view.replicas <= limits.max_replicas
    assert limits.cpu_limit_min_m <= view.primary.cpu_limit_m <= limits.cpu_limit_max_m
    assert limits.memory_limit_min_mib <= view.primary.memory_limit_mib <= limits.memory_limit_max_mib
    assert spec.rollout.mode == "gradual" and spec.model.source == "builtin"


def test_the_real_node_policy_and_deployment_are_what_the_operator_accepts() -> None:
    """The real pods start inside the real policy's bounds (else the mask refuses every change)."""
    spec = AutoscalePolicySpec.model_validate(demo_policy("http://127.0.0.1:9090", "shadow", REAL_LIMITS)["spec"])
    dep = real_demo_deployment("localhost/rlscale/demo:test")
    view = deployment_view(dep, spec.containers)
    limits = spec.limits
    assert limits.min_replicas <= view.replicas <= limits.max_replicas
    assert limits.cpu_limit_min_m <= view.primary.cpu_limit_m <= limits.cpu_limit_max_m
    assert limits.memory_limit_min_mib <= view.primary.memory_limit_mib <= limits.memory_limit_max_mib
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["imagePullPolicy"] == "Never" and container["readinessProbe"]["httpGet"]["port"] == REAL_PORT
    assert container["resources"]["requests"] == container["resources"]["limits"]  # Guaranteed


def test_a_malformed_trace_fails_naming_file_and_line_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_seconds,value\n0,10\n60,lots\n")
    result = CliRunner().invoke(main, ["demo", "--trace", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "--trace" in result.output and "bad.csv:3" in result.output and "lots" in result.output
    assert not (tmp_path / "out").exists()


def _sample(i: int, replicas: int, p99: float, violated: bool) -> TwinSample:
    return TwinSample(
        wall_s=float(i),
        sim_s=60.0 * i,
        load_rps=100.0,
        served_rps=100.0 if not violated else 90.0,
        error_rate=0.0 if not violated else 0.1,
        latency_p50_ms=30.0,
        latency_p99_ms=p99,
        cpu_utilization=0.5,
        replicas=replicas,
        ready_replicas=float(replicas),
        cpu_limit_m=1000,
        memory_limit_mib=1024,
        slo_violated=violated,
        oom_kills=0.0,
    )


def _status(
    n: int, source: Literal["learned", "baseline"], before: int, after: int, cpu_before: int, cpu_after: int
) -> DecisionStatus:
    return DecisionStatus(
        number=n,
        time="2026-01-01T00:00:00Z",
        source=source,
        action="baseline:hpa" if source == "baseline" else "replicas+1,cpu+1",
        baseline_replicas=after,
        previous_replicas=before,
        replicas=after,
        previous_cpu_limit_m=cpu_before,
        cpu_limit_m=cpu_after,
        previous_memory_limit_mib=1024,
        memory_limit_mib=1024,
        applied=True,
        explanation="learned acted (replicas+1,cpu+1); replicas 2→3; hpa: utilisation 0.9 vs target 0.7 → 3",
    )


def _decision(
    n: int,
    source: Literal["learned", "baseline"],
    before: int,
    after: int,
    cpu_before: int = 1000,
    cpu_after: int = 1000,
) -> DecisionRecord:
    return DecisionRecord(
        decision=_status(n, source, before, after, cpu_before, cpu_after),
        wall_s=5.0 * n,
        sim_s=300.0 * n,
        load_rps=100.0,
        latency_p99_ms=120.0,
    )


def test_a_record_reads_the_operators_status_and_writes_the_same_csv_columns() -> None:
    status = _status(7, "learned", 2, 4, 1000, 1250)
    sample = _sample(3, 4, 180.0, False)
    rec = DecisionRecord.from_status(
        status.model_dump(by_alias=True, mode="json"),
        wall_s=35.0,
        sample=sample,
        offset_s=3600.0,
        rollout={"mode": "gradual", "ratio": 0.35},
    )
    assert rec.decision == status and rec.limits_changed
    assert (rec.sim_s, rec.load_rps, rec.latency_p99_ms) == (3600.0 + sample.sim_s, 100.0, 180.0)
    row = rec.csv_row()
    assert list(row) == [
        "number",
        "wall_s",
        "sim_s",
        "load_rps",
        "latency_p99_ms",
        "gate_ratio",
        "source",
        "action",
        "previous_replicas",
        "replicas",
        "previous_cpu_limit_m",
        "cpu_limit_m",
        "previous_memory_limit_mib",
        "memory_limit_mib",
        "applied",
        "explanation",
    ]
    assert (row["number"], row["replicas"], row["cpu_limit_m"], row["applied"]) == (7, 4, 1250, True)
    assert row["gate_ratio"] == 0.35
    unseen = DecisionRecord.from_status(status.model_dump(by_alias=True), wall_s=1.0, sample=None)
    assert math.isnan(unseen.sim_s) and math.isnan(unseen.load_rps) and unseen.gate_ratio is None


def test_summary_is_time_weighted_and_counts_what_happened(tmp_path: Path) -> None:
    samples = [_sample(i, 2, 100.0, False) for i in range(30)] + [_sample(i, 4, 900.0, True) for i in range(30, 40)]
    decisions = [
        _decision(1, "baseline", 2, 2),
        _decision(2, "learned", 2, 4, 1000, 1250),
        _decision(3, "baseline", 4, 4),
    ]
    s = summarize(samples, decisions, step_s=60.0, wall_s=40.0, by_source={"learned": 5, "baseline": 7})
    assert (s.replicas_min, s.replicas_max) == (2, 4)
    assert s.replicas_mean == pytest.approx((30 * 2 + 10 * 4) / 40)
    assert s.slo_violation_min == pytest.approx(10.0)
    assert s.error_fraction == pytest.approx(10 * 0.1 / 40)
    assert (s.learned, s.baseline, s.decisions) == (5, 7, 12)  # /metrics wins over the polled log
    assert (s.replica_changes, s.limit_changes) == (1, 1)
    assert s.cpu_core_hours == pytest.approx((30 * 2 + 10 * 4) * 1.0 / 60.0)
    table = format_summary(s, slo_ms=250, max_error_rate=0.01, mode="gradual", ratio=0.6)
    assert "max 4" in table and "10 simulated min" in table and "learned 5, baseline 7" in table and "0.60" in table
    png = plot(samples, decisions, tmp_path / "p.png", slo_ms=250, title="t", offset_s=3600)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # A gradual rollout's decisions carry the gate's ratio: the plot gets a fourth panel for it.
    gated = [dataclasses.replace(d, gate_ratio=r) for d, r in zip(decisions, (0.5, 0.6, 0.4), strict=True)]
    with_gate = plot(samples, gated, tmp_path / "g.png", slo_ms=250, title="t", offset_s=3600)
    from matplotlib.image import imread

    assert imread(with_gate).shape[0] > imread(png).shape[0] * 1.2


def test_summary_refuses_an_empty_run() -> None:
    with pytest.raises(ValueError, match="no simulated intervals"):
        summarize([], [], step_s=60.0, wall_s=1.0)


def test_decision_line_shows_time_load_replicas_limits_source_and_why() -> None:
    line = decision_line(_decision(2, "learned", 2, 4, 1000, 1250))
    for part in (
        "[00:10]",
        "sim  0:10",
        "load   100.0 rps",
        " 2→4",
        "cpu 1250m",
        "learned",
        "replicas+1,cpu+1",
        "hpa:",
    ):
        assert part in line, (part, line)


def test_decisions_by_source_sums_the_operators_counter_over_actions() -> None:
    metrics = OperatorMetrics()
    metrics.decisions.labels("learned", "replicas+1").inc(3)
    metrics.decisions.labels("learned", "hold").inc(2)
    metrics.decisions.labels("baseline", "baseline:hpa").inc(4)
    metrics.refusals.labels("metrics-unavailable").inc()
    assert _decisions_by_source(generate_latest(metrics.registry).decode()) == {"learned": 5.0, "baseline": 4.0}
