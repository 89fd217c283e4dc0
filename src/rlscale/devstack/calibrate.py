"""``rlscale calibrate``: measure the real demo service over a grid, then fit the simulator to it.

The simulator is only as good as its service model, and until now nothing compared it with
a real service. This command brings up the local cluster with a real node (what
``rlscale demo --node-kind real`` starts, minus the operator), deploys the demo app, and
walks a small grid of (replicas, CPU limit, offered load): for each point it sets the
Deployment, waits until exactly that many pods on that limit are Ready, sends a constant
Poisson load from the host (:mod:`.loadgen`, round robin over the Ready pods as in
:mod:`.realload`) for a warm-up and a measurement window, and reads from Prometheus what
the window saw — throughput served, p50/p99 from the app's histogram, CPU utilisation
(cAdvisor usage / limit), CFS throttling, memory and the 5xx rate. The measurements go to
``measurements.json`` after every point, so an interrupted run keeps what it measured.

Then the cluster is torn down and :func:`rlscale.training.calibration.calibrate` fits
``SimConfig``'s service parameters on the training points and reports the prediction error
before and after on the held-back ones (``report.json``, ``fitted-sim-config.json``,
``table.md``). ``--from-measurements`` re-fits a saved file without a node.

Load levels are fractions of a nominal capacity, ``replicas × limit / --request-cpu-ms``;
the nominal cost only places the grid (docs/simulator.md's first hand measurement, 5.7 ms
at 5 ms of hashing), the fit measures the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from kubernetes import client
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlscale.training.calibration import (
    DEFAULT_FIT_PARAMS,
    FIT_BOUNDS,
    FitWeights,
    GridPoint,
    Measurement,
    MeasurementSet,
    Transition,
    calibrate,
    format_summary,
    format_table,
)
from rlscale.training.sim_config import SimConfig

from .cli import make_cluster, resolve_node_kind, start_cluster, step_timer
from .images import DEMO_IMAGE_REPO, ImageBuildError
from .loadgen import LoadConfig, LoadGenerator, LoadPlan, LoadSummary, Pattern
from .manifests import real_deployment
from .procs import ComponentError, Interrupted, sigterm_raises
from .prometheus import LocalPrometheus, PrometheusNotFoundError
from .realcluster import RealNodeCluster
from .realload import PodEndpoints, wait_ready_pods
from .tools import DEFAULT_COMPONENTS, ToolsNotFoundError, locate_tools_bin

NAMESPACE = "rlscale-calibrate"
NAME = "demo"
CONTAINER = "demo"
PORT = 8080
MEMORY = "128Mi"
SELECTOR = f"app.kubernetes.io/name={NAME}"


class CalibrationGrid(BaseModel):
    """The grid: every (replicas, CPU limit) cell at each load fraction of its nominal capacity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: tuple[int, ...] = Field((1, 2, 3), min_length=1)
    cpu_limits_m: tuple[int, ...] = Field((150, 300), min_length=1)
    load_fractions: tuple[float, ...] = Field((0.3, 0.6, 0.9), min_length=1)
    request_cpu_ms: float = Field(
        5.7, gt=0, description="Nominal CPU per request, ms: places the load levels (the fit measures the real one)."
    )

    def nominal_capacity_rps(self, replicas: int, cpu_limit_m: int) -> float:
        """Requests/s the cell could serve if each request cost exactly ``request_cpu_ms`` of its pods' CPU."""
        return replicas * cpu_limit_m / self.request_cpu_ms

    def points(self) -> list[GridPoint]:
        """Every point, in the order that changes the Deployment least.

        Limits outermost (a limit change rolls every pod), replicas up then down then up
        (serpentine: one pod more or less between cells), loads rising within a cell.
        """
        out: list[GridPoint] = []
        for i, limit in enumerate(self.cpu_limits_m):
            reps = self.replicas if i % 2 == 0 else tuple(reversed(self.replicas))
            for r in reps:
                cap = self.nominal_capacity_rps(r, limit)
                out.extend(
                    GridPoint(replicas=r, cpu_limit_m=limit, offered_rps=round(f * cap, 1))
                    for f in sorted(self.load_fractions)
                )
        return out


def deployment(image: str, point: GridPoint, work_ms: float) -> dict[str, Any]:
    """The demo app as Guaranteed pods at the point's replicas and limit."""
    return real_deployment(
        NAME,
        namespace=NAMESPACE,
        replicas=point.replicas,
        cpu=f"{point.cpu_limit_m}m",
        memory=MEMORY,
        container=CONTAINER,
        image=image,
        labels={"app.kubernetes.io/name": NAME},
        args=["python3", "-m", "rlscale.devstack.demo_app", "--port", str(PORT), "--work-ms", f"{work_ms:g}"],
        port=PORT,
    )


def queries(window_s: float) -> dict[str, str]:
    """The PromQL of one measurement window (``[window_s]`` ranges), by measured quantity."""
    w = f"{window_s:g}s"
    sel = f'namespace="{NAMESPACE}", pod=~"{NAME}-.*"'
    ctr = f'{sel}, container="{CONTAINER}"'
    work = f'{sel}, path="/"'
    return {
        "ok_rps": f'sum(rate(http_requests_total{{{work}, code=~"2.."}}[{w}]))',
        "all_rps": f"sum(rate(http_requests_total{{{work}}}[{w}]))",
        "err_rps": f'sum(rate(http_requests_total{{{work}, code=~"5.."}}[{w}])) or vector(0)',
        "p50_s": f"histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket{{{work}}}[{w}])))",
        "p99_s": f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{work}}}[{w}])))",
        "cpu_cores": f"sum(rate(container_cpu_usage_seconds_total{{{ctr}}}[{w}]))",
        "throttled": f"sum(rate(container_cpu_cfs_throttled_periods_total{{{ctr}}}[{w}])) / "
        f"sum(rate(container_cpu_cfs_periods_total{{{ctr}}}[{w}]))",
        "memory_bytes": f"avg(avg_over_time(container_memory_working_set_bytes{{{ctr}}}[{w}]))",
    }


def to_measurement(
    point: GridPoint, values: dict[str, float], load: LoadSummary | None, *, load_average: float | None = None
) -> Measurement:
    """A :class:`Measurement` from the window's query values (NaN: no sample) and the generator's summary."""

    def v(key: str, default: float = 0.0) -> float:
        x = values.get(key, math.nan)
        return default if math.isnan(x) else x

    total = v("all_rps")
    limit_cores = point.replicas * point.cpu_limit_m / 1000.0
    throttled = values.get("throttled", math.nan)
    memory = values.get("memory_bytes", math.nan)
    failed = 0
    if load is not None:
        failed = load.http_error + load.timeout + load.connection_error + load.dropped
    return Measurement(
        point=point,
        throughput_rps=v("ok_rps"),
        latency_p50_ms=v("p50_s") * 1000.0,
        latency_p99_ms=v("p99_s") * 1000.0,
        cpu_utilization=v("cpu_cores") / limit_cores,
        error_rate=min(1.0, v("err_rps") / total) if total > 0 else 0.0,
        throttled_fraction=None if math.isnan(throttled) else min(max(throttled, 0.0), 1.0),
        memory_working_set_mib=None if math.isnan(memory) else memory / 2**20,
        client_sent=load.sent if load else 0,
        client_failed=failed,
        client_p99_ms=load.latency_p99_s * 1000.0 if load and load.latency_p99_s is not None else None,
        load_average=load_average,
    )


def query_at(prometheus_url: str, promql: str, at: float) -> float:
    """One instant query evaluated at unix time ``at``: the first sample's value, NaN when there is none."""
    qs = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{qs}", timeout=10) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise ComponentError("prometheus", f"query {promql!r} failed: {body}")
    result = body["data"]["result"]
    if not result:
        return math.nan
    return float(result[0]["value"][1])


def constant_load(rps: float, seconds: float, seed: int) -> tuple[LoadConfig, LoadPlan]:
    """The load generator's settings for ``rps`` requests/s (Poisson) for ``seconds``."""
    pattern = Pattern(t_seconds=(0.0,), values=(rps,), step_s=seconds + 60.0, source=f"constant {rps:g} req/s")
    cfg = LoadConfig(
        url="http://127.0.0.1/",  # unused: every request goes to a Ready pod's own URL
        speedup=1.0,
        duration_s=seconds,
        max_in_flight=512,
        timeout_s=10.0,
        seed=seed,
        report_every_s=seconds + 60.0,
    )
    return cfg, LoadPlan(pattern=pattern, speedup=1.0, scale=1.0, offset_s=0.0)


def _load_average() -> float | None:
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return None


class CalibrationRun:
    """One measurement of the grid on a real node; :meth:`run` returns the :class:`MeasurementSet`."""

    def __init__(
        self,
        grid: CalibrationGrid,
        out: Path,
        *,
        warmup_s: float,
        measure_s: float,
        work_ms: float,
        echo: Callable[[str], None] = click.echo,
    ) -> None:
        self.grid = grid
        self.out = out
        self.warmup_s = warmup_s
        self.measure_s = measure_s
        self.work_ms = work_ms
        self.echo = echo
        self.measurements: list[Measurement] = []
        self.transitions: list[Transition] = []
        self.created = datetime.now(UTC).isoformat(timespec="seconds")
        self.t0 = time.monotonic()
        self.api: client.ApiClient | None = None
        self.endpoints: PodEndpoints | None = None
        self.prom: LocalPrometheus | None = None

    def data(self) -> MeasurementSet:
        """What was measured so far."""
        load = _load_average()
        return MeasurementSet(
            created=self.created,
            host=f"{platform.node()}, {os.cpu_count()} CPUs"
            + (f", load average {load:.1f} at the end" if load is not None else ""),
            work_ms=self.work_ms,
            warmup_s=self.warmup_s,
            measure_s=self.measure_s,
            wall_s=time.monotonic() - self.t0,
            points=list(self.measurements),
            transitions=list(self.transitions),
        )

    def _save(self) -> None:
        (self.out / "measurements.json").write_text(self.data().model_dump_json(indent=2))

    def run(self) -> MeasurementSet:
        """Start the stack, measure every point, tear everything down (also on Ctrl-C / SIGTERM)."""
        self.out.mkdir(parents=True, exist_ok=True)
        stack_dir = (self.out / "stack").resolve()
        points = self.grid.points()
        per_point = self.warmup_s + self.measure_s
        self.echo(
            f"grid: {len(points)} points ({len(self.grid.replicas)} replica counts × {len(self.grid.cpu_limits_m)} "
            f"CPU limits × {len(self.grid.load_fractions)} loads), {self.warmup_s:g} s warm-up + "
            f"{self.measure_s:g} s measured each: ≥ {len(points) * per_point / 60:.1f} min of load"
        )
        with contextlib.ExitStack() as stack, sigterm_raises():
            try:
                self._start(stack, stack_dir, points[0])
                for i, point in enumerate(points):
                    self._set(point)
                    m = self._measure(point, seed=i)
                    self.measurements.append(m)
                    self._save()
                    self.echo(
                        f"[{i + 1}/{len(points)}] {point.id}: served {m.throughput_rps:.1f} req/s, "
                        f"p50 {m.latency_p50_ms:.0f} ms, p99 {m.latency_p99_ms:.0f} ms, "
                        f"CPU {m.cpu_utilization:.2f} of the limit"
                        + (f" (throttled in {m.throttled_fraction:.0%} of periods)" if m.throttled_fraction else "")
                        + f", errors {m.error_rate:.1%}"
                    )
            except (KeyboardInterrupt, Interrupted):
                self.echo(f"\ninterrupted after {len(self.measurements)} points: tearing down")
            self.echo("==> tearing down (load, Prometheus, control plane and node)")
        self._save()
        return self.data()

    def _step(self, what: str) -> Callable[[], None]:
        return step_timer(self.echo, what)

    def _start(self, stack: contextlib.ExitStack, stack_dir: Path, first: GridPoint) -> None:
        done = self._step("tools (etcd, kube-*, kwok, the kubelet, CNI, pause)")
        bin_dir = locate_tools_bin((*DEFAULT_COMPONENTS, "node"))
        resolve_node_kind("real", bin_dir)  # raises with the reason when the host cannot
        done()
        done = self._step("images: pause and the demo app (a source change rebuilds the demo image)")
        cluster = make_cluster("real", bin_dir, stack_dir / "cluster", nodes=0, timeout=180.0)
        assert isinstance(cluster, RealNodeCluster)
        done()
        done = self._step("control plane and a real node (kubelet + containerd)")
        api = self.api = start_cluster(stack, cluster)
        done()
        done = self._step("the demo Deployment, Prometheus (pods + cAdvisor)")
        image = next(n for n in cluster.image_names if n.startswith(DEMO_IMAGE_REPO + ":"))
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        client.AppsV1Api(api).create_namespaced_deployment(NAMESPACE, deployment(image, first, self.work_ms))  # type: ignore[arg-type]
        sd_file = stack_dir / "pods.sd.json"
        endpoints = self.endpoints = PodEndpoints(api, NAMESPACE, SELECTOR, PORT, sd_file=sd_file)
        endpoints.start()
        stack.callback(endpoints.stop)
        prom = self.prom = LocalPrometheus(stack_dir / "prometheus", scrape_configs=cluster.scrape_configs(sd_file))
        stack.callback(prom.stop)
        prom.start()
        self._current = GridPoint(replicas=first.replicas, cpu_limit_m=first.cpu_limit_m, offered_rps=1.0)
        t = time.monotonic()
        self._wait_settled(first)
        self.transitions.append(
            Transition(
                from_replicas=0,
                to_replicas=first.replicas,
                from_cpu_limit_m=0,
                to_cpu_limit_m=first.cpu_limit_m,
                seconds_to_ready=time.monotonic() - t,
            )
        )
        done()

    def _set(self, point: GridPoint) -> None:
        """Scale and/or re-limit the Deployment to ``point`` and wait until it has settled."""
        cur = self._current
        if (cur.replicas, cur.cpu_limit_m) == (point.replicas, point.cpu_limit_m):
            return
        assert self.api is not None
        res = {"cpu": f"{point.cpu_limit_m}m", "memory": MEMORY}
        patch: dict[str, Any] = {"spec": {"replicas": point.replicas}}
        if point.cpu_limit_m != cur.cpu_limit_m:
            patch["spec"]["template"] = {
                "spec": {"containers": [{"name": CONTAINER, "resources": {"requests": res, "limits": res}}]}
            }
        t = time.monotonic()
        client.AppsV1Api(self.api).patch_namespaced_deployment(NAME, NAMESPACE, patch)
        self._wait_settled(point)
        took = time.monotonic() - t
        self.transitions.append(
            Transition(
                from_replicas=cur.replicas,
                to_replicas=point.replicas,
                from_cpu_limit_m=cur.cpu_limit_m,
                to_cpu_limit_m=point.cpu_limit_m,
                seconds_to_ready=took,
            )
        )
        self.echo(
            f"    Deployment → {point.replicas} × {point.cpu_limit_m}m "
            f"(from {cur.replicas} × {cur.cpu_limit_m}m): settled in {took:.1f}s"
        )

    def _wait_settled(self, point: GridPoint, timeout: float = 180.0) -> None:
        """Until exactly ``point.replicas`` pods exist, all Ready on the point's limit, and Prometheus scrapes them."""
        assert self.api is not None and self.endpoints is not None and self.prom is not None
        core = client.CoreV1Api(self.api)
        want = f"{point.cpu_limit_m}m"
        deadline = time.monotonic() + timeout
        while True:
            pods = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
            good = 0
            for pod in pods:
                spec: Any = pod.spec
                status: Any = pod.status
                limits = (spec.containers[0].resources.limits or {}) if spec and spec.containers else {}
                ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions or []))
                good += bool(ready and _millicores(limits.get("cpu", "")) == point.cpu_limit_m)
            if len(pods) == point.replicas and good == point.replicas:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.0f}s waiting for {point.replicas} Ready pods at {want} "
                    f"({len(pods)} pods, {good} Ready at {want})"
                )
            time.sleep(0.5)
        wait_ready_pods(self.endpoints, point.replicas, 30)
        up = f'count(up{{job="pods", namespace="{NAMESPACE}"}} == 1) >= {point.replicas}'
        self.prom.wait_for_value(up, timeout=30)
        self._current = point

    def _measure(self, point: GridPoint, *, seed: int) -> Measurement:
        """Load the point for warm-up + window; query the window once Prometheus has scraped its end."""
        assert self.endpoints is not None and self.prom is not None
        cfg, plan = constant_load(point.offered_rps, self.warmup_s + self.measure_s, seed)
        generator = LoadGenerator(cfg, plan, targets=self.endpoints.urls)
        start = time.time()
        load = asyncio.run(generator.run())
        window_end = start + self.warmup_s + self.measure_s
        time.sleep(max(0.0, window_end + 3.0 - time.time()))  # a scrape and a cAdvisor housekeeping past the end
        values = {k: query_at(self.prom.url, q, window_end) for k, q in queries(self.measure_s).items()}
        return to_measurement(point, values, load, load_average=_load_average())


def _millicores(quantity: str) -> int | None:
    """A CPU quantity (``150m``, ``0.3``, ``1``) in millicores; None when unparsable."""
    try:
        if quantity.endswith("m"):
            return int(quantity[:-1])
        return round(float(quantity) * 1000)
    except ValueError:
        return None


def _csv(kind: type[int] | type[float]) -> Callable[[click.Context, click.Parameter, str], tuple[Any, ...]]:
    def parse(ctx: click.Context, param: click.Parameter, text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def parse_weights(text: str) -> FitWeights:
    """``--weights throughput=1,latency_p99=1,cpu_utilization=0`` → :class:`FitWeights` (unnamed: 1)."""
    values: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected name=value, got {item!r}", param_hint="--weights")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{name}: not a number: {value!r}", param_hint="--weights") from None
    try:
        return FitWeights.model_validate(values)
    except ValidationError as exc:
        raise click.BadParameter(f"{exc}; names: {', '.join(FitWeights.model_fields)}", param_hint="--weights") from exc


def write_results(
    out: Path, data: MeasurementSet, base: SimConfig, params: tuple[str, ...], holdout: Any, weights: FitWeights
) -> str:
    """Fit and write report.json, fitted-sim-config.json and table.md; return the text to print."""
    report, fitted = calibrate(data, base, params=params, holdout=holdout, weights=weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2))
    (out / "fitted-sim-config.json").write_text(fitted.model_dump_json(indent=2))
    text = format_table(report) + "\n" + format_summary(report)
    (out / "table.md").write_text(text)
    return text


@click.command("calibrate")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/calibrate"), show_default=True
)
@click.option("--replicas", default="1,2,3", show_default=True, callback=_csv(int), help="Replica counts.")
@click.option("--cpu-limits", default="150,300", show_default=True, callback=_csv(int), help="CPU limits, millicores.")
@click.option(
    "--load-fractions",
    default="0.3,0.6,0.9",
    show_default=True,
    callback=_csv(float),
    help="Offered load as fractions of the nominal capacity replicas × limit / --request-cpu-ms.",
)
@click.option("--request-cpu-ms", type=float, default=5.7, show_default=True, help="Nominal CPU per request (grid).")
@click.option("--work-ms", type=float, default=5.0, show_default=True, help="The demo app's hashing per request.")
@click.option("--warmup", "warmup_s", type=click.FloatRange(0, 600), default=10.0, show_default=True)
@click.option("--measure", "measure_s", type=click.FloatRange(5, 600), default=40.0, show_default=True)
@click.option(
    "--fit",
    "fit_params",
    default=",".join(DEFAULT_FIT_PARAMS),
    show_default=True,
    help=f"SimConfig fields to fit, from: {', '.join(sorted(FIT_BOUNDS))}.",
)
@click.option(
    "--weights",
    default="throughput=1,latency_p99=1,cpu_utilization=1",
    show_default=True,
    help="Weight of each metric's log-ratio residual in the fit.",
)
@click.option("--holdout", default=None, help="Held-back point ids (comma-separated); default: one per cell, rotating.")
@click.option(
    "--base-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="SimConfig JSON to start from (default: SimConfig's defaults).",
)
@click.option(
    "--cpu-limit-model",
    type=click.Choice(["fluid", "cfs_quota"]),
    default=None,
    help="Set the base config's cpu_limit_model (default: the base config's, 'fluid'); 'cfs_quota' makes "
    "cfs_dispersion and cfs_period_ms fittable.",
)
@click.option(
    "--from-measurements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Fit a saved measurements.json instead of measuring (no node needed).",
)
def calibrate_cmd(
    out: Path,
    replicas: tuple[int, ...],
    cpu_limits: tuple[int, ...],
    load_fractions: tuple[float, ...],
    request_cpu_ms: float,
    work_ms: float,
    warmup_s: float,
    measure_s: float,
    fit_params: str,
    weights: str,
    holdout: str | None,
    base_config: Path | None,
    cpu_limit_model: str | None,
    from_measurements: Path | None,
) -> None:
    """Measure the real demo service over a grid and fit the simulator's service parameters to it."""
    params = tuple(p.strip() for p in fit_params.split(",") if p.strip())
    unknown = [p for p in params if p not in FIT_BOUNDS]
    if unknown or not params:
        raise click.BadParameter(
            f"cannot fit {unknown or 'nothing'}; fittable: {sorted(FIT_BOUNDS)}", param_hint="--fit"
        )
    try:
        base = SimConfig.model_validate_json(base_config.read_text()) if base_config else SimConfig()
        if cpu_limit_model is not None:
            base = SimConfig.model_validate({**base.model_dump(), "cpu_limit_model": cpu_limit_model})
        grid = CalibrationGrid(
            replicas=replicas, cpu_limits_m=cpu_limits, load_fractions=load_fractions, request_cpu_ms=request_cpu_ms
        )
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    held = tuple(h.strip() for h in holdout.split(",") if h.strip()) if holdout else None
    fit_weights = parse_weights(weights)
    t0 = time.monotonic()
    if from_measurements is not None:
        try:
            data = MeasurementSet.model_validate_json(from_measurements.read_text())
        except ValidationError as exc:
            raise click.UsageError(f"{from_measurements}: {exc}") from exc
    else:
        try:
            data = CalibrationRun(grid, out, warmup_s=warmup_s, measure_s=measure_s, work_ms=work_ms).run()
        except (ComponentError, ToolsNotFoundError, PrometheusNotFoundError, TimeoutError, ImageBuildError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"measured {len(data.points)} points in {data.wall_s:.0f}s: {out / 'measurements.json'}")
    if len(data.points) < 2:
        raise click.ClickException(f"{len(data.points)} points measured: too few to fit")
    click.echo("==> fitting the simulator (training points only) …")
    try:
        text = write_results(out, data, base, params, held, fit_weights)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n" + text)
    click.echo(f"report: {out / 'report.json'}\nfitted config: {out / 'fitted-sim-config.json'}")
    click.echo(f"wall time: {time.monotonic() - t0:.0f}s")


__all__ = [
    "CalibrationGrid",
    "CalibrationRun",
    "calibrate_cmd",
    "constant_load",
    "parse_weights",
    "queries",
    "to_measurement",
]
