"""``rlscale calibrate`` without a node: the grid, turning Prometheus answers into measurements, the re-fit path."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from rlscale.cli import main
from rlscale.devstack.calibrate import CalibrationGrid, constant_load, parse_weights, queries, to_measurement
from rlscale.devstack.loadgen import LoadSummary
from rlscale.training.calibration import GridPoint, Measurement, MeasurementSet, predict, with_values
from rlscale.training.sim_config import SimConfig


def test_the_default_grid_is_18_points_up_to_90_percent_in_an_order_that_rolls_pods_once() -> None:
    grid = CalibrationGrid()
    points = grid.points()
    assert len(points) == 18 and len({p.id for p in points}) == 18
    cells = [(p.replicas, p.cpu_limit_m) for p in points[::3]]
    assert cells == [(1, 150), (2, 150), (3, 150), (3, 300), (2, 300), (1, 300)]
    # One limit change in the whole walk, and never more than one pod added or removed at a time.
    changes = [(a, b) for a, b in itertools.pairwise(cells) if a != b]
    assert sum(a[1] != b[1] for a, b in changes) == 1
    assert all(abs(a[0] - b[0]) <= 1 for a, b in changes)
    top = max(points, key=lambda p: p.offered_rps)
    assert top.offered_rps == pytest.approx(0.9 * 3 * 300 / 5.7, abs=0.05)
    first = points[:3]
    assert [p.offered_rps for p in first] == sorted(p.offered_rps for p in first)


def test_a_window_of_prometheus_answers_becomes_a_measurement() -> None:
    point = GridPoint(replicas=2, cpu_limit_m=150, offered_rps=30.0)
    values = {
        "ok_rps": 29.0,
        "all_rps": 30.0,
        "err_rps": 1.0,
        "p50_s": 0.012,
        "p99_s": 0.35,
        "cpu_cores": 0.24,
        "throttled": 0.4,
        "memory_bytes": 50 * 2**20,
    }
    load = LoadSummary(sent=1200, ok=1150, http_error=40, timeout=5, connection_error=3, dropped=2, latency_p99_s=0.4)
    m = to_measurement(point, values, load, load_average=1.5)
    assert m.throughput_rps == 29.0 and m.error_rate == pytest.approx(1 / 30)
    assert m.latency_p50_ms == pytest.approx(12.0) and m.latency_p99_ms == pytest.approx(350.0)
    assert m.cpu_utilization == pytest.approx(0.24 / 0.3)
    assert m.throttled_fraction == 0.4 and m.memory_working_set_mib == pytest.approx(50.0)
    assert m.client_sent == 1200 and m.client_failed == 50 and m.client_p99_ms == pytest.approx(400.0)
    # No sample (NaN): rates are zero, optional readings absent, and no division by zero.
    empty = to_measurement(point, dict.fromkeys(values, math.nan), None)
    assert empty.throughput_rps == 0 and empty.error_rate == 0 and empty.throttled_fraction is None


def test_the_queries_read_the_work_path_and_the_app_container_over_the_window() -> None:
    q = queries(30)
    assert set(q) == {"ok_rps", "all_rps", "err_rps", "p50_s", "p99_s", "cpu_cores", "throttled", "memory_bytes"}
    assert all("[30s]" in text for text in q.values())
    assert 'path="/"' in q["p99_s"] and "histogram_quantile(0.99" in q["p99_s"]
    assert 'container="demo"' in q["cpu_cores"] and "container_cpu_usage_seconds_total" in q["cpu_cores"]


def test_constant_load_holds_its_rate_for_the_whole_run() -> None:
    cfg, plan = constant_load(12.5, 40.0, seed=3)
    assert cfg.duration_s == 40.0 and cfg.seed == 3
    assert all(plan.rate_at(t) == 12.5 for t in (0.0, 20.0, 39.9))
    assert plan.pattern_duration_s() > 40.0


def test_calibrate_from_saved_measurements_writes_the_report_the_config_and_the_table(tmp_path: Path) -> None:
    truth = with_values(SimConfig(), {"cpu_per_request_ms": 6.0, "pod_base_cpu_m": 10.0, "base_latency_ms": 5.0})
    rng = np.random.default_rng(0)
    rows = []
    for p in CalibrationGrid(replicas=(1, 2), cpu_limits_m=(300,)).points():
        pr = predict(truth, p, warmup_s=5, measure_s=20)
        rows.append(
            Measurement(
                point=p,
                throughput_rps=pr.throughput_rps,
                latency_p50_ms=pr.latency_p50_ms,
                latency_p99_ms=pr.latency_p99_ms * float(np.exp(rng.normal(0, 0.02))),
                cpu_utilization=pr.cpu_utilization,
                error_rate=0.0,
            )
        )
    data = MeasurementSet(created="2026-12-02T00:00:00+00:00", work_ms=5, warmup_s=5, measure_s=20, points=rows)
    src = tmp_path / "measurements.json"
    src.write_text(data.model_dump_json())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["calibrate", "--from-measurements", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    fitted = SimConfig.model_validate_json((out / "fitted-sim-config.json").read_text())
    assert fitted.cpu_per_request_ms == pytest.approx(6.0, rel=0.1)
    assert len(report["held_back_ids"]) == 2 and "| yes |" in (out / "table.md").read_text()
    assert "cpu_per_request_ms: 10 → " in result.output
    assert report["weights"] == {"throughput": 1.0, "latency_p99": 1.0, "cpu_utilization": 1.0, "latency_p50": 0.0}


def test_calibrate_refuses_a_parameter_it_cannot_fit(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "--fit", "step_s", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "cannot fit" in result.output


def test_weights_parse_by_name_and_refuse_unknown_names() -> None:
    w = parse_weights("cpu_utilization=0, latency_p99=2")
    assert (w.throughput, w.latency_p99, w.cpu_utilization) == (1.0, 2.0, 0.0)
    for bad in ("p99=1", "throughput", "throughput=x", "throughput=-1"):
        with pytest.raises(click.BadParameter):
            parse_weights(bad)
