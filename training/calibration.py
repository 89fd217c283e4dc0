"""Sim-to-real calibration: what the simulator predicts for a measured grid, a fit of its service parameters.

``rlscale calibrate`` (:mod:`rlscale.devstack.calibrate`) drives the real demo service on a
real node over a grid of (replicas, CPU limit, offered load) and measures each point. This
module holds everything that needs no cluster, so it is unit-tested and re-runnable on a
saved measurement file:

* the measurement file's schema (:class:`MeasurementSet`);
* the simulator's prediction for one grid point (:func:`predict`) — :class:`VectorSim`
  itself, played at the point's constant load with the point's replicas and limit, so the
  prediction is the simulator's real behaviour and cannot drift from it;
* which points are held back from the fit (:func:`holdout_split`);
* a bounded least-squares fit of a few :class:`SimConfig` service parameters to the
  training points (:func:`fit`: Levenberg–Marquardt on log-ratio residuals of throughput,
  p99 and CPU utilisation; scipy is not a dependency, and a small solver in numpy is enough
  for three or four parameters);
* the report (:class:`CalibrationReport`): per point, measured vs predicted by the default
  and the fitted config, and the mean relative errors on training and held-back points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig

SCHEMA_VERSION: Literal[1] = 1
#: The issue's target: the fitted simulator within 15 % of the measurement on held-back points.
TARGET_REL_ERROR = 0.15
#: What the fit may move, and within which bounds (the lower bound of pod_base_cpu_m's upper
#: end is set by the smallest CPU limit in the data: a pod must have CPU left for requests).
FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "cpu_per_request_ms": (0.2, 200.0),
    "pod_base_cpu_m": (0.0, 1000.0),
    "base_latency_ms": (0.0, 2000.0),
    "cpu_saturation_cores": (0.02, 16.0),
    "saturation_sharpness": (1.0, 50.0),
    "rho_cap": (0.51, 0.999),
    "cfs_dispersion": (0.02, 50.0),
    "cfs_period_ms": (5.0, 1000.0),
}
#: Parameters of the CFS-quota delay term: they move nothing unless the base config uses it.
CFS_PARAMS: frozenset[str] = frozenset({"cfs_dispersion", "cfs_period_ms"})
DEFAULT_FIT_PARAMS: tuple[str, ...] = ("cpu_per_request_ms", "pod_base_cpu_m", "base_latency_ms")
#: The metrics a point is judged on (the report's columns) and those the fit's residuals use.
REPORTED: tuple[str, ...] = ("throughput_rps", "latency_p99_ms", "latency_p50_ms", "cpu_utilization")

FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------- the measurements


class GridPoint(BaseModel):
    """One operating point of the service: a Deployment size, a per-pod CPU limit and a constant offered load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(ge=1, le=1000)
    cpu_limit_m: int = Field(ge=1, le=64_000)
    offered_rps: float = Field(gt=0, le=1_000_000)

    @property
    def id(self) -> str:
        """A stable name, e.g. ``r2-c150-l31.2``."""
        return f"r{self.replicas}-c{self.cpu_limit_m}-l{self.offered_rps:.1f}"


class Measurement(BaseModel):
    """What was measured at one grid point over its measurement window (Prometheus unless said otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    point: GridPoint
    throughput_rps: float = Field(ge=0, description="Successful responses per second (HTTP 2xx), all pods.")
    latency_p50_ms: float = Field(ge=0, description="Median server-side latency (the app's histogram).")
    latency_p99_ms: float = Field(ge=0, description="99th percentile of server-side latency (the app's histogram).")
    cpu_utilization: float = Field(ge=0, description="cAdvisor CPU usage / (replicas × limit).")
    error_rate: float = Field(ge=0, le=1, description="5xx responses / all responses.")
    throttled_fraction: float | None = Field(
        None, ge=0, le=1, description="CFS periods in which the pods were throttled / periods they ran in (cAdvisor)."
    )
    memory_working_set_mib: float | None = Field(None, ge=0, description="Mean working set per pod (cAdvisor).")
    client_sent: int = Field(0, ge=0, description="Requests the load generator sent (warm-up included).")
    client_failed: int = Field(0, ge=0, description="Of those: timeouts, connection errors, drops and HTTP errors.")
    client_p99_ms: float | None = Field(None, ge=0, description="Client-side p99, warm-up included.")
    load_average: float | None = Field(None, ge=0, description="The host's 1-minute load average after the window.")


class Transition(BaseModel):
    """A change of the Deployment between grid points, and how long until every new pod was Ready."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_replicas: int = Field(ge=0)
    to_replicas: int = Field(ge=1)
    from_cpu_limit_m: int = Field(ge=0)
    to_cpu_limit_m: int = Field(ge=1)
    seconds_to_ready: float = Field(ge=0)

    @property
    def is_scale_up(self) -> bool:
        """New pods started side by side on an unchanged limit: their time is the simulator's start-up delay.

        A limit change is not one: it rolls the pods a few at a time, which the simulator
        models as waves of ``startup_delay_s`` each.
        """
        same_limit = self.from_cpu_limit_m in (0, self.to_cpu_limit_m)
        return same_limit and self.to_replicas > self.from_replicas


class MeasurementSet(BaseModel):
    """The file ``rlscale calibrate`` writes after measuring: every grid point, and how they were measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    created: str = Field(description="UTC time the measurement started (ISO 8601).")
    host: str = Field("", description="Machine, CPUs and load average at the start.")
    work_ms: float = Field(gt=0, description="The demo app's hashing per request (--work-ms).")
    warmup_s: float = Field(ge=0, description="Load before each point's window (not measured).")
    measure_s: float = Field(gt=0, description="Each point's measurement window (PromQL range).")
    wall_s: float = Field(0.0, ge=0, description="Wall time of the whole measurement, start-up included.")
    points: list[Measurement]
    transitions: list[Transition] = Field(default_factory=list)


# ---------------------------------------------------------------------------- the simulator's view


class Prediction(BaseModel):
    """The simulator's steady state at one grid point (the same quantities as :class:`Measurement`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    throughput_rps: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu_utilization: float
    error_rate: float


def point_config(config: SimConfig, point: GridPoint, *, measure_s: float) -> SimConfig:
    """``config`` at one grid point: its replicas and limit from the start, absolute load, no noise.

    The service parameters are ``config``'s. Only what makes a steady-state reading
    exact changes: arrival and metric noise off (the measurement window averages them out),
    the decision interval equal to the measurement window, the load in requests/s, and a
    memory limit at the limits' maximum — the grid measures CPU and latency, and the
    memory model (an OOM at the real pods' 128 MiB against the default 256 MiB idle working
    set) would otherwise decide the outcome.
    """
    data = config.model_dump()
    lim = data["limits"]
    lim["min_replicas"] = min(lim["min_replicas"], point.replicas)
    lim["max_replicas"] = max(lim["max_replicas"], point.replicas)
    lim["cpu_limit_min_m"] = min(lim["cpu_limit_min_m"], point.cpu_limit_m)
    lim["cpu_limit_max_m"] = max(lim["cpu_limit_max_m"], point.cpu_limit_m)
    data.update(
        initial_replicas=point.replicas,
        initial_cpu_limit_m=point.cpu_limit_m,
        initial_memory_limit_mib=lim["memory_limit_max_mib"],
        absolute_rps_per_unit=1.0,
        arrival_noise=0.0,
        metric_noise=0.0,
        metrics_missing_prob=0.0,
        load_scale_range=(1.0, 1.0),
        step_s=measure_s,
    )
    return SimConfig.model_validate(data)


def predict(config: SimConfig, point: GridPoint, *, warmup_s: float, measure_s: float) -> Prediction:
    """What :class:`VectorSim` under ``config`` shows at ``point``: the interval after ``warmup_s`` of the load.

    The simulator starts with the point's pods ready and an empty queue, plays whole
    intervals of ``measure_s`` covering the warm-up, then the measured one. Below capacity
    that is the steady state; above it, the backlog the real pods would also have built.
    """
    cfg = point_config(config, point, measure_s=measure_s)
    warm_steps = math.ceil(warmup_s / measure_s - 1e-9)
    steps = warm_steps + 1
    rows = math.ceil(steps * measure_s / 60.0) + 2
    sim = VectorSim(cfg, np.full(rows, point.offered_rps), n_envs=1, seed=0, fixed_start=True, episode_steps=steps)
    sim.reset()
    info: dict[str, Any] = {}
    for _ in range(steps):
        _, _, _, _, info = sim.step_targets(point.replicas, point.cpu_limit_m, cfg.initial_memory_limit_mib)
    cpu = float(info["cpu_utilization"][0])
    return Prediction(
        throughput_rps=float(info["served"][0]) / measure_s,
        latency_p50_ms=float(info["latency_p50_ms"][0]),
        latency_p99_ms=float(info["latency_p99_ms"][0]),
        cpu_utilization=0.0 if math.isnan(cpu) else cpu,
        error_rate=float(info["error_rate"][0]),
    )


def with_values(config: SimConfig, values: dict[str, float]) -> SimConfig:
    """``config`` with some fields replaced, validated (a fitted value that breaks a rule is an error)."""
    return SimConfig.model_validate({**config.model_dump(), **values})


# ---------------------------------------------------------------------------- the split


def holdout_split(points: Sequence[GridPoint], holdout: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(training ids, held-back ids). ``holdout``: explicit ids, or None for the rotating default.

    The default holds back one point per (replicas, CPU limit) cell, rotating over the
    load levels (cell ``j`` in grid order gives up its ``j mod n``-th lowest load), so each
    cell and each load level is represented on both sides and the held-back points test
    interpolation in load, replicas and limit at once. A cell with a single point stays in
    training.
    """
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise ValueError("holdout_split: grid points must be distinct")
    if holdout is not None:
        unknown = sorted(set(holdout) - set(ids))
        if unknown:
            raise ValueError(f"holdout: no such grid points: {unknown} (known: {ids})")
        held = [i for i in ids if i in set(holdout)]
    else:
        cells: dict[tuple[int, int], list[GridPoint]] = {}
        for p in points:
            cells.setdefault((p.replicas, p.cpu_limit_m), []).append(p)
        held = []
        for j, cell in enumerate(cells.values()):
            if len(cell) < 2:
                continue
            by_load = sorted(cell, key=lambda p: p.offered_rps)
            held.append(by_load[j % len(by_load)].id)
    train = [i for i in ids if i not in set(held)]
    if not train:
        raise ValueError("holdout: every point is held back; nothing is left to fit")
    return train, held


# ---------------------------------------------------------------------------- the fit


class FitWeights(BaseModel):
    """Weights of each metric's log-ratio residual in the fit's sum of squares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    throughput: float = Field(1.0, ge=0)
    latency_p99: float = Field(1.0, ge=0)
    latency_p50: float = Field(
        0.0,
        ge=0,
        description="Off by default (the fits in docs/simulator.md were made without it); the CFS-quota term is "
        "the first service model whose median can follow a real sub-core pod's, so it can be fitted to it.",
    )
    cpu_utilization: float = Field(1.0, ge=0)


class FitResult(BaseModel):
    """The fitted values, their config, and how the solver got there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: tuple[str, ...]
    values: dict[str, float]
    start_values: dict[str, float]
    cost: float = Field(description="Sum of squared weighted log-ratio residuals on the training points.")
    iterations: int
    evaluations: int


_FLOOR = 1e-3  # metrics are compared as log ratios; nothing below this is told apart


def _log_ratio(pred: float, meas: float) -> float:
    return math.log(max(pred, _FLOOR) / max(meas, _FLOOR))


def residuals(
    config: SimConfig, data: Sequence[Measurement], *, warmup_s: float, measure_s: float, weights: FitWeights
) -> FloatArray:
    """Weighted log(predicted / measured) of throughput, p99 and CPU utilisation (and p50 if weighted), by point."""
    out: list[float] = []
    for m in data:
        p = predict(config, m.point, warmup_s=warmup_s, measure_s=measure_s)
        out += [
            weights.throughput * _log_ratio(p.throughput_rps, m.throughput_rps),
            weights.latency_p99 * _log_ratio(p.latency_p99_ms, m.latency_p99_ms),
            weights.cpu_utilization * _log_ratio(p.cpu_utilization, m.cpu_utilization),
        ]
        if weights.latency_p50 > 0:  # only then: a zero weight leaves the residual vector as it was
            out.append(weights.latency_p50 * _log_ratio(p.latency_p50_ms, m.latency_p50_ms))
    return np.asarray(out, dtype=np.float64)


def _bounds(params: Sequence[str], data: Sequence[Measurement]) -> list[tuple[float, float]]:
    bounds = []
    smallest_limit = min(m.point.cpu_limit_m for m in data)
    for name in params:
        if name not in FIT_BOUNDS:
            raise ValueError(f"cannot fit {name!r}; fittable: {sorted(FIT_BOUNDS)}")
        lo, hi = FIT_BOUNDS[name]
        if name == "pod_base_cpu_m":
            hi = min(hi, 0.9 * smallest_limit)
        bounds.append((lo, hi))
    return bounds


def regression_start(data: Sequence[Measurement]) -> dict[str, float]:
    """CPU per request and idle CPU from a straight line through per-pod CPU use vs per-pod request rate.

    Used as one of the fit's starting points: the CPU the pods used is the most direct
    reading of both, and starting there keeps the solver away from the default config's
    basin when the default is far off.
    """
    x = np.array([m.throughput_rps / m.point.replicas for m in data])
    y = np.array([m.cpu_utilization * m.point.cpu_limit_m for m in data])  # millicores per pod
    if len(x) < 2 or float(np.ptp(x)) <= 0:
        return {}
    slope, intercept = np.polyfit(x, y, 1)
    return {"cpu_per_request_ms": float(slope), "pod_base_cpu_m": float(max(intercept, 0.0))}


def _lm(
    f: Callable[[FloatArray], FloatArray], z0: FloatArray, *, max_iter: int, step: float = 1e-4
) -> tuple[FloatArray, float, int, int]:
    """Levenberg–Marquardt with a forward-difference Jacobian: (z, cost, iterations, evaluations)."""
    z = z0.astype(np.float64)
    r = f(z)
    cost = float(r @ r)
    evals, lam, iters, gain = 1, 1e-2, 0, 0.0
    while iters < max_iter:
        iters += 1
        jac = np.empty((r.size, z.size))
        for i in range(z.size):
            dz = np.zeros_like(z)
            dz[i] = step
            jac[:, i] = (f(z + dz) - r) / step
        evals += z.size
        a, g = jac.T @ jac, jac.T @ r
        improved = False
        while lam < 1e10:
            delta = np.linalg.solve(a + lam * (np.diag(np.diag(a)) + 1e-9 * np.eye(z.size)), -g)
            r_new = f(z + delta)
            evals += 1
            c_new = float(r_new @ r_new)
            if c_new < cost:
                gain = cost - c_new
                z, r, cost = z + delta, r_new, c_new
                lam = max(lam / 3.0, 1e-7)
                improved = True
                break
            lam *= 4.0
        if not improved or gain <= 1e-9 * max(cost, 1e-12):
            break
    return z, cost, iters, evals


def fit(
    base: SimConfig,
    data: Sequence[Measurement],
    *,
    params: Sequence[str] = DEFAULT_FIT_PARAMS,
    warmup_s: float,
    measure_s: float,
    weights: FitWeights | None = None,
    max_iter: int = 60,
) -> FitResult:
    """Fit ``params`` of ``base`` to ``data`` (the training points only) by bounded least squares.

    Each parameter lives in its bounds through a logistic map (the solver works on an
    unbounded variable). Two starts — ``base``'s values and :func:`regression_start`'s —
    and the better fit wins.
    """
    if not data:
        raise ValueError("fit: no training points")
    params = tuple(params)
    inert = sorted(CFS_PARAMS.intersection(params)) if base.cpu_limit_model != "cfs_quota" else []
    if inert:
        # The solver would leave them at their start and report them as fitted.
        raise ValueError(
            f"cannot fit {inert}: they act only with cpu_limit_model 'cfs_quota' (the base config's is "
            f"{base.cpu_limit_model!r})"
        )
    w = weights or FitWeights()
    bounds = _bounds(params, data)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])

    def values_of(z: FloatArray) -> dict[str, float]:
        x = lo + (hi - lo) / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
        return {name: float(v) for name, v in zip(params, x, strict=True)}

    def z_of(values: dict[str, float]) -> FloatArray:
        x = np.array([values[n] for n in params])
        u = np.clip((x - lo) / (hi - lo), 1e-4, 1 - 1e-4)
        return np.asarray(np.log(u / (1.0 - u)), dtype=np.float64)

    def f(z: FloatArray) -> FloatArray:
        return residuals(with_values(base, values_of(z)), data, warmup_s=warmup_s, measure_s=measure_s, weights=w)

    start_base = {n: float(getattr(base, n)) for n in params}
    starts = [start_base]
    regression = regression_start(data)
    if any(n in regression for n in params):
        starts.append({**start_base, **{n: v for n, v in regression.items() if n in params}})
    best: FitResult | None = None
    total_evals = 0
    for start in starts:
        z, cost, iters, evals = _lm(f, z_of(start), max_iter=max_iter)
        total_evals += evals
        if best is None or cost < best.cost:
            best = FitResult(
                params=params, values=values_of(z), start_values=start, cost=cost, iterations=iters, evaluations=0
            )
    assert best is not None
    return best.model_copy(update={"evaluations": total_evals})


# ---------------------------------------------------------------------------- the report


class PointReport(BaseModel):
    """One grid point: measured, predicted by the default and the fitted config, relative errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    held_back: bool
    measured: Measurement
    default: Prediction
    fitted: Prediction
    rel_error_default: dict[str, float] = Field(description="(predicted − measured) / measured, by metric.")
    rel_error_fitted: dict[str, float]


class ErrorSummary(BaseModel):
    """Mean absolute relative error of one config on one set of points, by metric."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    points: int
    mean_abs_rel_error: dict[str, float]
    max_abs_rel_error: dict[str, float]


class CalibrationReport(BaseModel):
    """The calibration: the split, the fit, every point, and the error summaries before and after."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    measurements_created: str
    warmup_s: float
    measure_s: float
    params: tuple[str, ...]
    default_values: dict[str, float]
    fitted_values: dict[str, float]
    fit: FitResult
    weights: FitWeights
    train_ids: list[str]
    held_back_ids: list[str]
    points: list[PointReport]
    #: summary[config][split] with config "default"/"fitted" and split "train"/"held_back".
    summary: dict[str, dict[str, ErrorSummary]]
    target_rel_error: float = TARGET_REL_ERROR
    held_back_within_target: dict[str, bool] = Field(
        description="Per metric: the fitted config's mean held-back error is within the target."
    )
    measured_startup_s: float | None = Field(
        None,
        description="Median seconds from a scale-up to all new pods Ready (measured, not fitted; "
        "written into the fitted config's startup_delay_s).",
    )


def rel_errors(pred: Prediction, meas: Measurement) -> dict[str, float]:
    """(predicted − measured) / measured for each reported metric."""
    return {k: (getattr(pred, k) - getattr(meas, k)) / max(getattr(meas, k), _FLOOR) for k in REPORTED}


def _summarise(rows: Sequence[PointReport], which: str) -> ErrorSummary:
    errs = [getattr(r, f"rel_error_{which}") for r in rows]
    return ErrorSummary(
        points=len(rows),
        mean_abs_rel_error={k: float(np.mean([abs(e[k]) for e in errs])) if errs else math.nan for k in REPORTED},
        max_abs_rel_error={k: float(np.max([abs(e[k]) for e in errs])) if errs else math.nan for k in REPORTED},
    )


def calibrate(
    data: MeasurementSet,
    base: SimConfig | None = None,
    *,
    params: Sequence[str] = DEFAULT_FIT_PARAMS,
    holdout: Sequence[str] | None = None,
    weights: FitWeights | None = None,
    max_iter: int = 60,
    use_measured_startup: bool = True,
) -> tuple[CalibrationReport, SimConfig]:
    """Split, fit on the training points, predict every point with both configs: (report, fitted config)."""
    base = base or SimConfig()
    points = [m.point for m in data.points]
    train_ids, held_ids = holdout_split(points, holdout)
    train = [m for m in data.points if m.point.id in set(train_ids)]
    result = fit(
        base, train, params=params, warmup_s=data.warmup_s, measure_s=data.measure_s, weights=weights, max_iter=max_iter
    )
    starts = sorted(t.seconds_to_ready for t in data.transitions if t.is_scale_up)
    startup = float(np.median(starts)) if starts else None
    # The start-up delay is measured, not fitted (the grid is steady state); it goes into the
    # fitted config when the run measured one.
    extra = {"startup_delay_s": round(startup, 1)} if startup is not None and use_measured_startup else {}
    fitted = with_values(base, {**result.values, **extra})
    rows = []
    for m in data.points:
        d = predict(base, m.point, warmup_s=data.warmup_s, measure_s=data.measure_s)
        f = predict(fitted, m.point, warmup_s=data.warmup_s, measure_s=data.measure_s)
        rows.append(
            PointReport(
                id=m.point.id,
                held_back=m.point.id in set(held_ids),
                measured=m,
                default=d,
                fitted=f,
                rel_error_default=rel_errors(d, m),
                rel_error_fitted=rel_errors(f, m),
            )
        )
    summary = {
        which: {
            "train": _summarise([r for r in rows if not r.held_back], which),
            "held_back": _summarise([r for r in rows if r.held_back], which),
        }
        for which in ("default", "fitted")
    }
    held = summary["fitted"]["held_back"]
    report = CalibrationReport(
        measurements_created=data.created,
        warmup_s=data.warmup_s,
        measure_s=data.measure_s,
        params=result.params,
        default_values={n: float(getattr(base, n)) for n in result.params},
        fitted_values=result.values,
        fit=result,
        weights=weights or FitWeights(),
        train_ids=train_ids,
        held_back_ids=held_ids,
        points=rows,
        summary=summary,
        held_back_within_target={
            k: bool(held.points and held.mean_abs_rel_error[k] <= TARGET_REL_ERROR) for k in REPORTED
        },
        measured_startup_s=startup,
    )
    return report, fitted


def format_table(report: CalibrationReport) -> str:
    """The calibration table as Markdown: throughput and p99 per point, measured vs default vs fitted."""
    head = (
        "| point | held back | offered req/s | throughput meas / default / fitted | p99 ms meas / default / fitted "
        "| p99 error default → fitted | CPU util meas / fitted | throttled | errors |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in report.points:
        m, d, f = r.measured, r.default, r.fitted
        thr = "" if m.throttled_fraction is None else f"{m.throttled_fraction:.0%}"
        lines.append(
            f"| {r.id} | {'yes' if r.held_back else ''} | {m.point.offered_rps:.1f} | "
            f"{m.throughput_rps:.1f} / {d.throughput_rps:.1f} / {f.throughput_rps:.1f} | "
            f"{m.latency_p99_ms:.0f} / {d.latency_p99_ms:.0f} / {f.latency_p99_ms:.0f} | "
            f"{r.rel_error_default['latency_p99_ms']:+.0%} → {r.rel_error_fitted['latency_p99_ms']:+.0%} | "
            f"{m.cpu_utilization:.2f} / {f.cpu_utilization:.2f} | {thr} | {m.error_rate:.1%} |"
        )
    return head + "\n".join(lines) + "\n"


def format_summary(report: CalibrationReport) -> str:
    """Mean |relative error| by config and split, the fitted values, and whether the target is met."""
    out = ["| config | points | throughput | p99 | p50 | CPU utilisation |", "|---|---|---|---|---|---|"]
    for which in ("default", "fitted"):
        for split in ("train", "held_back"):
            s = report.summary[which][split]
            e = s.mean_abs_rel_error
            out.append(
                f"| {which}, {split.replace('_', '-')} | {s.points} | {e['throughput_rps']:.1%} | "
                f"{e['latency_p99_ms']:.1%} | {e['latency_p50_ms']:.1%} | {e['cpu_utilization']:.1%} |"
            )
    out.append("")
    for n in report.params:
        out.append(f"{n}: {report.default_values[n]:g} → {report.fitted_values[n]:.4g}")
    ok = report.held_back_within_target
    out.append(
        f"held-back target ({report.target_rel_error:.0%}): "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in ok.items())
    )
    if report.measured_startup_s is not None:
        out.append(f"measured pod start-up (median, not fitted): {report.measured_startup_s:.1f} s")
    return "\n".join(out) + "\n"


__all__ = [
    "CFS_PARAMS",
    "DEFAULT_FIT_PARAMS",
    "FIT_BOUNDS",
    "TARGET_REL_ERROR",
    "CalibrationReport",
    "FitResult",
    "FitWeights",
    "GridPoint",
    "Measurement",
    "MeasurementSet",
    "Prediction",
    "Transition",
    "calibrate",
    "fit",
    "format_summary",
    "format_table",
    "holdout_split",
    "point_config",
    "predict",
    "regression_start",
    "residuals",
    "with_values",
]
