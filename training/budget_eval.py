"""``rlscale evaluate-budget``: several services in one capacity budget, three ways of sharing it.

Compared on the same loads and noise (common random numbers per seed), under a budget
that binds at the peaks:

* ``hpa`` — each member an HPA tuned on its own trace's training window (as
  :func:`rlscale.training.evaluate.tune_baseline` tunes it), sharing the budget first come,
  first served: independent autoscalers under a ResourceQuota;
* ``learned`` — each member the learned policy, deciding alone, first come, first served;
* ``coordinated`` — the learned policy for every member (one set of parameters), decided
  together: each member's mask holds what it could be granted and the budget is granted
  by the fair rule (:func:`rlscale.policy.budget.arbitrate`, max-min over pressure, spare
  pods of members under their target taken back for pressed ones).

The loads are time-shifted so that their peaks overlap (:func:`overlapping_windows`): the
budget matters only when members want capacity at the same time. Reported per policy, as
means over seeds: total and per-member SLO-violation minutes, replica-hours, Jain's index
over members' SLO attainment (share of intervals within the SLO), budget utilisation
(allocated CPU / budget, mean over intervals) and the share of intervals in which the
budget bound. Beside them, the clairvoyant ``floor`` (:mod:`~rlscale.training.budget_floor`):
the fewest total SLO-violation minutes any sharing of the budget could reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.budget import BudgetConfig, jain_index
from rlscale.policy.decide import DecisionConfig
from rlscale.policy.model import PolicyModel
from rlscale.training.budget_floor import violation_floor
from rlscale.training.budget_sim import BudgetColumn, run_budget
from rlscale.training.episodes import Controller, EpisodeLog
from rlscale.training.evaluate import TuneCriterion, decision_config, tune_baseline
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

BUDGET_POLICIES: tuple[str, ...] = ("hpa", "learned", "coordinated")
#: Minutes the load is smoothed over to find a trace's peak (one noisy minute is not a peak).
PEAK_SMOOTHING_MIN = 30


def peak_row(values: np.ndarray, smoothing: int = PEAK_SMOOTHING_MIN) -> int:
    """Row of the highest ``smoothing``-minute moving average (centred) of a series."""
    k = max(1, min(smoothing, values.size))
    smooth = np.convolve(values, np.ones(k) / k, mode="same")
    return int(np.argmax(smooth))


def overlapping_windows(traces: Sequence[Trace], *, window: str = "test", hours: float = 6.0) -> list[Trace]:
    """Each trace's ``window`` cut to one common length around its own peak, so the peaks coincide.

    The length is ``hours`` or the shortest member's window, whichever is less. Each
    member keeps its own clock (its time-of-day features stay true); what is shifted is
    which stretch of each trace is played, so that all peaks fall near the middle.
    """
    if not traces:
        raise ValueError("give at least one trace")
    picked = [t.split()[window] for t in traces]
    length = min(int(hours * 60), *(len(t) for t in picked))
    out = []
    for t in picked:
        start = int(np.clip(peak_row(t.values) - length // 2, 0, len(t) - length))
        out.append(t.window_of(t.window, start, start + length))
    return out


@dataclass
class BudgetEvaluation:
    """Every policy's logs by seed and member, with what was compared."""

    budget_cores: float
    seeds: list[int]
    members: list[str]
    windows: list[Trace]
    tuned_hpa: dict[str, float]
    logs: dict[str, list[list[EpisodeLog]]]  # policy -> [seed][member]
    #: The most CPU the tuned HPAs hold together without a budget (max over intervals, mean over seeds).
    peak_demand_cores: float | None = None
    #: The clairvoyant floor on total SLO-violation minutes, per seed (:mod:`~rlscale.training.budget_floor`).
    floor_minutes: list[float] | None = None

    def report(self) -> dict[str, Any]:
        """The ``--json`` object: ``{"budget_cores", "seeds", "policies": {...}}`` plus provenance."""
        policies: dict[str, Any] = {}
        for name, by_seed in self.logs.items():
            per_seed = [_seed_metrics(member_logs, self.budget_cores) for member_logs in by_seed]
            policies[name] = {
                "slo_violation_minutes_total": _mean(p["slo_violation_minutes_total"] for p in per_seed),
                "slo_violation_minutes_total_per_seed": [p["slo_violation_minutes_total"] for p in per_seed],
                "jain_index": _mean(p["jain_index"] for p in per_seed),
                "budget_utilisation": _mean(p["budget_utilisation"] for p in per_seed),
                "binding_fraction": _mean(p["binding_fraction"] for p in per_seed),
                "members": {
                    m: {
                        key: _mean(p["members"][i][key] for p in per_seed)
                        for key in ("slo_violation_minutes", "replica_hours", "refused_pods")
                    }
                    for i, m in enumerate(self.members)
                },
            }
        hpa = policies.get("hpa", {}).get("slo_violation_minutes_total")
        for p in policies.values():
            p["slo_violation_ratio_vs_hpa"] = (p["slo_violation_minutes_total"] / hpa) if hpa else None
        floor = None
        if self.floor_minutes is not None:
            floor = {
                "slo_violation_minutes_total": _mean(self.floor_minutes),
                "slo_violation_minutes_total_per_seed": self.floor_minutes,
                "slo_violation_ratio_vs_hpa": (_mean(self.floor_minutes) / hpa) if hpa else None,
            }
        return {
            "budget_cores": self.budget_cores,
            "seeds": len(self.seeds),
            "peak_demand_cores": self.peak_demand_cores,
            "policies": policies,
            "floor": floor,
            "traces": [t.provenance() for t in self.windows],
            "tuned_hpa_target_utilization": self.tuned_hpa,
        }


def _mean(values: Any) -> float:
    return float(np.mean(list(values)))


def _seed_metrics(member_logs: Sequence[EpisodeLog], budget_cores: float) -> dict[str, Any]:
    members = []
    attainment = []
    for log in member_logs:
        s = log.steps
        members.append(
            {
                "slo_violation_minutes": float(s["slo_violated"].sum()) * log.step_s / 60.0,
                "replica_hours": float(s["replicas"].sum()) * log.step_s / 3600.0,
                "refused_pods": float(s["refused_pods"].sum()),
            }
        )
        attainment.append(1.0 - float(s["slo_violated"].mean()))
    allocated = np.sum([log.steps["cpu_allocated_m"] for log in member_logs], axis=0) / 1000.0
    return {
        "slo_violation_minutes_total": sum(m["slo_violation_minutes"] for m in members),
        "jain_index": jain_index(attainment),
        "budget_utilisation": float(np.mean(allocated / budget_cores)),
        "binding_fraction": float(np.mean(member_logs[0].steps["budget_binding"])),
        "members": members,
    }


def peak_demand(sim: SimConfig, windows: Sequence[Trace], hpa: Sequence[DecisionConfig], seeds: Sequence[int]) -> float:
    """The most CPU (cores) the members' tuned HPAs hold together, unbudgeted: max over intervals, mean over seeds."""
    unbounded = BudgetConfig(cpu_m=10**12)
    columns = [BudgetColumn(tuple(Controller(c) for c in hpa), "fcfs", int(seed)) for seed in seeds]
    logs = run_budget(sim, windows, unbounded, columns)
    peaks = [float(np.sum([m.steps["cpu_allocated_m"] for m in members], axis=0).max()) / 1000.0 for members in logs]
    return float(np.mean(peaks))


def evaluate_budget(
    traces: Sequence[Trace],
    budget_cores: float | None,
    *,
    sim: SimConfig,
    model: PolicyModel,
    seeds: Sequence[int] = (0, 1, 2),
    window: str = "test",
    hours: float = 6.0,
    criterion: TuneCriterion = "reward",
    coordinated_model: PolicyModel | None = None,
    reclaim_below: float | None = None,
    budget_fraction: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> BudgetEvaluation:
    """Run the three policies of the module docstring under one budget of ``budget_cores``.

    ``traces`` are whole series (each is split chronologically; its HPA is tuned on its
    training window only). ``coordinated_model`` defaults to ``model`` (the shipped policy
    with the budget's headroom in its mask and fair arbitration); ``reclaim_below`` overrides
    the fair rule's :attr:`~rlscale.policy.budget.BudgetConfig.reclaim_below` (0: never take back).
    ``budget_fraction`` instead of ``budget_cores`` sets the budget to that share of
    :func:`peak_demand` (so that it binds at the peaks by a known margin).
    """
    if (budget_cores is None) == (budget_fraction is None):
        raise ValueError("give exactly one of budget_cores and budget_fraction")
    if len(traces) < 2:
        raise ValueError("give at least two traces: a budget is shared by several services")
    say = progress or (lambda _msg: None)
    windows = overlapping_windows(traces, window=window, hours=hours)
    members = [f"{t.name}" for t in traces]
    if len(set(members)) != len(members):
        members = [f"{t.name}#{i}" for i, t in enumerate(traces)]
    hpa_cfgs = []
    tuned: dict[str, float] = {}
    for name, t in zip(members, traces, strict=True):
        say(f"tuning the HPA of {name} on its training window")
        chosen = tune_baseline("hpa", sim, t.split().train, criterion=criterion).chosen
        tuned[name] = chosen.hpa.target_utilization
        hpa_cfgs.append(decision_config(sim, chosen))
    say("measuring the tuned HPAs' peak demand without a budget")
    demand = peak_demand(sim, windows, hpa_cfgs, seeds)
    if budget_fraction is not None:
        budget_cores = round(budget_fraction * demand, 1)
    assert budget_cores is not None
    learned_cfg = decision_config(sim, BaselineConfig(kind="hpa"), learned=True)
    coord = coordinated_model if coordinated_model is not None else model
    columns: list[BudgetColumn] = []
    for seed in seeds:
        columns.append(BudgetColumn(tuple(Controller(c) for c in hpa_cfgs), "fcfs", int(seed)))
        columns.append(BudgetColumn(tuple(Controller(learned_cfg, model) for _ in windows), "fcfs", int(seed)))
        columns.append(
            BudgetColumn(tuple(Controller(learned_cfg, coord) for _ in windows), "fair", int(seed), coordinated=True)
        )
    say(f"playing {len(windows)} members x {len(columns)} budgets, {len(windows[0])} minutes each")
    budget = BudgetConfig(cpu_m=max(1, round(budget_cores * 1000)))
    if reclaim_below is not None:
        budget = budget.model_copy(update={"reclaim_below": reclaim_below})
    logs = run_budget(sim, windows, budget, columns)
    by_policy: dict[str, list[list[EpisodeLog]]] = {p: [] for p in BUDGET_POLICIES}
    for k in range(len(seeds)):
        for i, p in enumerate(BUDGET_POLICIES):
            by_policy[p].append(logs[k * len(BUDGET_POLICIES) + i])
    say("the clairvoyant floor: each member's oracle, the fewest members short per interval")
    floor = violation_floor(sim, windows, budget_cores, [int(s) for s in seeds])
    return BudgetEvaluation(budget_cores, [int(s) for s in seeds], members, windows, tuned, by_policy, demand, floor)


def format_budget(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    members = list(next(iter(report["policies"].values()))["members"])
    peak = report.get("peak_demand_cores")
    lines = [
        f"budget {report['budget_cores']} cores"
        + (f" (the tuned HPAs' peak without a budget: {peak:.1f})" if peak else "")
        + f", {report['seeds']} seed(s); members: {', '.join(members)}",
        f"{'policy':<12} {'SLO-viol min':>12} {'vs hpa':>7} {'Jain':>6} {'util':>6} {'binds':>6}  per member (min)",
    ]
    for name, p in report["policies"].items():
        ratio = p["slo_violation_ratio_vs_hpa"]
        per = ", ".join(f"{m['slo_violation_minutes']:.1f}" for m in p["members"].values())
        lines.append(
            f"{name:<12} {p['slo_violation_minutes_total']:>12.1f} {'-' if ratio is None else f'{ratio:.2f}':>7} "
            f"{p['jain_index']:>6.3f} {p['budget_utilisation']:>6.2f} {p['binding_fraction']:>6.2f}  {per}"
        )
    floor = report.get("floor")
    if floor:
        ratio = floor["slo_violation_ratio_vs_hpa"]
        lines.append(
            f"{'floor':<12} {floor['slo_violation_minutes_total']:>12.1f} {'-' if ratio is None else f'{ratio:.2f}':>7}"
            "  (clairvoyant: the fewest members short of their oracle's need per interval)"
        )
    return "\n".join(lines)


__all__ = ["BUDGET_POLICIES", "BudgetEvaluation", "evaluate_budget", "format_budget", "overlapping_windows", "peak_row"]
