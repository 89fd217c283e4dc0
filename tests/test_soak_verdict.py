"""The soak's verdict (bench/_soak.py): a leak fails it, start-up growth and noise do not.

The soak itself runs for an hour (``make soak``); this checks the arithmetic that judges it,
on series shaped like what it samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from _soak import BOUNDS, SoakSamples, summarise


def samples(rss: np.ndarray, threads: int = 12, sockets: int = 9, fds: int = 20) -> SoakSamples:
    n = len(rss)
    return SoakSamples(
        t_s=list(np.arange(n, dtype=float)),
        rss_mib=list(rss),
        threads=[threads] * n,
        sockets=[sockets] * n,
        fds=[fds] * n,
    )


HOUR = 3600
rng = np.random.default_rng(0)


def test_a_flat_noisy_operator_passes_even_with_start_up_growth() -> None:
    t = np.arange(HOUR)
    rss = 170 + 25 * (1 - np.exp(-t / 300.0)) + rng.normal(0, 1.5, HOUR)  # heap settling in the first minutes
    v = summarise(samples(rss), on_time_fraction=0.999)
    assert v["passed"], v
    assert abs(float(v["rss_slope_mib_per_h"])) < 2  # type: ignore[arg-type]
    assert float(v["rss_slope_whole_mib_per_h"]) > BOUNDS["rss_slope_mib_per_h"]  # type: ignore[arg-type]


def test_a_leak_of_16_kib_per_reconcile_fails_by_orders_of_magnitude() -> None:
    per_s = 100 / 5 * 16 / 1024  # 100 policies at 5 s, 16 KiB each: MiB per second
    rss = 170 + per_s * np.arange(HOUR) + rng.normal(0, 1.5, HOUR)
    v = summarise(samples(rss), on_time_fraction=1.0)
    assert not v["passed"] and set(v["failed"]) == {"rss_slope_mib_per_h"}, v  # type: ignore[arg-type]
    assert float(v["rss_slope_mib_per_h"]) > 100 * BOUNDS["rss_slope_mib_per_h"]  # type: ignore[arg-type]


def test_growing_threads_sockets_fds_and_late_reconciles_each_fail() -> None:
    flat = 170 + rng.normal(0, 1, HOUR)
    s = samples(flat)
    s.threads = [12 + i // 600 for i in range(HOUR)]  # one thread more every 10 minutes
    s.sockets = [9 + i // 300 for i in range(HOUR)]
    s.fds = [20 + i // 300 for i in range(HOUR)]
    v = summarise(s, on_time_fraction=0.95)
    assert set(v["failed"]) == {"threads_growth", "sockets_growth", "fds_growth", "on_time_fraction"}, v  # type: ignore[arg-type]
