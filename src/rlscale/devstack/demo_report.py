"""What ``rlscale demo`` prints and draws: the live decision line, the summary table and the plot.

Kept apart from the orchestration (:mod:`rlscale.devstack.demo`) so it is testable
without a cluster: every function here takes plain records — the twin's simulated
intervals (the service's *truth*: load, replicas, latency) and the decisions read from
the policy's status — and returns text, numbers or a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlscale.devstack.twin import TwinSample
from rlscale.operator.models import DecisionStatus

__all__ = ["DecisionRecord", "Summary", "decision_line", "format_summary", "plot", "summarize"]


#: The columns of ``decisions.csv``: when the demo saw a decision, then the decision's own fields.
_CSV_DECISION_FIELDS = (
    "source",
    "action",
    "previous_replicas",
    "replicas",
    "previous_cpu_limit_m",
    "cpu_limit_m",
    "previous_memory_limit_mib",
    "memory_limit_mib",
    "applied",
    "explanation",
)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision as the operator reported it in ``status.lastDecision``, and the simulated moment the demo saw it.

    ``decision`` is the operator's own status model, so the demo reads the fields the
    operator writes, under the operator's names, and cannot drift from them.
    """

    decision: DecisionStatus
    wall_s: float
    sim_s: float
    load_rps: float
    latency_p99_ms: float
    #: The gradual rollout's ratio (the learned policy's share) after this decision, from ``status.rollout``.
    gate_ratio: float | None = None

    @classmethod
    def from_status(
        cls,
        last: Mapping[str, Any],
        *,
        wall_s: float,
        sample: TwinSample | None,
        offset_s: float = 0.0,
        rollout: Mapping[str, Any] | None = None,
    ) -> DecisionRecord:
        """``offset_s``: where the replayed window starts in its trace, so ``sim_s`` reads as time of the trace.

        ``rollout``: the same status's ``rollout`` (its ``ratio`` is the learned policy's share).
        """
        ratio = (rollout or {}).get("ratio")
        return cls(
            decision=DecisionStatus.model_validate(last),
            wall_s=wall_s,
            sim_s=offset_s + sample.sim_s if sample else math.nan,
            load_rps=sample.load_rps if sample else math.nan,
            latency_p99_ms=sample.latency_p99_ms if sample else math.nan,
            gate_ratio=float(ratio) if isinstance(ratio, int | float) else None,
        )

    @property
    def limits_changed(self) -> bool:
        d = self.decision
        return (d.cpu_limit_m, d.memory_limit_mib) != (d.previous_cpu_limit_m, d.previous_memory_limit_mib)

    def csv_row(self) -> dict[str, Any]:
        """The row of ``decisions.csv``."""
        return {
            "number": self.decision.number,
            "wall_s": self.wall_s,
            "sim_s": self.sim_s,
            "load_rps": self.load_rps,
            "latency_p99_ms": self.latency_p99_ms,
            "gate_ratio": self.gate_ratio,
            **{name: getattr(self.decision, name) for name in _CSV_DECISION_FIELDS},
        }


def _clock(sim_s: float) -> str:
    if not math.isfinite(sim_s):
        return "  --:--"
    minutes = int(sim_s // 60)
    return f"{minutes // 60:3d}:{minutes % 60:02d}"


def decision_line(r: DecisionRecord, width: int = 60) -> str:
    """One line of the live log: wall time, simulated time, load, replicas, limits, who acted, what, why."""
    d = r.decision
    move = f"{d.previous_replicas:>2}→{d.replicas:<2}" if d.replicas != d.previous_replicas else f"{d.replicas:>2}   "
    why = d.explanation.split("; ", 2)[-1] if d.explanation else ""
    if len(why) > width:
        why = why[: width - 1] + "…"
    return (
        f"[{int(r.wall_s) // 60:02d}:{int(r.wall_s) % 60:02d}] sim{_clock(r.sim_s)}  "
        f"load {r.load_rps:7.1f} rps  p99 {r.latency_p99_ms:6.0f} ms  replicas {move}  "
        f"cpu {d.cpu_limit_m:>4}m  mem {d.memory_limit_mib:>4}Mi  {d.source:<8} {d.action:<22} {why}"
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """Headline numbers of a demo run."""

    simulated_h: float
    wall_min: float
    replicas_min: int
    replicas_max: int
    replicas_mean: float
    slo_violation_min: float
    latency_p99_mean_ms: float
    error_fraction: float
    cpu_core_hours: float
    decisions: int
    learned: int
    baseline: int
    replica_changes: int
    limit_changes: int


def summarize(
    samples: Sequence[TwinSample],
    decisions: Sequence[DecisionRecord],
    *,
    step_s: float,
    wall_s: float,
    by_source: Mapping[str, float] | None = None,
) -> Summary:
    """Summary over the simulated intervals (time-weighted: every interval lasts ``step_s``).

    ``by_source`` (the operator's ``rlscale_decisions_total`` by source) is preferred over
    counting the log, which can miss a decision if two land between polls.
    """
    if not samples:
        raise ValueError("no simulated intervals: the demo ended before the twin served a scrape")
    replicas = [s.replicas for s in samples]
    offered = sum(s.load_rps for s in samples) * step_s
    dropped = sum(s.load_rps * s.error_rate for s in samples) * step_s
    sources = [r.decision.source for r in decisions]
    learned = int(by_source.get("learned", 0)) if by_source else sources.count("learned")
    baseline = int(by_source.get("baseline", 0)) if by_source else sources.count("baseline")
    applied = [r for r in decisions if r.decision.applied]
    return Summary(
        simulated_h=len(samples) * step_s / 3600.0,
        wall_min=wall_s / 60.0,
        replicas_min=min(replicas),
        replicas_max=max(replicas),
        replicas_mean=sum(replicas) / len(replicas),
        slo_violation_min=sum(s.slo_violated for s in samples) * step_s / 60.0,
        latency_p99_mean_ms=sum(s.latency_p99_ms for s in samples) / len(samples),
        error_fraction=dropped / offered if offered > 0 else 0.0,
        cpu_core_hours=sum(s.replicas * s.cpu_limit_m for s in samples) * step_s / 3600.0 / 1000.0,
        decisions=learned + baseline,
        learned=learned,
        baseline=baseline,
        replica_changes=sum(r.decision.replicas != r.decision.previous_replicas for r in applied),
        limit_changes=sum(r.limits_changed for r in applied),
    )


def format_summary(s: Summary, *, slo_ms: float, max_error_rate: float, mode: str, ratio: float | None) -> str:
    """The summary as an aligned table."""
    rows = [
        ("simulated", f"{s.simulated_h:.1f} h in {s.wall_min:.1f} min of wall time"),
        ("replicas", f"min {s.replicas_min}   max {s.replicas_max}   mean {s.replicas_mean:.2f} (time-weighted)"),
        (
            "SLO violations",
            f"{s.slo_violation_min:.0f} simulated min of {s.simulated_h * 60:.0f} "
            f"(p99 > {slo_ms:.0f} ms or errors > {max_error_rate:.0%})",
        ),
        ("p99 latency", f"mean {s.latency_p99_mean_ms:.0f} ms; requests dropped {s.error_fraction:.2%}"),
        ("CPU allocated", f"{s.cpu_core_hours:.1f} core-hours (replicas × CPU limit)"),
        (
            "scaling actions",
            f"{s.replica_changes + s.limit_changes} applied: replicas {s.replica_changes}, limits {s.limit_changes}",
        ),
        (
            "decisions",
            f"{s.decisions}: learned {s.learned}, baseline {s.baseline} "
            f"(gate {mode}" + (f", final ratio {ratio:.2f})" if ratio is not None else ")"),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def plot(
    samples: Sequence[TwinSample],
    decisions: Sequence[DecisionRecord],
    path: Path,
    *,
    slo_ms: float,
    title: str,
    offset_s: float = 0.0,
) -> Path:
    """Load, replicas (and CPU limit) and p99 latency over simulated time, with who decided; a PNG.

    With a gradual rollout (decisions that carry a gate ratio) a fourth panel shows the
    learned policy's share over time: the gate earning it trust, or taking it away.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [(offset_s + s.sim_s) / 3600.0 for s in samples]
    ratios = [
        (r.sim_s / 3600.0, r.gate_ratio) for r in decisions if r.gate_ratio is not None and math.isfinite(r.sim_s)
    ]
    panels = 4 if ratios else 3
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.7 * panels), sharex=True, constrained_layout=True)
    ax_load, ax_rep, ax_lat = axes[:3]
    ax_load.plot(hours, [s.load_rps for s in samples], color="tab:blue", lw=1.2, label="offered load")
    ax_load.plot(hours, [s.served_rps for s in samples], color="tab:cyan", lw=0.8, label="served")
    ax_load.set_ylabel("requests/s")
    ax_load.legend(loc="upper left")
    ax_load.set_title(title)

    ax_rep.step(hours, [s.replicas for s in samples], where="post", color="tab:green", lw=1.5, label="replicas")
    ax_rep.step(hours, [s.ready_replicas for s in samples], where="post", color="tab:olive", lw=0.8, label="ready")
    for source, marker, color in (("learned", "^", "tab:purple"), ("baseline", "o", "tab:gray")):
        pts = [
            (r.sim_s / 3600.0, r.decision.replicas)
            for r in decisions
            if r.decision.source == source and math.isfinite(r.sim_s)
        ]
        if pts:
            ax_rep.scatter(
                *zip(*pts, strict=True), marker=marker, s=14, color=color, label=f"{source} decision", zorder=3
            )
    ax_rep.set_ylabel("replicas")
    ax_cpu = ax_rep.twinx()
    ax_cpu.step(hours, [s.cpu_limit_m for s in samples], where="post", color="tab:orange", lw=0.8, ls="--")
    ax_cpu.set_ylabel("CPU limit (m)", color="tab:orange")
    ax_rep.legend(loc="upper left", fontsize=8)

    ax_lat.plot(hours, [s.latency_p99_ms for s in samples], color="tab:red", lw=1.0, label="p99")
    ax_lat.plot(hours, [s.latency_p50_ms for s in samples], color="tab:pink", lw=0.8, label="p50")
    ax_lat.axhline(slo_ms, color="black", ls=":", lw=1, label=f"SLO {slo_ms:.0f} ms")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.legend(loc="upper left", fontsize=8)
    if ratios:
        ax_gate = axes[3]
        ax_gate.step(*zip(*ratios, strict=True), where="post", color="tab:purple", lw=1.5, label="gate ratio")
        ax_gate.set_ylim(-0.05, 1.05)
        ax_gate.set_ylabel("learned share")
        ax_gate.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("time in the load pattern (h)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
