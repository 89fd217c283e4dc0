"""The demo load generator: replays a load pattern against an HTTP URL, time-compressed and bounded.

A pattern is a step function of request rate over time, in the format of the public
traces the project trains on (``t_seconds,value`` CSV, one row per step, each row
holding the value for ``[t, t + step)``). By default the generator replays its own
pattern — a day with a night trough, a business-hours plateau, a flash crowd and
multiplicative noise, seeded so runs repeat — so the demo needs no data files. A user's
trace works the same way; its values are in the source's own units (requests per
minute, CPU %), so ``--peak-rps`` maps its busiest step onto a request rate (or
``--scale`` multiplies every value).

``--speedup`` compresses time: at 96, one pattern day plays in 15 minutes. Arrivals are
a Poisson process at the current rate (open loop: a slow service does not slow the
offered load, as with real users). The gap to the next arrival is redrawn at every
step boundary, which is exact for a step function because exponential gaps are
memoryless. A run always ends: at the end of the pattern (unless ``--loop``), after
``--duration``, or after ``--max-requests`` requests, whichever comes first; at most
``--max-in-flight`` requests are outstanding, and arrivals beyond that are counted as
dropped rather than queued without bound.

It prints a progress line every ``--report-every`` seconds and a JSON summary at the
end; with ``--metrics-port`` it also serves its own Prometheus metrics (target rate,
outcomes, latency), so a dashboard can overlay offered load and the autoscaler's
response.

Run: ``python -m rlscale.devstack.loadgen --url http://demo:8080/ --speedup 96``.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import itertools
import json
import logging
import math
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import aiohttp
import click
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "GeneratedPattern",
    "LoadConfig",
    "LoadGenerator",
    "LoadPlan",
    "LoadSummary",
    "Pattern",
    "TraceError",
    "read_trace",
]

log = logging.getLogger(__name__)

TRACE_HEADER = ("t_seconds", "value")
#: Latency buckets of the generator's own histogram (client-side, network included).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("ok", "http_error", "timeout", "connection_error", "dropped")


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the file, line and field."""


class Pattern(BaseModel):
    """A step function: ``values[i]`` holds from ``t_seconds[i]`` until the next step."""

    model_config = ConfigDict(frozen=True)

    t_seconds: tuple[float, ...] = Field(min_length=1)
    values: tuple[float, ...] = Field(min_length=1)
    step_s: float = Field(gt=0)
    source: str

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(self.t_seconds) != len(self.values):
            raise ValueError(f"t_seconds has {len(self.t_seconds)} entries but values has {len(self.values)}")
        if any(b <= a for a, b in itertools.pairwise(self.t_seconds)):
            raise ValueError("t_seconds must increase strictly")
        if any(not math.isfinite(v) or v < 0 for v in self.values):
            raise ValueError("values must be finite and >= 0")
        return self

    @property
    def start_s(self) -> float:
        return self.t_seconds[0]

    @property
    def end_s(self) -> float:
        """Where the last step ends."""
        return self.t_seconds[-1] + self.step_s

    def index_at(self, t: float) -> int:
        """Index of the step holding pattern time ``t`` (clamped to the first and last step)."""
        return max(0, bisect.bisect_right(self.t_seconds, t) - 1)

    def value_at(self, t: float) -> float:
        return self.values[self.index_at(t)]

    def next_boundary(self, t: float) -> float:
        """Pattern time of the next step boundary after ``t`` (``inf`` past the last one)."""
        i = bisect.bisect_right(self.t_seconds, t)
        if i < len(self.t_seconds):
            return self.t_seconds[i]
        return self.end_s if t < self.end_s else math.inf

    def max_between(self, t0: float, t1: float) -> float:
        """Largest value of the steps overlapping ``[t0, t1)``."""
        lo, hi = self.index_at(t0), self.index_at(max(t0, t1 - 1e-9))
        return max(self.values[lo : hi + 1])


def read_trace(path: Path) -> Pattern:
    """Read a ``t_seconds,value`` CSV trace; every problem is a :class:`TraceError` naming line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read trace: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(c.strip() for c in rows[0]) != TRACE_HEADER:
        found = ",".join(rows[0]) if rows else "<empty file>"
        raise TraceError(f"{path}:1: header must be {','.join(TRACE_HEADER)!r}, found {found!r}")
    ts: list[float] = []
    vs: list[float] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise TraceError(f"{path}:{lineno}: expected 2 columns (t_seconds,value), found {len(row)}")
        for name, cell in zip(TRACE_HEADER, row, strict=True):
            try:
                number = float(cell)
            except ValueError:
                raise TraceError(f"{path}:{lineno}: {name}: not a number: {cell.strip()!r}") from None
            if not math.isfinite(number):
                raise TraceError(f"{path}:{lineno}: {name}: must be finite, found {cell.strip()!r}")
            if name == "value" and number < 0:
                raise TraceError(f"{path}:{lineno}: value: must be >= 0, found {number:g}")
            if name == "t_seconds" and ts and number <= ts[-1]:
                raise TraceError(f"{path}:{lineno}: t_seconds: must increase, {number:g} follows {ts[-1]:g}")
        ts.append(float(row[0]))
        vs.append(float(row[1]))
    if not ts:
        raise TraceError(f"{path}: no data rows after the header")
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ts)}
    if len(steps) > 1:
        raise TraceError(f"{path}: t_seconds must advance in one fixed step, found steps {sorted(steps)[:5]}")
    step = steps.pop() if steps else 60.0
    return Pattern(t_seconds=tuple(ts), values=tuple(vs), step_s=step, source=str(path))


class GeneratedPattern(BaseModel):
    """The project's own demo pattern, in requests per second, one value per ``step_s``.

    A cycle of ``period_s`` starts at midnight: a night trough at ``base_rps``, a
    morning ramp to a business-hours plateau near ``peak_rps``, an evening decline, and
    a flash crowd of ``flash_factor`` × the current rate for ``flash_duration_s``
    starting at ``flash_at`` (a fraction of the cycle), with lognormal noise of
    relative size ``noise``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_rps: float = Field(4.0, ge=0, description="Rate at the night trough.")
    peak_rps: float = Field(40.0, gt=0, description="Rate on the business-hours plateau.")
    period_s: float = Field(86_400.0, gt=0, description="Length of one cycle (pattern seconds).")
    cycles: int = Field(1, ge=1, le=366, description="Cycles in the pattern.")
    step_s: float = Field(60.0, gt=0, description="Step of the pattern (pattern seconds).")
    flash_at: float = Field(0.6, ge=0, lt=1, description="Start of the flash crowd, as a fraction of the cycle.")
    flash_duration_s: float = Field(1_800.0, ge=0, description="Length of the flash crowd (pattern seconds).")
    flash_factor: float = Field(2.0, ge=1, le=100, description="Rate multiplier during the flash crowd.")
    noise: float = Field(0.1, ge=0, le=1, description="Relative size of the lognormal noise per step.")
    seed: int = Field(0, description="Seed of the noise.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.base_rps > self.peak_rps:
            raise ValueError(f"base_rps ({self.base_rps}) must not exceed peak_rps ({self.peak_rps})")
        if self.step_s > self.period_s:
            raise ValueError(f"step_s ({self.step_s}) must not exceed period_s ({self.period_s})")
        return self

    def shape(self, phase: float) -> float:
        """Daily shape in [0, 1] at ``phase`` (fraction of the cycle): a smooth business-hours hump."""
        # Two logistic edges: up around 07:30, down around 19:30, plus a small lunchtime dip.
        up = 1.0 / (1.0 + math.exp(-(phase - 0.3125) * 40.0))
        down = 1.0 / (1.0 + math.exp((phase - 0.8125) * 30.0))
        dip = 0.1 * math.exp(-(((phase - 0.53) / 0.02) ** 2))
        return max(0.0, up * down - dip)

    def build(self) -> Pattern:
        rng = random.Random(self.seed)
        n = round(self.period_s * self.cycles / self.step_s)
        ts, vs = [], []
        sigma = math.log1p(self.noise)
        for i in range(n):
            t = i * self.step_s
            phase = (t % self.period_s) / self.period_s
            rate = self.base_rps + (self.peak_rps - self.base_rps) * self.shape(phase)
            flash_start = self.flash_at * self.period_s
            if flash_start <= t % self.period_s < flash_start + self.flash_duration_s:
                rate *= self.flash_factor
            if sigma > 0:
                rate *= math.exp(rng.gauss(-sigma * sigma / 2, sigma))
            ts.append(t)
            vs.append(round(rate, 4))
        return Pattern(t_seconds=tuple(ts), values=tuple(vs), step_s=self.step_s, source="generated")


class LoadPlan(BaseModel):
    """Maps wall-clock seconds since the start of a run onto a target request rate."""

    model_config = ConfigDict(frozen=True)

    pattern: Pattern
    speedup: float = Field(gt=0)
    scale: float = Field(gt=0, description="Requests per second per unit of pattern value.")
    offset_s: float = Field(ge=0, description="Pattern time at which the run starts, relative to its start.")
    loop: bool = False

    def pattern_time(self, elapsed_s: float) -> float:
        t = self.offset_s + elapsed_s * self.speedup
        if self.loop:
            t %= self.pattern.end_s - self.pattern.start_s
        return self.pattern.start_s + t

    def rate_at(self, elapsed_s: float) -> float:
        """Target requests per second at ``elapsed_s`` wall seconds into the run."""
        return self.pattern.value_at(self.pattern_time(elapsed_s)) * self.scale

    def pattern_duration_s(self) -> float:
        """Wall seconds until the pattern ends (``inf`` when looping)."""
        if self.loop:
            return math.inf
        return (self.pattern.end_s - self.pattern.start_s - self.offset_s) / self.speedup

    def next_change_s(self, elapsed_s: float) -> float:
        """Wall seconds (since the start) of the next step boundary after ``elapsed_s``."""
        t = self.pattern_time(elapsed_s)
        boundary = self.pattern.next_boundary(t)
        if math.isinf(boundary):
            return math.inf
        # A tiny nudge past the boundary so the next lookup lands in the new step.
        return elapsed_s + (boundary - t) / self.speedup + 1e-6


PositiveFloat = Annotated[float, Field(gt=0)]


class LoadConfig(BaseModel):
    """Settings of one run (flags of ``python -m rlscale.devstack.loadgen``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl = Field(description="URL every request GETs.")
    trace: Path | None = Field(None, description="A t_seconds,value CSV trace; default: the generated pattern.")
    speedup: float = Field(1.0, gt=0, le=1_000_000, description="Pattern seconds per wall-clock second.")
    peak_rps: PositiveFloat | None = Field(None, le=100_000, description="Map the busiest replayed step to this rate.")
    scale: PositiveFloat | None = Field(None, description="Requests per second per unit of trace value.")
    offset_s: float = Field(0.0, ge=0, description="Start this many pattern seconds into the pattern.")
    loop: bool = Field(False, description="Repeat the pattern until --duration or --max-requests ends the run.")
    duration_s: float = Field(3_600.0, gt=0, le=7 * 86_400, description="Longest run, wall-clock seconds.")
    max_requests: int = Field(1_000_000, ge=1, le=100_000_000, description="Most requests sent in one run.")
    max_in_flight: int = Field(256, ge=1, le=100_000, description="Most outstanding requests; more are dropped.")
    timeout_s: float = Field(10.0, gt=0, le=600, description="Per-request timeout.")
    seed: int = Field(0, description="Seed of the arrival process (and of the generated pattern).")
    report_every_s: float = Field(10.0, gt=0, description="Seconds between progress lines.")

    @model_validator(mode="after")
    def _scaling(self) -> Self:
        if self.peak_rps is not None and self.scale is not None:
            raise ValueError("peak_rps: give at most one of peak_rps and scale")
        if self.trace is not None and self.peak_rps is None and self.scale is None:
            raise ValueError(
                "trace: a trace's values are in its source's own units; give peak_rps (map its busiest step "
                "onto a request rate) or scale (requests per second per unit of value)"
            )
        return self

    def plan(self, generated: GeneratedPattern | None = None) -> LoadPlan:
        """Load the pattern and work out the value → rate scale for the window this run replays."""
        if self.trace is not None:
            pattern = read_trace(self.trace)
        else:
            pattern = (generated or GeneratedPattern(seed=self.seed)).build()
        length = pattern.end_s - pattern.start_s
        if self.offset_s >= length:
            raise ValueError(f"offset_s: {self.offset_s:g} is past the end of the pattern ({length:g} s long)")
        scale = self.scale if self.scale is not None else 1.0
        if self.peak_rps is not None:
            window_end = pattern.start_s + self.offset_s + self.duration_s * self.speedup
            if self.loop or window_end >= pattern.end_s:
                busiest = max(pattern.values)
            else:
                busiest = pattern.max_between(pattern.start_s + self.offset_s, window_end)
            if busiest <= 0:
                raise ValueError("peak_rps: the replayed part of the pattern is all zeros, nothing to scale")
            scale = self.peak_rps / busiest
        return LoadPlan(pattern=pattern, speedup=self.speedup, scale=scale, offset_s=self.offset_s, loop=self.loop)


class LoadSummary(BaseModel):
    """What one run did. ``sent`` counts requests started; each ends in exactly one other outcome."""

    sent: int = 0
    ok: int = 0
    http_error: int = 0
    timeout: int = 0
    connection_error: int = 0
    dropped: int = 0
    elapsed_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    ended_by: str = ""

    @property
    def arrivals(self) -> int:
        return self.sent + self.dropped


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.target = Gauge("loadgen_target_requests_per_second", "Offered load right now.", registry=registry)
        self.requests = Counter("loadgen_requests_total", "Requests by outcome.", ["outcome"], registry=registry)
        self.latency = Histogram(
            "loadgen_request_duration_seconds",
            "Client-side latency of answered requests.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)


class LoadGenerator:
    """Runs one bounded replay of a :class:`LoadPlan` against ``config.url``.

    ``targets``, if given, replaces ``config.url``: each request goes to the next of the
    URLs it returns at that moment (round robin), as a Service spreads over its Ready
    endpoints — for pods the host reaches directly, with no kube-proxy in between. With
    no URL to send to, the request counts as a connection error.
    """

    def __init__(
        self,
        config: LoadConfig,
        plan: LoadPlan,
        registry: CollectorRegistry | None = None,
        targets: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.config = config
        self._targets = targets
        self._next = 0
        self.plan = plan
        self.summary = LoadSummary()
        self.metrics = _Metrics(registry or CollectorRegistry())
        self._latencies = array("d")
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(config.seed)

    def duration_s(self) -> float:
        return min(self.config.duration_s, self.plan.pattern_duration_s())

    async def run(self) -> LoadSummary:
        cfg = self.config
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        connector = aiohttp.TCPConnector(limit=cfg.max_in_flight)
        loop = asyncio.get_running_loop()
        duration = self.duration_s()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            start = loop.time()
            next_report = cfg.report_every_s
            last = self.summary.model_copy()
            at = 0.0  # wall seconds since start of the next arrival (being drawn)
            while True:
                if self.summary.arrivals >= cfg.max_requests:
                    self.summary.ended_by = "max_requests"
                    break
                rate = self.plan.rate_at(at)
                boundary = self.plan.next_change_s(at)
                gap = self._rng.expovariate(rate) if rate > 0 else math.inf
                if at + gap >= boundary:
                    at = boundary  # no arrival in this step: redraw from the boundary (memoryless)
                else:
                    at += gap
                if at >= duration:
                    self.summary.ended_by = "duration" if duration < self.plan.pattern_duration_s() else "pattern_end"
                    break
                now = loop.time() - start
                while now >= next_report:
                    self._report(next_report, last)
                    last = self.summary.model_copy()
                    next_report += cfg.report_every_s
                if at - now > 0:
                    await asyncio.sleep(at - now)
                self.metrics.target.set(rate)
                if at < boundary:
                    self._fire(session)
            # Give requests in flight their timeout to finish, then count what is left.
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=cfg.timeout_s + 1.0)
            leftovers = list(self._tasks)
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            self.summary.elapsed_s = loop.time() - start
        self.metrics.target.set(0)
        latencies = sorted(self._latencies)
        self.summary.latency_p50_s = _quantile(latencies, 0.50)
        self.summary.latency_p99_s = _quantile(latencies, 0.99)
        return self.summary

    def _fire(self, session: aiohttp.ClientSession) -> None:
        if len(self._tasks) >= self.config.max_in_flight:
            self._count("dropped")
            return
        self.summary.sent += 1
        task = asyncio.create_task(self._one(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _url(self) -> str | None:
        if self._targets is None:
            return str(self.config.url)
        urls = self._targets()
        if not urls:
            return None
        self._next += 1
        return urls[self._next % len(urls)]

    async def _one(self, session: aiohttp.ClientSession) -> None:
        url = self._url()
        if url is None:
            self._count("connection_error")
            return
        t0 = time.perf_counter()
        try:
            async with session.get(url) as resp:
                await resp.read()
                outcome = "ok" if resp.status < 400 else "http_error"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError:
            outcome = "connection_error"
        except asyncio.CancelledError:
            self._count("timeout")
            raise
        if outcome in ("ok", "http_error"):
            latency = time.perf_counter() - t0
            self._latencies.append(latency)
            self.metrics.latency.observe(latency)
        self._count(outcome)

    def _count(self, outcome: str) -> None:
        setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
        self.metrics.requests.labels(outcome).inc()

    def _report(self, at: float, last: LoadSummary) -> None:
        window = self.config.report_every_s
        done = self.summary.ok + self.summary.http_error
        log.info(
            "t=%5.0fs pattern_t=%7.0fs target=%6.1f/s sent=%6.1f/s ok=%d errors=%d timeouts=%d dropped=%d in_flight=%d",
            at,
            self.plan.pattern_time(at),
            self.plan.rate_at(at),
            (self.summary.sent - last.sent) / window,
            self.summary.ok,
            done - self.summary.ok + self.summary.connection_error,
            self.summary.timeout,
            self.summary.dropped,
            len(self._tasks),
        )


_FLAGS = {"duration_s": "duration", "offset_s": "offset", "timeout_s": "timeout", "report_every_s": "report-every"}


def _flag(field: str) -> str:
    return "--" + _FLAGS.get(field, field).replace("_", "-")


def _describe(exc: ValidationError) -> str:
    """One line per invalid field, named as its command-line flag.

    Cross-field rules raise messages that start with the field they are about
    (``"trace: ..."``); that name becomes the flag too.
    """
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["loc"]:
            parts.append(f"{_flag(str(err['loc'][0]))}: {msg}")
            continue
        field, sep, rest = msg.partition(": ")
        parts.append(f"{_flag(field)}: {rest}" if sep and field in LoadConfig.model_fields else msg)
    return "; ".join(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--url", required=True, help="URL to GET, e.g. http://demo.rlscale-demo:8080/.")
@click.option("--trace", type=click.Path(path_type=Path), help="t_seconds,value CSV; default: the generated pattern.")
@click.option("--speedup", type=float, default=1.0, help="Pattern seconds per wall-clock second.")
@click.option("--peak-rps", type=float, help="Map the busiest replayed step onto this many requests per second.")
@click.option("--scale", type=float, help="Requests per second per unit of pattern value (instead of --peak-rps).")
@click.option("--offset", "offset_s", type=float, default=0.0, help="Start this many pattern seconds in.")
@click.option("--loop/--no-loop", default=False, help="Repeat the pattern until --duration/--max-requests.")
@click.option("--duration", "duration_s", type=float, default=3600.0, help="Longest run, wall-clock seconds.")
@click.option("--max-requests", type=int, default=1_000_000, help="Most requests in one run.")
@click.option("--max-in-flight", type=int, default=256, help="Most outstanding requests; more are dropped.")
@click.option("--timeout", "timeout_s", type=float, default=10.0, help="Per-request timeout, seconds.")
@click.option("--seed", type=int, default=0, help="Seed of the arrivals and of the generated pattern.")
@click.option("--report-every", "report_every_s", type=float, default=10.0, help="Seconds between progress lines.")
@click.option("--metrics-port", type=int, default=None, help="Serve the generator's own metrics on this port.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(metrics_port: int | None, log_level: str, **options: Any) -> None:
    """Replay a load pattern against a URL and print a JSON summary."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = LoadConfig(**options)
        plan = config.plan()
    except ValidationError as exc:
        raise click.UsageError(_describe(exc)) from exc
    except (TraceError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    generator = LoadGenerator(config, plan, registry)
    log.info(
        "replaying %s (%d steps of %gs) at speedup %g, %.4g req/s per unit, for up to %.0fs / %d requests -> %s",
        plan.pattern.source, len(plan.pattern.values), plan.pattern.step_s, plan.speedup, plan.scale,
        generator.duration_s(), config.max_requests, config.url,
    )  # fmt: skip
    summary = asyncio.run(generator.run())
    json.dump(summary.model_dump(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
