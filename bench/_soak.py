"""The soak's verdict: does the operator leak memory, threads, sockets or file descriptors over an hour?

``bench/operator_scale.py --soak`` samples the operator once a second for the whole window
(RSS, threads, sockets, open file descriptors) and hands the series here. What counts:

* **RSS slope**, MiB per hour: a least-squares line through the samples of the last two
  thirds of the window. The first third is left out because a Python process's heap settles
  after start-up (caches fill, the allocator's arenas grow to their working size) — growth
  there is not a leak, and a slope over it would read one;
* **threads, sockets, fds**: the median of the last tenth of the window against the median
  of the first tenth (after the warm-up the harness already waited): a leak of one per
  reconcile shows as thousands; a pool that grows to its size shows as none after warm-up;
* **on time**: the reconciles due in the window that started less than one interval late.

Bounds (:data:`BOUNDS`) are what "≈ 0" means here, chosen before the first soak run and
wide enough for measurement noise on a shared 2-core machine, narrow enough that a leak of
one object per reconcile (a few KiB each, ~86 000 reconciles an hour at 100 policies and
a 5 s interval) fails them by orders of magnitude.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The soak's pass bounds (see the module docstring).
BOUNDS = {
    "rss_slope_mib_per_h": 5.0,
    "threads_growth": 0.0,
    "sockets_growth": 2.0,
    "fds_growth": 2.0,
    "on_time_fraction_min": 0.99,
}


@dataclass
class SoakSamples:
    """One operator's samples over the window: seconds since its start, and each gauge."""

    t_s: list[float]
    rss_mib: list[float]
    threads: list[int]
    sockets: list[int]
    fds: list[int]

    def add(self, t_s: float, rss_mib: float, threads: int, sockets: int, fds: int) -> None:
        self.t_s.append(t_s)
        self.rss_mib.append(rss_mib)
        self.threads.append(threads)
        self.sockets.append(sockets)
        self.fds.append(fds)


def _tenths(values: Sequence[float]) -> tuple[float, float]:
    k = max(1, len(values) // 10)
    return float(statistics.median(values[:k])), float(statistics.median(values[-k:]))


def slope_per_hour(t_s: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` over ``t_s``, per hour (NaN with fewer than 2 samples)."""
    if len(t_s) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 3600.0, np.asarray(values), 1)[0])


def summarise(s: SoakSamples, on_time_fraction: float) -> dict[str, float | bool | dict[str, float]]:
    """The soak's figures and its verdict against :data:`BOUNDS`."""
    skip = len(s.t_s) // 3
    out: dict[str, float | bool | dict[str, float]] = {
        "samples": float(len(s.t_s)),
        "window_h": (s.t_s[-1] - s.t_s[0]) / 3600.0 if s.t_s else 0.0,
        "rss_first_mib": _tenths(s.rss_mib)[0],
        "rss_last_mib": _tenths(s.rss_mib)[1],
        "rss_slope_mib_per_h": slope_per_hour(s.t_s[skip:], s.rss_mib[skip:]),
        "rss_slope_whole_mib_per_h": slope_per_hour(s.t_s, s.rss_mib),
    }
    for name, series in (("threads", s.threads), ("sockets", s.sockets), ("fds", s.fds)):
        first, last = _tenths(series)
        out[f"{name}_first"], out[f"{name}_last"], out[f"{name}_max"] = first, last, float(max(series))
        out[f"{name}_growth"] = last - first
    out["on_time_fraction"] = on_time_fraction
    failed = {
        k: float(out[k])  # type: ignore[arg-type]
        for k in ("rss_slope_mib_per_h", "threads_growth", "sockets_growth", "fds_growth")
        if not float(out[k]) <= BOUNDS[k]  # type: ignore[arg-type]
    }
    if not on_time_fraction >= BOUNDS["on_time_fraction_min"]:
        failed["on_time_fraction"] = on_time_fraction
    out["failed"] = failed
    out["passed"] = not failed
    return out
