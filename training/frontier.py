"""Cost at matched SLO: the HPA's whole frontier, and where a policy sits against it.

The question a user of rlscale asks is *at the same reliability, does it cost less than a
well-tuned HPA?* One HPA point cannot answer it: a policy with fewer SLO-violation minutes
and more replica-hours is neither better nor worse than that point. So the HPA algorithm is
replayed on the reported window at every target utilisation of :data:`HPA_TARGETS` and
every scale-down stabilisation window of :data:`HPA_STABILIZATION_S`, under the same seeds
(common random numbers) as the policies, and each policy P is compared with the cheapest
HPA configuration that is at least as reliable:

* ``matched_hpa_replica_hours(P)`` — the fewest replica-hours of any grid point whose
  SLO-violation minutes are ≤ P's + :data:`SLO_TOLERANCE_MIN`;
* ``cost_ratio(P) = replica_hours(P) / matched`` — below 1 is cheaper than any HPA setting
  as reliable; ``None`` (with ``dominates_hpa_on_slo``) where no HPA setting is that reliable;
* ``gap_closed(P) = (matched − replica_hours(P)) / (matched − oracle)`` — the share of the
  room between the HPA and the clairvoyant floor (:mod:`rlscale.training.oracle`) that P takes.

The grid is picked *with hindsight* on the reported window: a comparison in the HPA's
favour. The published autoscalers that beat a tuned HPA (COLA, AHPA) report this measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlscale.policy.baselines import BaselineConfig, HpaConfig

#: HPA target utilisations of the frontier: 0.30, 0.35, …, 0.90.
HPA_TARGETS: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))
#: HPA scale-down stabilisation windows of the frontier, seconds (the controller's default is 300).
HPA_STABILIZATION_S: tuple[float, ...] = (60.0, 180.0, 300.0)
#: Measurement noise allowed when matching SLO-violation minutes.
SLO_TOLERANCE_MIN = 0.5


def hpa_grid() -> list[BaselineConfig]:
    """Every HPA configuration of the frontier, target-major."""
    return [
        BaselineConfig(kind="hpa", hpa=HpaConfig(target_utilization=t, scale_down_stabilization_s=s))
        for t in HPA_TARGETS
        for s in HPA_STABILIZATION_S
    ]


def pareto(points: Sequence[Mapping[str, float]]) -> list[bool]:
    """For each point: does no other point have ≤ SLO minutes and ≤ replica-hours, one of them strictly?"""
    out = []
    for p in points:
        dominated = any(
            q["slo_violation_minutes"] <= p["slo_violation_minutes"]
            and q["replica_hours"] <= p["replica_hours"]
            and (q["slo_violation_minutes"] < p["slo_violation_minutes"] or q["replica_hours"] < p["replica_hours"])
            for q in points
        )
        out.append(not dominated)
    return out


def match(
    slo_minutes: float, replica_hours: float, hpa: Sequence[Mapping[str, float]], oracle_rh: float
) -> dict[str, Any]:
    """One policy result against the HPA grid (same seed, or means over the same seeds)."""
    eligible = [p for p in hpa if p["slo_violation_minutes"] <= slo_minutes + SLO_TOLERANCE_MIN]
    if not eligible:
        safest = min(hpa, key=lambda p: (p["slo_violation_minutes"], p["replica_hours"]))
        return {
            "matched_hpa_replica_hours": None,
            "cost_ratio": None,
            "gap_closed": None,
            "dominates_hpa_on_slo": True,
            "safest_hpa": dict(safest),
        }
    matched = min(p["replica_hours"] for p in eligible)
    room = matched - oracle_rh
    return {
        "matched_hpa_replica_hours": matched,
        "cost_ratio": replica_hours / matched if matched > 0 else None,
        "gap_closed": (matched - replica_hours) / room if room > 0 else None,
        "dominates_hpa_on_slo": False,
    }


def _spread(values: Sequence[float | None], key: str) -> dict[str, float]:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if known.size == 0:
        return {}
    return {
        f"{key}_std": float(known.std(ddof=1)) if known.size > 1 else 0.0,
        f"{key}_min": float(known.min()),
        f"{key}_max": float(known.max()),
    }


def matched_report(
    runs: Sequence[tuple[int, Mapping[str, float]]],
    hpa_by_seed: Mapping[int, Sequence[Mapping[str, float]]],
    hpa_mean: Sequence[Mapping[str, float]],
    oracle_rh: float,
) -> dict[str, Any]:
    """The matched-SLO keys of one policy: on its means (against the grid's means), spread over runs.

    ``runs`` are (seed, metrics) of each run of the policy (for the learned policy: every
    model × seed); each run is matched against the HPA grid under its own seed for the spread.
    """
    slo = float(np.mean([m["slo_violation_minutes"] for _, m in runs]))
    rh = float(np.mean([m["replica_hours"] for _, m in runs]))
    out = match(slo, rh, hpa_mean, oracle_rh)
    per_run = [match(m["slo_violation_minutes"], m["replica_hours"], hpa_by_seed[s], oracle_rh) for s, m in runs]
    for key in ("cost_ratio", "gap_closed"):
        out.update(_spread([r[key] for r in per_run], key))
    out["runs_dominating_hpa_on_slo"] = sum(bool(r["dominates_hpa_on_slo"]) for r in per_run)
    return out


def frontier_points(configs: Sequence[BaselineConfig], metrics: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    """The JSON ``frontier.hpa`` list: every grid point with its means and whether it is Pareto-optimal."""
    points = [
        {
            "target_utilization": b.hpa.target_utilization,
            "stabilization_s": b.hpa.scale_down_stabilization_s,
            "slo_violation_minutes": m["slo_violation_minutes"],
            "replica_hours": m["replica_hours"],
            "slo_violation_minutes_std": m.get("slo_violation_minutes_std", 0.0),
            "replica_hours_std": m.get("replica_hours_std", 0.0),
        }
        for b, m in zip(configs, metrics, strict=True)
    ]
    for p, on in zip(points, pareto(points), strict=True):
        p["pareto"] = on
    return points


__all__ = [
    "HPA_STABILIZATION_S",
    "HPA_TARGETS",
    "SLO_TOLERANCE_MIN",
    "frontier_points",
    "hpa_grid",
    "match",
    "matched_report",
    "pareto",
]
