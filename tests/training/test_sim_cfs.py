"""The CFS-quota delay term (``cpu_limit_model="cfs_quota"``): off by default, and what it does when on.

The default must leave the simulator exactly as the shipped policy was trained on it, so
the first test pins ``_service`` against a copy of the fluid formula. The others check the
term's shape (fast median, a tail that grows with utilisation and stops at the timeout,
the same throughput as the fluid model, continuity at one core) and that the calibration
fit recovers its parameter from data the simulator generated. No timing assertions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rlscale.cli import main
from rlscale.training.calibration import (
    FitWeights,
    MeasurementSet,
    calibrate,
    fit,
    with_values,
)
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig

from .test_calibration import MEASURE_S, WARMUP_S, grid
from .test_calibration import measured as calibration_data

DT = 15.0
TRUE = {"cpu_per_request_ms": 6.0, "pod_base_cpu_m": 15.0, "base_latency_ms": 4.0, "cfs_dispersion": 0.4}


def cfs(**overrides: object) -> SimConfig:
    return SimConfig(**{"cpu_limit_model": "cfs_quota", **overrides})  # type: ignore[arg-type]


def service(
    config: SimConfig, limits_m: np.ndarray, lam: np.ndarray, serving: np.ndarray, backlog: np.ndarray
) -> tuple[np.ndarray, ...]:
    """One sub-step of ``_service`` for envs that differ only in CPU limit and load."""
    sim = VectorSim(config, np.full(30, 1.0), n_envs=limits_m.size, seed=0)
    sim.cpu_limit_m[:] = limits_m
    sim._capacity(slice(None))
    return sim._service(slice(None), lam, serving, backlog, DT)


def fluid_reference(
    cfg: SimConfig, limits_m: np.ndarray, lam: np.ndarray, serving: np.ndarray, backlog: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The fluid model's formulas as they were before the CFS term existed (a copy, to pin the default)."""
    free = np.maximum(limits_m - cfg.pod_base_cpu_m, 0.0) / 1000.0
    h = cfg.saturation_sharpness
    k = np.maximum(free / (1.0 + (free / cfg.cpu_saturation_cores) ** h) ** (1.0 / h), 1e-6)
    servers = np.maximum(k, 1.0)
    s_ms = cfg.cpu_per_request_ms / np.minimum(k, 1.0)
    s_over_c = s_ms / servers
    mu_pod = k * 1000.0 / cfg.cpu_per_request_ms
    expo = np.sqrt(2.0 * (servers + 1.0)) - 1.0
    safe = np.maximum(serving, 1.0)
    mu = serving * mu_pod
    inv_mu = 1.0 / np.maximum(mu, 1e-9)
    total = backlog + lam * DT
    served = np.minimum(total, mu * DT)
    b1 = total - served
    drop = np.maximum(b1 - np.minimum(cfg.queue_capacity_per_replica * serving, cfg.request_timeout_s * mu), 0.0)
    b1 -= drop
    rho = np.minimum(lam * inv_mu, cfg.rho_cap)
    with np.errstate(divide="ignore"):
        log_pw = expo * np.log(rho)
    pw = np.exp(log_pw)
    theta = s_over_c / (1.0 - rho)
    timeout_ms = cfg.request_timeout_s * 1000.0
    base = cfg.base_latency_ms + timeout_ms * (serving <= 0)
    ln2, ln100 = math.log(2.0), math.log(100.0)
    p50 = base + s_ms * ln2 + theta * np.maximum(log_pw + ln2, 0.0) + (500.0 * (backlog + b1)) * inv_mu
    p99 = base + s_ms * ln100 + theta * np.maximum(log_pw + ln100, 0.0) + (1000.0 * np.maximum(backlog, b1)) * inv_mu
    p50, p99 = np.minimum(p50, timeout_ms), np.minimum(p99, timeout_ms)
    rate_pod = served / (DT * safe)
    cpu_util = np.minimum((cfg.pod_base_cpu_m + cfg.cpu_per_request_ms * rate_pod) / limits_m, 1.0)
    mean_resp_s = (cfg.base_latency_ms + s_ms + pw * theta) * 0.001
    inflight = rate_pod * mean_resp_s + b1 / safe
    ws = cfg.memory_base_mib + cfg.memory_per_inflight_mib * inflight
    return served, b1, drop, p50, p99, cpu_util, ws, inflight


def a_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Limits from 100m to 4 cores × loads from none to overload × 0–3 pods × with and without backlog."""
    rng = np.random.default_rng(7)
    n = 400
    limits = rng.choice([100, 150, 250, 300, 500, 900, 1000, 1500, 2500, 4000], n).astype(np.int64)
    serving = rng.choice([0.0, 1.0, 2.0, 3.0], n)
    lam = rng.choice([0.0, 0.5, 5.0, 20.0, 80.0, 300.0], n) * rng.uniform(0.5, 1.5, n)
    backlog = np.where(rng.random(n) < 0.3, rng.uniform(0, 500, n), 0.0)
    return limits, lam, serving, backlog


def test_the_default_is_the_fluid_model_bit_for_bit() -> None:
    cfg = SimConfig()
    assert cfg.cpu_limit_model == "fluid"
    limits, lam, serving, backlog = a_grid()
    got = service(cfg, limits, lam, serving, backlog)
    want = fluid_reference(cfg, limits, lam, serving, backlog)
    for name, g, w in zip(("served", "backlog", "drop", "p50", "p99", "cpu", "ws", "inflight"), got, want, strict=True):
        assert np.array_equal(g, w), name
    # The CFS parameters alone change nothing while the model is fluid.
    other = service(SimConfig(cfs_period_ms=20.0, cfs_dispersion=3.0), limits, lam, serving, backlog)
    for g, o in zip(got, other, strict=True):
        assert np.array_equal(g, o)


def test_capacity_throughput_drops_and_cpu_are_the_fluid_models() -> None:
    limits, lam, serving, backlog = a_grid()
    fl = service(SimConfig(), limits, lam, serving, backlog)
    cf = service(cfs(), limits, lam, serving, backlog)
    for i in (0, 1, 2, 5):  # served, backlog, dropped, CPU utilisation
        assert np.array_equal(fl[i], cf[i])
    assert SimConfig().pod_capacity_rps(150) == cfs().pod_capacity_rps(150)


def test_a_sub_core_pod_serves_at_full_speed_at_low_utilisation() -> None:
    cfg = cfs(cpu_per_request_ms=5.5, pod_base_cpu_m=10.0, base_latency_ms=0.0)
    mu = cfg.pod_capacity_rps(150)  # about 25 req/s
    lam = np.array([0.1, 0.2]) * mu
    one = np.ones(2)
    _, _, _, p50, p99, *_ = service(cfg, np.array([150, 150]), lam, one, np.zeros(2))
    # Median: a request's 5.5 ms at full core speed (exponential: s·ln 2), not 5.5 ms / 0.14 cores.
    assert np.all(p50 < 5.5 * math.log(2.0) * 1.1)
    fluid = cfg.model_copy(update={"cpu_limit_model": "fluid"})
    p50_fluid = service(fluid, np.array([150]), lam[:1], one[:1], np.zeros(1))[3]
    assert p50_fluid[0] > 5 * p50[0]
    # At 10 % of the quota almost no request meets a spent quota: p99 is the service time's own tail.
    assert p99[0] < 5.5 * math.log(100.0) * 1.2


def test_p99_grows_with_utilisation_stays_finite_and_stops_at_the_timeout() -> None:
    cfg = cfs(cpu_per_request_ms=5.5, pod_base_cpu_m=10.0, base_latency_ms=2.0)
    for limit in (150, 300, 600):
        mu = cfg.pod_capacity_rps(limit)
        u = np.array([0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99])
        _, _, _, p50, p99, *_ = service(cfg, np.full(u.size, limit), u * mu, np.ones(u.size), np.zeros(u.size))
        assert np.all(np.isfinite(p99)) and np.all(np.isfinite(p50))
        assert np.all(np.diff(p99) > 0), limit
        assert np.all(np.diff(p50) >= 0), limit
        assert np.all(p50 <= p99)
        # Near the quota, a request waits for later periods: far above the service time.
        assert p99[-1] > 0.5 * cfg.cfs_period_ms * (1 - (limit - 10.0) / 1000.0)
    # Overload builds the fluid backlog; the total stops at the request timeout.
    _, _, _, p50, p99, *_ = service(cfg, np.array([150]), np.array([500.0]), np.ones(1), np.array([1e4]))
    assert p99[0] == cfg.request_timeout_s * 1000.0 and p50[0] <= p99[0]


def test_the_quota_term_grows_with_the_stopped_share_and_vanishes_at_one_core() -> None:
    cfg = cfs(cpu_per_request_ms=5.0, pod_base_cpu_m=0.0, base_latency_ms=0.0, saturation_sharpness=50.0)
    limits = np.array([200, 400, 800, 990, 1000, 1010, 1500])
    mu = np.array([cfg.pod_capacity_rps(c) for c in limits])
    lam, one, zero = 0.7 * mu, np.ones(limits.size), np.zeros(limits.size)
    p99 = service(cfg, limits, lam, one, zero)[4]
    p99_fluid = service(cfg.model_copy(update={"cpu_limit_model": "fluid"}), limits, lam, one, zero)[4]
    # At 70 % of the quota a smaller quota per request means more throttled periods and longer stops.
    assert p99[0] > p99[1] > p99[2]
    # From one core up there is nothing to stop: the CFS model is the fluid one; just below, nearly so.
    assert np.array_equal(p99[4:], p99_fluid[4:])
    assert p99[3] == pytest.approx(p99[4], rel=0.05)


def test_copy_env_carries_the_quota_parameters() -> None:
    sim = VectorSim(cfs(episode_steps=5), np.full(60, 30.0), n_envs=2, seed=0)
    sim.reset()
    sim.step_targets(np.array([2, 2]), np.array([300, 1500]), np.array([1024, 1024]))
    sim.copy_env(np.array([1, 1]))
    assert sim._cfs_gap_ms[0] == sim._cfs_gap_ms[1] == 0.0  # 1500m: no stopped share
    assert sim._cfs_n[0] == sim._cfs_n[1]


# ------------------------------------------------------------------------------------- the fit


def measured(config: SimConfig, noise: float, seed: int = 0) -> MeasurementSet:
    """The simulator's own prediction at test_calibration's grid, each metric × exp(N(0, noise))."""
    return calibration_data(config, grid(), noise, seed)


def test_the_fit_recovers_the_quota_terms_dispersion_from_simulated_data() -> None:
    truth = with_values(cfs(), TRUE)
    data = measured(truth, noise=0.03)
    report, fitted = calibrate(
        data,
        cfs(),
        params=("cpu_per_request_ms", "pod_base_cpu_m", "base_latency_ms", "cfs_dispersion"),
        weights=FitWeights(latency_p50=1.0),
        max_iter=40,
    )
    assert fitted.cpu_limit_model == "cfs_quota"
    assert fitted.cfs_dispersion == pytest.approx(TRUE["cfs_dispersion"], rel=0.25)
    assert fitted.cpu_per_request_ms == pytest.approx(TRUE["cpu_per_request_ms"], rel=0.08)
    assert fitted.base_latency_ms == pytest.approx(TRUE["base_latency_ms"], abs=2.0)
    held = report.summary["fitted"]["held_back"].mean_abs_rel_error
    assert held["throughput_rps"] < 0.1 and held["latency_p99_ms"] < 0.15 and held["latency_p50_ms"] < 0.15


def test_the_fluid_model_cannot_fit_the_quota_terms_parameters() -> None:
    data = measured(with_values(cfs(), TRUE), noise=0.0)
    with pytest.raises(ValueError, match="cfs_quota"):
        fit(SimConfig(), data.points, params=("cfs_dispersion",), warmup_s=WARMUP_S, measure_s=MEASURE_S)


def test_calibrate_cli_fits_the_quota_term_on_saved_measurements(tmp_path: Path) -> None:
    src = tmp_path / "measurements.json"
    src.write_text(measured(with_values(cfs(), TRUE), noise=0.0).model_dump_json())
    out = tmp_path / "out"
    args = ["calibrate", "--from-measurements", str(src), "--out", str(out), "--fit", "cfs_dispersion"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "cfs_quota" in refused.output
    result = CliRunner().invoke(main, [*args, "--cpu-limit-model", "cfs_quota", "--weights", "latency_p50=1"])
    assert result.exit_code == 0, result.output
    fitted = SimConfig.model_validate_json((out / "fitted-sim-config.json").read_text())
    assert fitted.cpu_limit_model == "cfs_quota"
    report = json.loads((out / "report.json").read_text())
    assert report["params"] == ["cfs_dispersion"] and report["weights"]["latency_p50"] == 1.0
