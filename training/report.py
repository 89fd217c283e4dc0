"""Text renderings of evaluation results: the CLI's plain table and the markdown report.

:mod:`rlscale.training.evaluate` computes the numbers (an :class:`~rlscale.training.evaluate.Evaluation`
or the dict :func:`~rlscale.training.evaluate.evaluate_all` returns); this module only turns
them into text, so the presentation can change without touching the computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlscale.training.evaluate import HPA_FRONTIER_TARGETS, METRICS, Evaluation, aggregate


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


def render_markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables: the bar per trace, then every metric per policy."""
    w, models = report["window"], report["models"]
    lines = [
        f"Window: **{w}** (chronological 70/15/15 split); {report['seeds']} simulator seed(s) per policy"
        f"{' and model' if len(report['models']) > 1 else ''}; baselines tuned on each trace's **training** window "
        f"by `{report['criterion']}`. Values are mean ± sample std.",
        "",
        "Models: " + "; ".join(f"`{m['source']}` (seed {m['seed']}, {m['global_step']} steps)" for m in models),
        "",
        f"**Bar met on {report['bar_met']} of {report['bar_traces']} traces** (fewer SLO-violation minutes than the "
        f"tuned HPA at no more replica-hours); **attainable by any policy on {report['bar_attainable']}** (where the "
        "HPA has SLO-violation minutes that a max-capacity oracle avoids, `hpa_avoidable`).",
        "",
        "| trace | HPA target | SLO-violation min (learned / HPA) | HPA's avoidable min | replica-h (learned / HPA) | "
        "CPU core-h (learned / HPA) | bar met |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["traces"]:
        le, hp = t["policies"]["learned"], t["policies"]["hpa"]
        lines.append(
            f"| {t['trace']} | {hp['tuning']['target_utilization']:g} "
            f"| {_md_pm(le, 'slo_violation_minutes')} / {_md_pm(hp, 'slo_violation_minutes')} "
            f"| {t['bar']['hpa_avoidable_slo_minutes']:.1f} "
            f"| {_md_pm(le, 'replica_hours')} / {_md_pm(hp, 'replica_hours')} "
            f"| {_md_pm(le, 'cpu_hours')} / {_md_pm(hp, 'cpu_hours')} "
            f"| {'yes' if t['bar']['met'] else 'no' if t['bar']['attainable'] else 'no (unattainable)'} |"
        )
    lines += [
        "",
        "**At equal cost** (`hpa_at_cost`): each HPA target of "
        f"{', '.join(f'{x:g}' for x in HPA_FRONTIER_TARGETS)} replayed on the {w} window itself; the one with the "
        "fewest SLO-violation minutes among those using no more replica-hours than the learned policy — the HPA "
        "picks its target with hindsight, so this comparison favours it.",
        "",
        "| trace | learned: SLO-violation min @ replica-h | best HPA at ≤ that cost: target: SLO-violation min "
        "@ replica-h |",
        "|---|---|---|",
    ]
    for t in report["traces"]:
        le, best = t["policies"]["learned"], t["cost_matched"]["hpa_at_learned_cost"]
        hpa_text = (
            f"{best['target_utilization']:g}: {best['slo_violation_minutes']:.1f} @ {best['replica_hours']:.1f}"
            if best
            else "every target costs more"
        )
        lines.append(f"| {t['trace']} | {le['slo_violation_minutes']:.1f} @ {le['replica_hours']:.1f} | {hpa_text} |")
    for t in report["traces"]:
        lines += ["", f"### {t['trace']} [{w}]", ""]
        lines.append("| policy | tuned | " + " | ".join(h for _, h in _MD_METRICS) + " |")
        lines.append("|---|---|" + "---|" * len(_MD_METRICS))
        for name, run in t["policies"].items():
            cells = " | ".join(_md_pm(run, k) for k, _ in _MD_METRICS)
            lines.append(f"| {name} | {_knob_text(run)} | {cells} |")
    return "\n".join(lines) + "\n"


def _md_pm(run: dict[str, Any], key: str) -> str:
    mean, std = run[key], run[f"{key}_std"]
    if key == "utilisation":
        return f"{mean:.3f} ± {std:.3f}"
    digits = 0 if abs(mean) >= 1000 else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
