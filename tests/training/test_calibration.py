"""The calibration's fit, split and report (training/calibration.py), on data the simulator itself generated.

No real node: the "measurements" are :func:`predict` under a known config with
multiplicative noise, so the fit has a right answer to find.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlscale.training.calibration import (
    REPORTED,
    CalibrationReport,
    GridPoint,
    Measurement,
    MeasurementSet,
    Transition,
    calibrate,
    fit,
    format_summary,
    format_table,
    holdout_split,
    predict,
    regression_start,
    with_values,
)
from rlscale.training.sim_config import SimConfig

WARMUP_S, MEASURE_S = 10.0, 30.0
TRUE = {"cpu_per_request_ms": 6.0, "pod_base_cpu_m": 15.0, "base_latency_ms": 8.0}


def grid(limits: tuple[int, ...] = (150, 300), replicas: tuple[int, ...] = (1, 3)) -> list[GridPoint]:
    """A small grid: each cell at 30, 60 and 85 % of its capacity under TRUE."""
    out = []
    for c in limits:
        for r in replicas:
            cap = r * (c - TRUE["pod_base_cpu_m"]) / TRUE["cpu_per_request_ms"]
            out += [GridPoint(replicas=r, cpu_limit_m=c, offered_rps=round(f * cap, 1)) for f in (0.3, 0.6, 0.85)]
    return out


def measured(config: SimConfig, points: list[GridPoint], noise: float, seed: int = 0) -> MeasurementSet:
    """What the simulator under ``config`` predicts at ``points``, each metric × exp(N(0, noise))."""
    rng = np.random.default_rng(seed)

    def jitter(v: float) -> float:
        return v * float(np.exp(rng.normal(0.0, noise)))

    rows = []
    for p in points:
        pr = predict(config, p, warmup_s=WARMUP_S, measure_s=MEASURE_S)
        rows.append(
            Measurement(
                point=p,
                throughput_rps=jitter(pr.throughput_rps),
                latency_p50_ms=jitter(pr.latency_p50_ms),
                latency_p99_ms=jitter(pr.latency_p99_ms),
                cpu_utilization=jitter(pr.cpu_utilization),
                error_rate=pr.error_rate,
            )
        )
    return MeasurementSet(
        created="2026-12-02T00:00:00+00:00",
        work_ms=5.0,
        warmup_s=WARMUP_S,
        measure_s=MEASURE_S,
        points=rows,
        transitions=[
            Transition(from_replicas=0, to_replicas=1, from_cpu_limit_m=0, to_cpu_limit_m=150, seconds_to_ready=3.0),
            Transition(from_replicas=1, to_replicas=3, from_cpu_limit_m=150, to_cpu_limit_m=150, seconds_to_ready=4.0),
            Transition(from_replicas=3, to_replicas=3, from_cpu_limit_m=150, to_cpu_limit_m=300, seconds_to_ready=9.0),
            Transition(from_replicas=3, to_replicas=1, from_cpu_limit_m=300, to_cpu_limit_m=300, seconds_to_ready=1.0),
        ],
    )


@pytest.fixture(scope="module")
def truth() -> SimConfig:
    return with_values(SimConfig(), TRUE)


@pytest.fixture(scope="module")
def noisy(truth: SimConfig) -> MeasurementSet:
    return measured(truth, grid(), noise=0.03)


@pytest.fixture(scope="module")
def calibrated(noisy: MeasurementSet) -> tuple[CalibrationReport, SimConfig]:
    return calibrate(noisy, SimConfig(), max_iter=40)


def test_predict_is_the_simulators_capacity_and_cpu_model() -> None:
    cfg = with_values(SimConfig(), TRUE)
    cap = 2 * cfg.pod_capacity_rps(300)
    below = predict(cfg, GridPoint(replicas=2, cpu_limit_m=300, offered_rps=0.5 * cap), warmup_s=10, measure_s=30)
    assert below.throughput_rps == pytest.approx(0.5 * cap, rel=1e-6)
    assert below.error_rate == 0.0
    # CPU utilisation = (idle CPU + CPU per request × per-pod rate) / limit, as SimConfig documents.
    assert below.cpu_utilization == pytest.approx((15.0 + 6.0 * 0.25 * cap) / 300.0, rel=1e-6)
    above = predict(cfg, GridPoint(replicas=2, cpu_limit_m=300, offered_rps=2 * cap), warmup_s=10, measure_s=30)
    assert above.throughput_rps == pytest.approx(cap, rel=1e-3)
    assert above.latency_p99_ms > 10 * below.latency_p99_ms
    # More pods for the same load: lower p99.
    more = predict(cfg, GridPoint(replicas=4, cpu_limit_m=300, offered_rps=0.5 * cap), warmup_s=10, measure_s=30)
    assert more.latency_p99_ms < below.latency_p99_ms


def test_the_fit_recovers_the_parameters_that_generated_the_data(
    calibrated: tuple[CalibrationReport, SimConfig],
) -> None:
    report, fitted = calibrated
    assert fitted.cpu_per_request_ms == pytest.approx(TRUE["cpu_per_request_ms"], rel=0.08)
    assert fitted.pod_base_cpu_m == pytest.approx(TRUE["pod_base_cpu_m"], abs=6.0)
    assert fitted.base_latency_ms == pytest.approx(TRUE["base_latency_ms"], abs=6.0)
    held = report.summary["fitted"]["held_back"]
    before = report.summary["default"]["held_back"]
    assert held.points == len(report.held_back_ids) > 0
    for metric in ("throughput_rps", "latency_p99_ms", "cpu_utilization"):
        assert held.mean_abs_rel_error[metric] < 0.1, metric
    # The default config (10 ms per request, 50m idle) is far off, so the fit is what made it right.
    assert before.mean_abs_rel_error["latency_p99_ms"] > 0.5
    assert before.mean_abs_rel_error["throughput_rps"] > held.mean_abs_rel_error["throughput_rps"]
    assert all(report.held_back_within_target[m] for m in ("throughput_rps", "latency_p99_ms"))


def test_the_fitted_config_carries_the_measured_startup_delay(calibrated: tuple[CalibrationReport, SimConfig]) -> None:
    report, fitted = calibrated
    # Median over the scale-ups (3 s and 4 s); the limit change's rollout (9 s) and the scale-down do not count.
    assert report.measured_startup_s == pytest.approx(3.5)
    assert fitted.startup_delay_s == pytest.approx(3.5)


def test_the_default_split_holds_back_one_point_per_cell_rotating_over_loads() -> None:
    points = grid(replicas=(1, 2, 3))
    train, held = holdout_split(points)
    assert len(held) == 6 and len(train) == 12
    assert not set(train) & set(held) and set(train) | set(held) == {p.id for p in points}
    by_id = {p.id: p for p in points}
    cells = [(by_id[h].replicas, by_id[h].cpu_limit_m) for h in held]
    assert len(set(cells)) == 6  # one per cell
    # Rotation: the held-back point's load rank within its cell runs 0, 1, 2, 0, 1, 2.
    ranks = []
    for h in held:
        cell = sorted(
            (p for p in points if (p.replicas, p.cpu_limit_m) == cells[held.index(h)]), key=lambda p: p.offered_rps
        )
        ranks.append([p.id for p in cell].index(h))
    assert ranks == [0, 1, 2, 0, 1, 2]


def test_an_explicit_holdout_is_used_and_checked() -> None:
    points = grid()
    train, held = holdout_split(points, [points[0].id, points[4].id])
    assert held == [points[0].id, points[4].id] and len(train) == len(points) - 2
    with pytest.raises(ValueError, match="no such grid points"):
        holdout_split(points, ["r9-c1-l1.0"])
    with pytest.raises(ValueError, match="nothing is left to fit"):
        holdout_split(points, [p.id for p in points])


def test_held_back_measurements_do_not_touch_the_fit(
    noisy: MeasurementSet, calibrated: tuple[CalibrationReport, SimConfig]
) -> None:
    """Wreck every held-back measurement: the fitted values must not move, only the held-back errors."""
    _, held = holdout_split([m.point for m in noisy.points])
    wrecked = noisy.model_copy(
        update={
            "points": [
                m.model_copy(
                    update={"latency_p99_ms": m.latency_p99_ms * 50, "throughput_rps": 0.1, "cpu_utilization": 5}
                )
                if m.point.id in held
                else m
                for m in noisy.points
            ]
        }
    )
    a, _ = calibrated
    b, _ = calibrate(wrecked, SimConfig(), max_iter=40)
    assert a.held_back_ids == b.held_back_ids == held
    assert a.fitted_values == b.fitted_values
    assert a.summary["fitted"]["train"] == b.summary["fitted"]["train"]
    assert b.summary["fitted"]["held_back"].mean_abs_rel_error["latency_p99_ms"] > 0.9
    assert [r.held_back for r in b.points] == [m.point.id in held for m in noisy.points]


def test_the_fit_only_sees_what_it_is_given() -> None:
    """Fitting the same data twice with different parameter sets: an unfitted parameter keeps its value."""
    data = measured(with_values(SimConfig(), TRUE), grid(limits=(300,), replicas=(2,)), noise=0.0)
    result = fit(SimConfig(), data.points, params=("cpu_per_request_ms",), warmup_s=WARMUP_S, measure_s=MEASURE_S)
    assert set(result.values) == {"cpu_per_request_ms"}
    with pytest.raises(ValueError, match="cannot fit"):
        fit(SimConfig(), data.points, params=("step_s",), warmup_s=WARMUP_S, measure_s=MEASURE_S)


def test_regression_start_reads_cpu_per_request_and_idle_cpu_off_the_cpu_line(noisy: MeasurementSet) -> None:
    exact = measured(with_values(SimConfig(), TRUE), grid(), noise=0.0)
    start = regression_start(exact.points)
    assert start["cpu_per_request_ms"] == pytest.approx(6.0, rel=1e-3)
    assert start["pod_base_cpu_m"] == pytest.approx(15.0, abs=0.5)


def test_the_report_and_the_fitted_config_round_trip_as_json(calibrated: tuple[CalibrationReport, SimConfig]) -> None:
    report, fitted = calibrated
    doc = json.loads(report.model_dump_json())
    assert doc["schema_version"] == 1
    assert set(doc) >= {
        "params", "default_values", "fitted_values", "fit", "train_ids", "held_back_ids", "points", "summary",
        "target_rel_error", "held_back_within_target", "measured_startup_s", "warmup_s", "measure_s",
    }  # fmt: skip
    assert set(doc["summary"]) == {"default", "fitted"}
    assert all(set(v) == {"train", "held_back"} for v in doc["summary"].values())
    point = doc["points"][0]
    assert set(point) == {"id", "held_back", "measured", "default", "fitted", "rel_error_default", "rel_error_fitted"}
    assert set(point["rel_error_fitted"]) == set(REPORTED)
    assert set(point["measured"]["point"]) == {"replicas", "cpu_limit_m", "offered_rps"}
    assert CalibrationReport.model_validate_json(report.model_dump_json()) == report
    again = SimConfig.model_validate_json(fitted.model_dump_json())
    assert again == fitted and again.cpu_per_request_ms == report.fitted_values["cpu_per_request_ms"]
    # Relative errors are (predicted − measured) / measured.
    r = report.points[0]
    want = (r.fitted.latency_p99_ms - r.measured.latency_p99_ms) / r.measured.latency_p99_ms
    assert math.isclose(r.rel_error_fitted["latency_p99_ms"], want)


def test_the_tables_name_every_point_and_every_fitted_parameter(
    calibrated: tuple[CalibrationReport, SimConfig],
) -> None:
    report, _ = calibrated
    table, summary = format_table(report), format_summary(report)
    assert all(f"| {r.id} |" in table for r in report.points)
    assert table.count("| yes |") == len(report.held_back_ids)
    assert all(n in summary for n in report.params) and "held-back target (15%)" in summary


def test_a_measurement_file_with_an_unknown_field_is_refused(noisy: MeasurementSet) -> None:
    doc = json.loads(noisy.model_dump_json())
    doc["points"][0]["p99"] = 1.0
    with pytest.raises(ValueError, match="p99"):
        MeasurementSet.model_validate(doc)
