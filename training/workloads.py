"""Workload load series: real trace files, seeded generators, and the default training mix.

Every series is a per-minute load level (60 s rows). Values are in the source's own
units — requests per minute, invocations per minute, CPU percent — because the simulator
maps each series onto its service by a scale factor (see
:class:`rlscale.training.sim_config.SimConfig`), never by its absolute level.

Why both kinds: the public traces are few, and their *test* windows are what evaluation
reports on, so training must not see them. The default training data is therefore
generated (diurnal and weekly cycles, flash crowds, ramps, regime shifts, bursts, noise),
optionally plus only the *training* windows of trace files a user names. Whatever is used
is written down in a provenance dict (names, paths, windows, row ranges, sha256) so an
exported model says what it learned from.

The file format is the one of ``/work/shared/traces`` (see docs/simulator.md)::

    t_seconds,value
    0,22
    60,21
    ...

``t_seconds`` starts at 0 and rises by exactly 60; ``value`` is a finite number >= 0.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
WindowName = Literal["train", "validation", "test", "all"]
WINDOW_NAMES: tuple[WindowName, ...] = ("train", "validation", "test", "all")

#: Every series has one row per minute.
TRACE_STEP_S = 60
#: Unix time of Monday 1970-01-05 00:00 UTC: generated series start there, so their
#: time-of-day and day-of-week features mean what the generator intended.
MONDAY_EPOCH_S = 4 * 86_400
_HEADER = "t_seconds,value"


class TraceFormatError(ValueError):
    """A trace file that does not follow the ``t_seconds,value`` format; the message names file and line."""


@dataclass(frozen=True, eq=False)
class Trace:
    """A load series, or a chronological window of one.

    ``start_s`` is the unix time of row 0 of *this* window (the features see time of day
    and day of week, so a window keeps the clock of the trace it was cut from).
    ``first_row`` is where the window starts in the original series.

    ``reference_p95`` is the level the simulator sizes the service by (see
    ``SimConfig.target_replicas_p95``); ``None`` means this series' own 95th percentile.
    :meth:`split` sets it to the *training* window's, for every window: the scale is fitted on
    training data and applied to validation and test, as any normalisation should be, so a
    test period busier than anything in training is as hard in the simulator as in reality.
    """

    name: str
    values: FloatArray
    start_s: float = 0.0
    source: str | None = None
    sha256: str = ""
    window: WindowName = "all"
    first_row: int = 0
    kind: Literal["file", "generated"] = "file"
    params: Mapping[str, Any] = field(default_factory=dict)
    reference_p95: float | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"trace {self.name!r}: values must be a non-empty 1-D array, got shape {values.shape}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"trace {self.name!r}: values must be finite and >= 0")
        if self.reference_p95 is not None and not (math.isfinite(self.reference_p95) and self.reference_p95 > 0):
            raise ValueError(
                f"trace {self.name!r}: reference_p95 must be a finite number > 0, got {self.reference_p95}"
            )
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(values.tobytes()).hexdigest())

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def duration_s(self) -> int:
        return len(self) * TRACE_STEP_S

    def window_of(self, name: WindowName, start: int, stop: int) -> Trace:
        """Rows ``[start, stop)`` of this series as a named window (clock and provenance kept)."""
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"trace {self.name!r}: window [{start}, {stop}) outside 0..{len(self)}")
        return replace(
            self,
            values=self.values[start:stop],
            start_s=self.start_s + start * TRACE_STEP_S,
            window=name,
            first_row=self.first_row + start,
            sha256=self.sha256,
        )

    def split(self, train: float = 0.7, validation: float = 0.15, test: float = 0.15) -> TraceSplit:
        """Chronological train / validation / test windows (in that order, no overlap, no shuffling).

        Chronological because load is autocorrelated: a random split would leak the test
        period's shape into training through its neighbouring minutes.
        """
        fractions = {"train": train, "validation": validation, "test": test}
        for key, value in fractions.items():
            if not 0 <= value <= 1:
                raise ValueError(f"split: {key} must be in [0, 1], got {value}")
        if not math.isclose(train + validation + test, 1.0, abs_tol=1e-9):
            raise ValueError(f"split: train + validation + test must be 1, got {train + validation + test}")
        n = len(self)
        a = round(n * train)
        b = round(n * (train + validation))
        bounds: tuple[tuple[WindowName, int, int], ...] = (("train", 0, a), ("validation", a, b), ("test", b, n))
        for name, lo, hi in bounds:
            if hi - lo < 1:
                raise ValueError(f"split: the {name} window of {self.name!r} ({n} rows) would be empty")
        train_p95 = float(np.percentile(self.values[:a], 95)) or float(self.values[:a].max())
        fitted = replace(self, reference_p95=train_p95 if train_p95 > 0 else None)
        windows: dict[str, Trace] = {"all": replace(fitted, window="all")}
        for name, lo, hi in bounds:
            windows[name] = fitted.window_of(name, lo, hi)
        return TraceSplit(windows)

    def provenance(self) -> dict[str, Any]:
        """What this series is and where it came from, as JSON-able data."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "window": self.window,
            "rows": [self.first_row, self.first_row + len(self)],
            "sha256": self.sha256,
        }
        if self.source is not None:
            out["path"] = self.source
        if self.params:
            out["params"] = dict(self.params)
        if self.reference_p95 is not None:
            out["reference_p95"] = self.reference_p95
        return out


@dataclass(frozen=True)
class TraceSplit(Mapping[str, Trace]):
    """Windows of one trace by name: ``"train"``, ``"validation"``, ``"test"``, ``"all"``."""

    windows: Mapping[str, Trace]

    def __getitem__(self, name: str) -> Trace:
        if name not in self.windows:
            raise KeyError(f"unknown window {name!r}; choose one of {', '.join(WINDOW_NAMES)}")
        return self.windows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.windows)

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def train(self) -> Trace:
        return self["train"]

    @property
    def validation(self) -> Trace:
        return self["validation"]

    @property
    def test(self) -> Trace:
        return self["test"]

    @property
    def all(self) -> Trace:
        return self["all"]


def load_trace(path: str | os.PathLike[str], *, name: str | None = None, start_s: float = 0.0) -> Trace:
    """Read and validate a ``t_seconds,value`` trace file.

    Every problem is reported with the file and line (1-based, header = line 1): a wrong
    header, a wrong field count, a non-number, a step other than 60 s, a negative or
    non-finite value. ``start_s`` sets the unix time of the first row (the files carry only
    relative seconds; 0 is a Thursday, midnight UTC).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot read trace file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    lines = text.splitlines()
    if not lines or lines[0].strip().replace(" ", "") != _HEADER:
        got = lines[0].strip()[:60] if lines else "<empty file>"
        raise TraceFormatError(f"{p}:1: header must be '{_HEADER}', got {got!r}")
    values: list[float] = []
    expected_t = 0
    for lineno, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped:
            continue
        fields = stripped.split(",")
        if len(fields) != 2:
            raise TraceFormatError(f"{p}:{lineno}: expected 2 fields 't_seconds,value', got {len(fields)}")
        t_text, v_text = fields[0].strip(), fields[1].strip()
        try:
            t = float(t_text)
        except ValueError:
            raise TraceFormatError(f"{p}:{lineno}: t_seconds {t_text!r} is not a number") from None
        if t != expected_t:
            if not values and t != 0:
                raise TraceFormatError(f"{p}:{lineno}: t_seconds must start at 0, got {t_text}")
            raise TraceFormatError(
                f"{p}:{lineno}: t_seconds must rise by exactly {TRACE_STEP_S} s: expected {expected_t}, got {t_text}"
            )
        try:
            v = float(v_text)
        except ValueError:
            raise TraceFormatError(f"{p}:{lineno}: value {v_text!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise TraceFormatError(f"{p}:{lineno}: value must be a finite number >= 0, got {v_text}")
        values.append(v)
        expected_t += TRACE_STEP_S
    if len(values) < 2:
        raise TraceFormatError(f"{p}: needs at least 2 data rows, got {len(values)}")
    return Trace(
        name=name or p.stem,
        values=np.array(values, dtype=np.float64),
        start_s=start_s,
        source=str(p),
        sha256=hashlib.sha256(raw).hexdigest(),
        kind="file",
    )


def write_trace(path: str | os.PathLike[str], values: npt.ArrayLike) -> Path:
    """Write a per-minute series in the ``t_seconds,value`` format (for converting public traces).

    Integers are written as integers, so a file of counts round-trips byte for byte.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"values must be a 1-D series of at least 2 rows, got shape {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError("values must be finite and >= 0")
    p = Path(path)
    rows = (f"{i * TRACE_STEP_S},{int(x) if x.is_integer() else repr(float(x))}" for i, x in enumerate(v))
    p.write_text(_HEADER + "\n" + "\n".join(rows) + "\n")
    return p


def traces_dir() -> Path:
    """Where the public traces live: ``$RLSCALE_TRACES_DIR``, else ``<repo>/../shared/traces``."""
    env = os.environ.get("RLSCALE_TRACES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "traces"


# --------------------------------------------------------------------------- generators
#
# Each shape is a factor array (n,) around 1; a generated series is a product of shapes
# times a base level. All take an explicit numpy Generator so a seed reproduces them.

_MINUTES_PER_DAY = 1440


def _minutes(n: int) -> FloatArray:
    return np.arange(n, dtype=np.float64)


def diurnal(
    n: int, rng: np.random.Generator, *, trough: float | None = None, peak_hour: float | None = None
) -> FloatArray:
    """A daily cycle: ``trough`` (fraction of the peak) at night, a raised-cosine peak at ``peak_hour``."""
    trough = float(rng.uniform(0.1, 0.6)) if trough is None else trough
    peak_hour = float(rng.uniform(11.0, 21.0)) if peak_hour is None else peak_hour
    sharpness = float(rng.uniform(1.0, 3.0))
    phase = 2 * np.pi * (_minutes(n) / _MINUTES_PER_DAY - peak_hour / 24.0)
    shape = ((1.0 + np.cos(phase)) / 2.0) ** sharpness
    return trough + (1.0 - trough) * shape


def weekly(n: int, rng: np.random.Generator, *, weekend: float | None = None) -> FloatArray:
    """Weekends at ``weekend`` × the weekday level (series start on a Monday), eased over two hours."""
    weekend = float(rng.uniform(0.4, 1.1)) if weekend is None else weekend
    day = (_minutes(n) / _MINUTES_PER_DAY) % 7.0
    # Smooth step into Saturday (day 5) and out of Sunday (day 7 → 0).
    ease = 2.0 / 24.0
    into = np.clip((day - 5.0) / ease + 0.5, 0.0, 1.0)
    out = np.clip((7.0 - day) / ease + 0.5, 0.0, 1.0)
    return 1.0 + (weekend - 1.0) * into * out


def flash_crowds(
    n: int, rng: np.random.Generator, *, per_day: float | None = None, magnitude: tuple[float, float] = (2.0, 10.0)
) -> FloatArray:
    """Sudden surges (World Cup matches, launches): rise in 2–20 min, hold 10–180 min, decay 5–60 min."""
    per_day = float(rng.uniform(0.3, 2.0)) if per_day is None else per_day
    out = np.ones(n)
    t = _minutes(n)
    for _ in range(int(rng.poisson(per_day * n / _MINUTES_PER_DAY))):
        start = rng.uniform(0, n)
        rise, hold, decay = rng.uniform(2, 20), rng.uniform(10, 180), rng.uniform(5, 60)
        height = rng.uniform(*magnitude) - 1.0
        up = np.clip((t - start) / rise, 0.0, 1.0)
        down = np.exp(-np.maximum(t - start - rise - hold, 0.0) / decay)
        out += height * up * down * (t >= start)
    return out


def ramp(n: int, rng: np.random.Generator, *, growth: float | None = None) -> FloatArray:
    """Steady growth (or decline) from 1 to ``growth`` over the series, starting at a random point."""
    growth = float(np.exp(rng.uniform(np.log(0.33), np.log(4.0)))) if growth is None else growth
    start = rng.uniform(0, 0.7) * n
    length = max(rng.uniform(0.1, 1.0) * (n - start), 1.0)
    frac = np.clip((_minutes(n) - start) / length, 0.0, 1.0)
    return np.asarray(growth**frac, dtype=np.float64)


def regime_shifts(n: int, rng: np.random.Generator, *, per_day: float | None = None) -> FloatArray:
    """Level changes that stick (a new client, a feature launch, a partial outage), each ×0.4–2.5."""
    per_day = float(rng.uniform(0.2, 1.5)) if per_day is None else per_day
    out = np.ones(n)
    for _ in range(int(rng.poisson(per_day * n / _MINUTES_PER_DAY))):
        at = int(rng.integers(0, n))
        out[at:] *= float(np.exp(rng.uniform(np.log(0.4), np.log(2.5))))
    # Keep the series around its starting level on average, so shifts do not compound away.
    return np.asarray(out / np.exp(np.mean(np.log(out))), dtype=np.float64)


def spikes(n: int, rng: np.random.Generator, *, per_day: float | None = None) -> FloatArray:
    """Isolated one- to three-minute spikes (cron jobs, retries, timers), ×1.5–4."""
    per_day = float(rng.uniform(2.0, 24.0)) if per_day is None else per_day
    out = np.ones(n)
    for _ in range(int(rng.poisson(per_day * n / _MINUTES_PER_DAY))):
        at = int(rng.integers(0, n))
        out[at : at + int(rng.integers(1, 4))] *= rng.uniform(1.5, 4.0)
    return out


def noise(n: int, rng: np.random.Generator, *, sigma: float | None = None, corr: float | None = None) -> FloatArray:
    """Multiplicative log-normal AR(1) noise with mean 1: minute-to-minute jitter that persists a little."""
    sigma = float(rng.uniform(0.03, 0.2)) if sigma is None else sigma
    corr = float(rng.uniform(0.0, 0.9)) if corr is None else corr
    eps = rng.standard_normal(n) * sigma * math.sqrt(1 - corr**2)
    x = np.empty(n)
    x[0] = rng.standard_normal() * sigma
    for i in range(1, n):  # n is a few thousand; the recursion is sequential by nature
        x[i] = corr * x[i - 1] + eps[i]
    return np.asarray(np.exp(x - sigma**2 / 2), dtype=np.float64)


#: Named compositions of the shapes above. Every one includes noise, since no real load is smooth.
PATTERNS: dict[str, Callable[[int, np.random.Generator], FloatArray]] = {
    "diurnal": lambda n, g: diurnal(n, g) * noise(n, g),
    "weekly": lambda n, g: diurnal(n, g) * weekly(n, g) * noise(n, g),
    "flash_crowd": lambda n, g: diurnal(n, g, trough=float(g.uniform(0.4, 0.9))) * flash_crowds(n, g) * noise(n, g),
    "ramp": lambda n, g: diurnal(n, g) * ramp(n, g) * noise(n, g),
    "regime_shift": lambda n, g: diurnal(n, g) * regime_shifts(n, g) * noise(n, g),
    "bursty": lambda n, g: diurnal(n, g, trough=float(g.uniform(0.5, 0.9))) * spikes(n, g) * noise(n, g, sigma=0.2),
    "mixed": lambda n, g: (
        (diurnal(n, g) * weekly(n, g) * flash_crowds(n, g, per_day=0.5) * ramp(n, g) * regime_shifts(n, g, per_day=0.3))
        * spikes(n, g, per_day=4.0)
        * noise(n, g)
    ),
}


def generate(pattern: str, n_steps: int, seed: int, *, level: float = 100.0) -> Trace:
    """One generated series of ``n_steps`` minutes (``level`` = the peak of its daily cycle)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    rng = np.random.default_rng([seed, sorted(PATTERNS).index(pattern)])
    values = np.maximum(level * PATTERNS[pattern](n_steps, rng), 0.0)
    return Trace(
        name=f"generated:{pattern}:{seed}",
        values=values,
        start_s=float(MONDAY_EPOCH_S),
        kind="generated",
        params={"pattern": pattern, "seed": seed, "n_steps": n_steps, "level": level},
    )


@dataclass(frozen=True, eq=False)
class LoadMix:
    """Load series for training plus a record of exactly which data they are."""

    loads: tuple[Trace, ...]
    provenance: dict[str, Any]

    def __iter__(self) -> Iterator[Trace]:
        return iter(self.loads)

    def __len__(self) -> int:
        return len(self.loads)


def training_mix(
    seed: int,
    *,
    n_generated: int = 28,
    n_steps: int = 7 * _MINUTES_PER_DAY,
    patterns: Sequence[str] | None = None,
    extra_traces: Iterable[str | os.PathLike[str] | Trace] = (),
    extra_window: Literal["train"] = "train",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> LoadMix:
    """The project's default training data: generated load, plus the *training* windows of given traces.

    ``n_generated`` series cycle through ``patterns`` (all of :data:`PATTERNS` by
    default), each ``n_steps`` minutes long, seeded from ``seed``. Each extra trace (a
    path, or an already-loaded :class:`Trace`) contributes only its chronological training
    window, so that its validation and test windows stay unseen; ``extra_window`` exists
    to make that explicit in calls and cannot be set to anything else.
    """
    if extra_window != "train":
        raise ValueError("training_mix only ever trains on the 'train' window of extra traces")
    names = list(patterns) if patterns is not None else list(PATTERNS)
    if n_generated > 0 and not names:
        raise ValueError("patterns must not be empty when n_generated > 0")
    loads: list[Trace] = []
    for i in range(n_generated):
        loads.append(generate(names[i % len(names)], n_steps, seed * 100_003 + i))
    for item in extra_traces:
        trace = item if isinstance(item, Trace) else load_trace(item)
        loads.append(trace.split(*split).train)
    provenance = {
        "kind": "training_mix",
        "seed": seed,
        "generated": {"count": n_generated, "n_steps": n_steps, "patterns": names},
        "split": {"train": split[0], "validation": split[1], "test": split[2]},
        "series": [t.provenance() for t in loads],
    }
    return LoadMix(tuple(loads), provenance)
