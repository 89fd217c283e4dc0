"""The surge scenario: a sudden tripling of load for a fixed period on top of a trace, and recovery time.

:func:`surge` multiplies the rows of one period of a window by ``factor`` and keeps the
window's scale reference (``reference_p95``), so the simulator maps every other minute to
exactly the same request rate as without the surge: the surge is extra load, not a
re-scaled trace. :func:`recovery_minutes` measures how long a policy takes to serve
within the SLO again after the onset.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from rlscale.training.workloads import Trace

#: Consecutive SLO-compliant intervals that count as recovered.
RECOVERED_AFTER = 5


def surge(window: Trace, start: int, minutes: int, factor: float = 3.0) -> Trace:
    """``window`` with rows ``[start, start + minutes)`` multiplied by ``factor``; every other row unchanged."""
    if not 0 <= start < start + minutes <= len(window):
        raise ValueError(f"surge [{start}, {start + minutes}) does not fit a window of {len(window)} rows")
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    values = np.array(window.values, dtype=np.float64)
    values[start : start + minutes] *= factor
    reference = window.reference_p95
    if reference is None:  # the window's own scale, fixed before the surge changes its percentiles
        reference = float(np.percentile(window.values, 95)) or float(window.values.max())
    return replace(
        window,
        values=values,
        sha256="",
        reference_p95=reference,
        params={**window.params, "surge": {"start": start, "minutes": minutes, "factor": factor}},
    )


def recovery_minutes(
    slo_violated: npt.NDArray[np.bool_], start: int, step_s: float, recovered_after: int = RECOVERED_AFTER
) -> float:
    """Minutes from the surge onset (row ``start``) to the first of ``recovered_after`` SLO-compliant intervals.

    0 if the SLO never broke; the time to the end of the episode if it never recovered.
    """
    after = np.asarray(slo_violated[start:], dtype=bool)
    run = 0
    for i, bad in enumerate(after):
        run = 0 if bad else run + 1
        if run == recovered_after:
            return (i + 1 - recovered_after) * step_s / 60.0
    return len(after) * step_s / 60.0


__all__ = ["RECOVERED_AFTER", "recovery_minutes", "surge"]
