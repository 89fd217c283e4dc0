"""Text renderings of evaluation results: the CLI's plain table and the markdown report.

:mod:`rlscale.training.evaluate` computes the numbers (an :class:`~rlscale.training.evaluate.Evaluation`
or the dict :func:`~rlscale.training.evaluate.evaluate_all` returns); this module only turns
them into text, so the presentation can change without touching the computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlscale.training.evaluate import METRICS, Evaluation, aggregate


def format_table(evaluation: Evaluation, metrics: Sequence[str] = METRICS) -> str:
    """A plain-text table: one row per policy, ``mean ± std`` per metric."""
    rows = [["policy", *metrics]]
    for name, run in evaluation.runs.items():
        agg = aggregate(run.per_seed)
        rows.append([name, *(_pm(agg[m], agg[f"{m}_std"]) for m in metrics)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _pm(mean: float, std: float) -> str:
    digits = 0 if abs(mean) >= 100 else 2 if abs(mean) < 10 else 1
    if math.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f}±{std:.{digits}f}"


_MD_METRICS: tuple[tuple[str, str], ...] = (
    ("slo_violation_minutes", "SLO-violation min"),
    ("replica_hours", "replica-h"),
    ("cpu_hours", "CPU core-h"),
    ("memory_gib_hours", "memory GiB-h"),
    ("mean_latency_ms", "mean latency ms"),
    ("p99_latency_ms", "p99 latency ms"),
    ("utilisation", "CPU utilisation"),
    ("dropped_requests", "dropped requests"),
    ("cumulative_reward", "cumulative reward"),
    ("scaling_actions", "scaling actions"),
)


def _knob_text(run: dict[str, Any]) -> str:
    tuning = run.get("tuning")
    if not tuning:
        return ""
    return ", ".join(f"{k}={v:g}" for k, v in tuning.items() if isinstance(v, int | float) and k != "grid")


#: The bars of the policy issue, on cost at matched SLO (docs/evaluation.md).
BARS: dict[str, float] = {"learned": 1.0, "tuned": 0.85}


def frontier_summary(evaluation: dict[str, Any]) -> str:
    """Plain text for ``evaluate --frontier``: oracle, frontier size, and each policy's cost at matched SLO."""
    o = evaluation["oracle"]
    pareto = [p for p in evaluation["frontier"]["hpa"] if p["pareto"]]
    lines = [
        f"oracle: {o['replica_hours']:.1f} replica-h, {o['unavoidable_minutes']:.1f} unavoidable SLO-violation min "
        f"(any CPU limit: {o['any_cpu_limit']['replica_hours']:.1f} replica-h)",
        f"HPA frontier: {len(pareto)} Pareto points of {len(evaluation['frontier']['hpa'])}",
    ]
    persistence = evaluation.get("persistence")
    if persistence:
        lines.append(f"persistence oracle (the past known exactly, no forecast): {_persistence_text(persistence)}")
    for name, run in evaluation["policies"].items():
        lines.append(f"  {name}: {_matched_text(run)}")
    return "\n".join(lines)


def _rule_text(best: dict[str, Any]) -> str:
    trend = ", trend" if best["trend"] else ""
    return f"×{best['multiplier']:g} max of last {best['lookback']} + {best['margin_pods']} pods{trend}"


def _persistence_text(persistence: dict[str, Any]) -> str:
    """Its best cost_ratio within the tuned HPA's SLO + 1 minute (and at any SLO), with the rule."""
    parts = []
    for key, label in (("best_at_hpa_slo", "within the tuned HPA's SLO + 1 min"), ("best", "at any SLO")):
        best = persistence.get(key)
        if best:
            parts.append(
                f"cost_ratio {best['cost_ratio']:.2f} {label} ({best['slo_violation_minutes']:.1f} min @ "
                f"{best['replica_hours']:.1f} replica-h; {_rule_text(best)})"
            )
    return "; ".join(parts) or "no rule matched the frontier"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def _matched_text(run: dict[str, Any]) -> str:
    if run.get("dominates_hpa_on_slo"):
        safest = run["safest_hpa"]
        return (
            f"fewer SLO-violation minutes than any HPA setting (safest HPA: {safest['slo_violation_minutes']:.1f} min "
            f"@ {safest['replica_hours']:.1f} replica-h)"
        )
    return (
        f"cost_ratio {_num(run['cost_ratio'])} ± {_num(run.get('cost_ratio_std'))}, "
        f"gap_closed {_num(run['gap_closed'])} (matched HPA {_num(run['matched_hpa_replica_hours'], '.1f')} replica-h)"
    )


def _ratio_cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return ""
    if run.get("dominates_hpa_on_slo"):
        return f"dominates on SLO ({run['slo_violation_minutes']:.1f} min @ {run['replica_hours']:.1f} rh)"
    return (
        f"**{_num(run['cost_ratio'])}** ± {_num(run.get('cost_ratio_std'))} / {_num(run['gap_closed'])} "
        f"({run['slo_violation_minutes']:.1f} min @ {run['replica_hours']:.1f} rh)"
    )


def _meets(run: dict[str, Any] | None, bar: float, hpa: dict[str, Any] | None) -> bool:
    """cost_ratio ≤ bar, or fewer SLO minutes than every HPA setting at no more replica-hours than the tuned HPA.

    Without the tuned HPA among the reported policies (``--policy learned`` alone) only the
    cost_ratio can be judged.
    """
    if run is None:
        return False
    if run.get("dominates_hpa_on_slo") and hpa is not None:
        return bool(run["replica_hours"] <= hpa["replica_hours"])
    return run["cost_ratio"] is not None and run["cost_ratio"] <= bar


def render_markdown(report: dict[str, Any]) -> str:
    """The results as markdown: cost at matched SLO per trace (with ``frontier``), then every metric per policy."""
    w, models = report["window"], report["models"]
    lines = [
        f"Window: **{w}** (chronological 70/15/15 split); {report['seeds']} simulator seed(s) per policy"
        f"{' and model' if len(report['models']) > 1 else ''}; baselines tuned on each trace's **training** window "
        f"by `{report['criterion']}`. Values are mean ± sample std.",
        "",
        "Models: " + "; ".join(f"`{m['source']}` (seed {m['seed']}, {m['global_step']} steps)" for m in models),
        "",
    ]
    if report.get("frontier"):
        lines += _frontier_markdown(report)
    for t in report["traces"]:
        lines += ["", f"### {t['trace']} [{w}]", ""]
        lines.append("| policy | tuned | " + " | ".join(h for _, h in _MD_METRICS) + " |")
        lines.append("|---|---|" + "---|" * len(_MD_METRICS))
        for name, run in t["policies"].items():
            cells = " | ".join(_md_pm(run, k) for k, _ in _MD_METRICS)
            lines.append(f"| {name} | {_knob_text(run)} | {cells} |")
        if report.get("frontier"):
            pareto = sorted((p for p in t["frontier"]["hpa"] if p["pareto"]), key=lambda p: p["replica_hours"])
            lines += [
                "",
                "HPA Pareto frontier (target, stabilisation s: SLO-violation min @ replica-h): "
                + "; ".join(
                    f"{p['target_utilization']:g}, {p['stabilization_s']:g}: "
                    f"{p['slo_violation_minutes']:.1f} @ {p['replica_hours']:.1f}"
                    for p in pareto
                ),
            ]
    return "\n".join(lines) + "\n"


def _frontier_markdown(report: dict[str, Any]) -> list[str]:
    traces = report["traces"]
    names = [n for n in ("learned", "tuned", "hpa", "static", "heuristic") if n in traces[0]["policies"]]
    met = {n: sum(_meets(t["policies"].get(n), b, t["policies"].get("hpa")) for t in traces) for n, b in BARS.items()}
    lines = [
        "**Cost at matched SLO** (`cost_ratio` = replica-hours ÷ those of the cheapest HPA setting, of "
        f"{len(traces[0]['frontier']['hpa'])} replayed on the {report['window']} window with hindsight, whose "
        "SLO-violation minutes are no more than the policy's + 0.5; below 1 is cheaper than any HPA as reliable. "
        "`gap_closed` = the share of the room between that HPA setting and the clairvoyant oracle that the policy "
        "takes.) Cells: **cost_ratio** ± std over runs / gap_closed (SLO-violation min @ replica-h).",
        "",
        f"Bars: `learned` cost_ratio ≤ {BARS['learned']:g} on **{met['learned']} of {len(traces)}** traces; "
        f"`tuned` ≤ {BARS['tuned']:g} on **{met['tuned']} of {len(traces)}**.",
        "",
        "`persistence` = the persistence oracle's cost_ratio (the pods each past interval needed, known exactly "
        "and at once, sized by the best of its rules with hindsight; no forecast) within the tuned HPA's SLO-violation "
        "minutes + 1: where it is above a bar, only a forecast better than persistence can reach it.",
        "",
        "| trace | oracle replica-h (unavoidable min) | tuned HPA: target, SLO min @ replica-h (÷ oracle) "
        "| persistence | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for t in traces:
        o, hpa = t["oracle"], t["policies"]["hpa"]
        lines.append(
            f"| {t['trace']} | {o['replica_hours']:.1f} ({o['unavoidable_minutes']:.1f}) "
            f"| {hpa['tuning']['target_utilization']:g}: {hpa['slo_violation_minutes']:.1f} @ "
            f"{hpa['replica_hours']:.1f} (×{hpa['replica_hours'] / o['replica_hours']:.2f}) | "
            f"{_persistence_cell(t.get('persistence'))} | "
            + " | ".join(_ratio_cell(t["policies"].get(n)) for n in names)
            + " |"
        )
    return lines


def _persistence_cell(persistence: dict[str, Any] | None) -> str:
    best = (persistence or {}).get("best_at_hpa_slo")
    if not best:
        return "—"
    return f"{best['cost_ratio']:.2f} ({best['slo_violation_minutes']:.1f} min @ {best['replica_hours']:.1f} rh)"


def _md_pm(run: dict[str, Any], key: str) -> str:
    mean, std = run[key], run[f"{key}_std"]
    if key == "utilisation":
        return f"{mean:.3f} ± {std:.3f}"
    digits = 0 if abs(mean) >= 1000 else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
