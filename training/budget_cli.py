"""``rlscale evaluate-budget``: several traces, one capacity budget, three ways of sharing it.

Kept apart from :mod:`rlscale.training.cli` (the single-service commands); the work is in
:mod:`rlscale.training.budget_eval`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from rlscale.training.sim_config import SimConfig


def _trace_path(value: str) -> Path:
    """A file path, or the name of a file in the shared traces folder (with or without ``.csv``)."""
    from rlscale.training.workloads import traces_dir

    path = Path(value)
    if path.is_file():
        return path
    for candidate in (traces_dir() / value, traces_dir() / f"{value}.csv"):
        if candidate.is_file():
            return candidate
    raise click.BadParameter(f"{value}: no such file, here or in {traces_dir()}", param_hint="--trace")


@click.command("evaluate-budget")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    required=True,
    help="Repeatable, at least twice: a trace file, or a file name in the shared traces folder.",
)
@click.option("--budget-cores", type=click.FloatRange(min=0.001), default=None, help="CPU cores the members share.")
@click.option(
    "--budget-fraction",
    type=click.FloatRange(min=0.01, max=10),
    default=None,
    help="Instead of --budget-cores: this share of what the tuned HPAs hold together at the peak without a budget.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--window", type=click.Choice(["train", "validation", "test", "all"]), default="test", show_default=True)
@click.option(
    "--hours", type=click.FloatRange(min=0.1), default=6.0, show_default=True, help="Played around the peaks."
)
@click.option("--tune-by", type=click.Choice(["reward", "slo"]), default="reward", show_default=True)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: shipped.")
@click.option(
    "--coordinated-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The coordinated agents' model (default: --model).",
)
@click.option(
    "--reclaim-below",
    type=click.FloatRange(0, 1),
    default=None,
    help="Coordinated: take pods back only from members whose pressure stays under this (0: never). Default 0.8.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG.")
def evaluate_budget_cmd(
    traces: tuple[str, ...],
    budget_cores: float | None,
    budget_fraction: float | None,
    seeds: int,
    window: str,
    hours: float,
    tune_by: str,
    model: Path | None,
    coordinated_model: Path | None,
    reclaim_below: float | None,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Independent tuned HPAs vs independent learned policies vs coordinated agents in one budget."""
    from rlscale.training.budget_eval import evaluate_budget, format_budget
    from rlscale.training.cli import _load_model
    from rlscale.training.workloads import load_trace

    if len(traces) < 2:
        raise click.BadParameter(
            "give at least two traces: a budget is shared by several services", param_hint="--trace"
        )
    if (budget_cores is None) == (budget_fraction is None):
        raise click.BadParameter(
            "give exactly one of --budget-cores and --budget-fraction", param_hint="--budget-cores"
        )
    loaded = [load_trace(_trace_path(t)) for t in traces]
    result = evaluate_budget(
        loaded,
        budget_cores,
        sim=SimConfig(),
        model=_load_model(model),
        coordinated_model=_load_model(coordinated_model) if coordinated_model is not None else None,
        reclaim_below=reclaim_below,
        budget_fraction=budget_fraction,
        seeds=range(seeds),
        window=window,
        hours=hours,
        criterion=tune_by,  # type: ignore[arg-type]
        progress=lambda msg: click.echo(msg, err=True),
    )
    report = result.report()
    if plot is not None:
        from rlscale.training.budget_plot import plot_budget

        plot_budget(result, plot)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(format_budget(report))
    if plot is not None:
        click.echo(f"plot: {plot}")


@click.command("train-budget")
@click.option("--trace", "traces", multiple=True, required=True, help="Repeatable, at least twice: the members.")
@click.option("--budget-cores", type=click.FloatRange(min=0.001), required=True, help="CPU cores the members share.")
@click.option("--minutes", type=click.FloatRange(min=0.01), default=10.0, show_default=True, help="Wall-clock budget.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--groups", type=click.IntRange(min=1), default=8, show_default=True, help="Budgets played at once.")
@click.option("--fairness-weight", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: shipped.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The ONNX model to write.")
def train_budget_cmd(
    traces: tuple[str, ...],
    budget_cores: float,
    minutes: float,
    seed: int,
    groups: int,
    fairness_weight: float,
    init_from: Path | None,
    out: Path,
) -> None:
    """Train the coordinated agents (shared parameters, fairness term) on the traces' training windows."""
    from rlscale.training.budget_train import train_coordinated
    from rlscale.training.cli import _load_model
    from rlscale.training.export import write_model
    from rlscale.training.workloads import load_trace

    if len(traces) < 2:
        raise click.BadParameter(
            "give at least two traces: a budget is shared by several services", param_hint="--trace"
        )
    data = train_coordinated(
        _load_model(init_from),
        [load_trace(_trace_path(t)) for t in traces],
        budget_cores,
        minutes=minutes,
        seed=seed,
        groups=groups,
        fairness_weight=fairness_weight,
        progress=lambda msg: click.echo(msg, err=True),
    )
    write_model(out, data)
    click.echo(f"wrote {out}")
