"""``rlscale train | export | evaluate | evaluate-all | reproduce``: the training side's commands.

Thin click wrappers: parse and validate input (errors name the option or the config field),
call the library, print. torch is imported inside the commands that need it, so that
``rlscale --help`` and ``rlscale evaluate`` on baselines stay fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import BaseModel, ValidationError

from rlscale.training.ppo_config import PpoConfig, TrainConfig
from rlscale.training.sim_config import SimConfig

M = TypeVar("M", bound=BaseModel)

RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"

#: Named configs; ``default`` is the one the shipped model is trained with; ``memory`` adds the gated
#: context encoder (64 wide) to it — the ablation in docs/training.md says how the two compare.
NAMED_CONFIGS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "memory": TrainConfig().model_copy(
        update={"ppo": PpoConfig.model_validate(TrainConfig().ppo.model_dump() | {"context_size": 64})}
    ),
}


def _validation_message(exc: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_model_file(path: Path, model: type[M], what: str) -> M:
    """Read a JSON or YAML file into a pydantic model; errors name the file and the field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise click.BadParameter(f"{path} is not a valid {what}:\n{_validation_message(exc)}") from exc


def load_train_config(name_or_path: str) -> TrainConfig:
    """``default`` (or another name in :data:`NAMED_CONFIGS`), or a JSON/YAML file."""
    if name_or_path in NAMED_CONFIGS:
        return NAMED_CONFIGS[name_or_path]
    path = Path(name_or_path)
    if not path.exists():
        raise click.BadParameter(
            f"{name_or_path!r} is neither a named config ({', '.join(NAMED_CONFIGS)}) nor an existing file",
            param_hint="--config",
        )
    return load_model_file(path, TrainConfig, "training config")


def _override(config: TrainConfig, **changes: Any) -> TrainConfig:
    """Apply command-line overrides through validation, so they are checked like the file."""
    data = config.model_dump(mode="json")
    for dotted, value in changes.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise click.BadParameter(f"invalid override:\n{_validation_message(exc)}") from exc


@click.command("train")
@click.option("--config", "config_name", default="default", show_default=True, help="Named config or JSON/YAML file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("policy.onnx"), show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Logs, checkpoints.")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--steps", type=int, default=None, help="Override ppo.total_steps.")
@click.option(
    "--extra-trace",
    "extra_traces",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Also train on this trace file's TRAINING window (repeatable).",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit.")
@click.option(
    "--init-from",
    "init_from",
    default=None,
    metavar="MODEL",
    help="Fine-tune this ONNX model ('default': the shipped one) on --trace instead of training from scratch.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --init-from: the workload's trace; only its chronological TRAINING window is played.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --init-from: wall-clock budget (default 5; checked between PPO updates).",
)
@click.option(
    "--violation-rate",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    help="With --init-from: this workload's SLO budget, the share of intervals allowed to break the SLO (default: "
    "the init model's, 0.01).",
)
@click.option(
    "--algo",
    type=click.Choice(["ppo", "grpo", "dqn"]),
    default="ppo",
    show_default=True,
    help="Trainer: PPO (the shipped models' pipeline, with its HPA warm start), GRPO or DQN (from scratch, in the "
    "config's world and data; docs/experiments.md).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_cmd(
    config_name: str,
    out: Path,
    run_dir: Path | None,
    seed: int | None,
    steps: int | None,
    extra_traces: tuple[str, ...],
    print_config: bool,
    init_from: str | None,
    trace_path: Path | None,
    minutes: float | None,
    violation_rate: float | None,
    algo: str,
    progress: bool,
) -> None:
    """Train a policy from scratch with PPO (or --algo grpo|dqn) in the simulator and export it to ONNX.

    The default config and seed reproduce the shipped model (make model). With --init-from
    MODEL --trace FILE, fine-tune MODEL on that one workload's training window instead
    (docs/training.md, "Fine-tuning on one workload").
    """
    fine_tuning = init_from is not None or trace_path is not None or minutes is not None or violation_rate is not None
    if algo != "ppo":
        if fine_tuning:
            raise click.UsageError(
                "--init-from, --trace, --minutes and --violation-rate fine-tune a PPO model; they need --algo ppo"
            )
        _train_algo_cmd(algo, load_train_config(config_name), out, run_dir, seed, steps, progress)
        return
    if fine_tuning:
        ctx = click.get_current_context()
        flags = {"config_name": "--config", "extra_traces": "--extra-trace", "print_config": "--print-config"}
        given = [
            flag
            for name, flag in flags.items()
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        _fine_tune_cmd(init_from, trace_path, minutes, violation_rate, out, run_dir, seed, steps, progress, given)
        return
    config = load_train_config(config_name)
    extra = tuple(str(Path(p).resolve()) for p in extra_traces) if extra_traces else None
    config = _override(config, seed=seed, **{"ppo.total_steps": steps, "data.extra_traces": extra})
    if print_config:
        click.echo(config.model_dump_json(indent=2))
        return
    from rlscale.training.export import write_model
    from rlscale.training.train import train

    run_dir = run_dir if run_dir is not None else Path("runs") / f"train-seed{config.seed}"
    click.echo(f"training: {config.ppo.total_steps} steps, seed {config.seed}, logs in {run_dir}", err=True)
    outcome = train(config, run_dir, progress=progress)
    write_model(out, outcome.onnx_bytes)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    click.echo(
        f"wrote {out} ({len(outcome.onnx_bytes) / 1024:.1f} KiB) after {outcome.ppo.global_step} steps in "
        f"{outcome.ppo.wall_seconds:.0f} s; ONNX parity {outcome.parity:.2e}"
    )


def _train_algo_cmd(
    algo: str, config: TrainConfig, out: Path, run_dir: Path | None, seed: int | None, steps: int | None, progress: bool
) -> None:
    """``rlscale train --algo grpo|dqn``: see :func:`rlscale.training.trainers.train_config_algo`."""
    from rlscale.training.export import write_model
    from rlscale.training.trainers import train_config_algo

    config = _override(config, seed=seed)
    run_dir = run_dir if run_dir is not None else Path("runs") / f"train-{algo}-seed{config.seed}"
    click.echo(f"training {algo}: seed {config.seed}, logs in {run_dir}", err=True)
    data, trained = train_config_algo(config, algo, steps=steps, out_dir=run_dir, progress=progress)  # type: ignore[arg-type]
    write_model(out, data)
    click.echo(
        f"wrote {out} ({len(data) / 1024:.1f} KiB) after {trained.global_step} steps in {trained.wall_seconds:.0f} s"
    )


def _fine_tune_cmd(
    init_from: str | None,
    trace_path: Path | None,
    minutes: float | None,
    violation_rate: float | None,
    out: Path,
    run_dir: Path | None,
    seed: int | None,
    steps: int | None,
    progress: bool,
    conflicting: list[str],
) -> None:
    """``rlscale train --init-from MODEL --trace FILE``: see :func:`rlscale.training.finetune.fine_tune`."""
    if init_from is None or trace_path is None:
        missing = "--init-from" if init_from is None else "--trace"
        raise click.UsageError(f"fine-tuning needs both --init-from MODEL and --trace FILE; {missing} is missing")
    if conflicting:
        raise click.UsageError(
            f"{', '.join(conflicting)} cannot be combined with --init-from: fine-tuning uses the init model's own "
            "training config, with the trace's training window as data"
        )
    if steps is not None and steps < 1:
        raise click.BadParameter("must be >= 1", param_hint="--steps")
    from rlscale.policy.model import DEFAULT_MODEL_PATH, ModelMismatchError, PolicyModel
    from rlscale.training.export import write_model
    from rlscale.training.finetune import FineTuneError, fine_tune
    from rlscale.training.ppo_config import FineTuneConfig
    from rlscale.training.workloads import TraceFormatError, load_trace

    try:
        init = PolicyModel.load(DEFAULT_MODEL_PATH if init_from == "default" else Path(init_from))
    except ModelMismatchError as exc:
        raise click.BadParameter(str(exc), param_hint="--init-from") from exc
    try:
        trace = load_trace(trace_path)
    except TraceFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="--trace") from exc
    seed = 0 if seed is None else seed
    run_dir = run_dir if run_dir is not None else Path("runs") / f"finetune-{trace.name}-seed{seed}"
    click.echo(f"fine-tuning {init.source} on {trace.name}'s training window, seed {seed}, logs in {run_dir}", err=True)
    try:
        config = FineTuneConfig(violation_rate=violation_rate)
        data = fine_tune(
            init, trace, minutes=minutes, seed=seed, steps=steps, config=config, run_dir=run_dir, progress=progress
        )
    except FineTuneError as exc:
        raise click.ClickException(str(exc)) from exc
    write_model(out, data)
    done = PolicyModel.from_bytes(data).training["fine_tune"]
    rows = done["trace"]["rows"]
    click.echo(
        f"wrote {out} ({len(data) / 1024:.1f} KiB): {done['steps_done']} steps ({done['updates']} updates, "
        f"{done['critic_only_updates']} critic-only) on rows {rows[0]}-{rows[1]} of {trace.name} in "
        f"{done['wall_seconds']:.0f} s (budget {done['budget_seconds']:.0f} s, stopped by {done['stopped_by']})"
    )


@click.command("export")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export_cmd(checkpoint: Path, out: Path) -> None:
    """Export a training checkpoint's actor to ONNX (with parity check and metadata)."""
    from rlscale.training.export import export_actor, write_model
    from rlscale.training.ppo import load_checkpoint

    try:
        model, data = load_checkpoint(checkpoint)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise click.BadParameter(f"{checkpoint} is not an rlscale training checkpoint: {exc}") from exc
    info = dict(data.get("training_info") or {})
    info.update({"exported_from": str(checkpoint), "update": data["update"], "global_step": data["global_step"]})
    onnx_bytes, parity = export_actor(model.policy_module(), info)
    write_model(out, onnx_bytes)
    click.echo(f"wrote {out} ({len(onnx_bytes) / 1024:.1f} KiB); ONNX parity {parity:.2e}")


def _load_model(path: Path | None) -> Any:
    from rlscale.policy.model import DEFAULT_MODEL_PATH, ModelMismatchError, PolicyModel

    target = path if path is not None else DEFAULT_MODEL_PATH
    try:
        return PolicyModel.load(target)
    except ModelMismatchError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc


def _sim_config(path: Path | None) -> SimConfig:
    return SimConfig() if path is None else load_model_file(path, SimConfig, "simulator config")


def _tune_options(command: Any) -> Any:
    """The fine-tune budget options of ``evaluate`` and ``evaluate-all`` (for ``--policy tuned``)."""
    command = click.option(
        "--tune-steps", type=click.IntRange(min=1), default=None, help="Steps of each fine-tune (default: its own)."
    )(command)
    return click.option(
        "--tune-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Wall-clock budget of each fine-tune for --policy tuned (default: rlscale train --init-from's).",
    )(command)


@click.command("evaluate")
@click.option("--trace", "trace_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["learned", "tuned", "hpa", "static", "heuristic"]),
    help="Repeatable; default: learned, hpa, static, heuristic (tuned = the model fine-tuned on the trace's "
    "training window, a few minutes per model).",
)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: shipped model.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--window", type=click.Choice(["train", "validation", "test", "all"]), default="test", show_default=True)
@click.option(
    "--tune-by",
    type=click.Choice(["reward", "slo"]),
    default="reward",
    show_default=True,
    help="Baseline tuning criterion on the training window (slo: fewest violation minutes, then replica-hours).",
)
@click.option("--sim-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@_tune_options
@click.option(
    "--frontier",
    is_flag=True,
    help="Also replay the HPA grid and the static grid on the window, compute the clairvoyant oracle, and "
    "report each policy's cost at matched SLO (cost_ratio, gap_closed).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG (with --frontier: replica-hours against SLO-violation minutes).",
)
def evaluate_cmd(
    trace_path: Path,
    policies: tuple[str, ...],
    model: Path | None,
    seeds: int,
    window: str,
    tune_by: str,
    sim_config: Path | None,
    as_json: bool,
    tune_minutes: float | None,
    tune_steps: int | None,
    frontier: bool,
    plot: Path | None,
) -> None:
    """Compare policies on one window of a trace (baselines tuned on its training window)."""
    from rlscale.training.evaluate import MODEL_POLICIES, POLICY_NAMES, evaluate
    from rlscale.training.report import format_table, frontier_summary
    from rlscale.training.workloads import TraceFormatError, load_trace

    chosen = policies or POLICY_NAMES
    try:
        trace = load_trace(trace_path)
    except TraceFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="--trace") from exc
    policy_model = _load_model(model) if any(p in MODEL_POLICIES for p in chosen) else None
    result = evaluate(
        trace,
        sim=_sim_config(sim_config),
        policies=chosen,  # type: ignore[arg-type]
        models=[policy_model] if policy_model is not None else [],
        window=window,
        seeds=range(seeds),
        criterion=tune_by,  # type: ignore[arg-type]
        frontier=frontier,
        tune_minutes=tune_minutes,
        tune_steps=tune_steps,
    )
    report = result.report()
    if plot is not None:
        from rlscale.training.plots import plot_evaluation, plot_frontier

        if frontier:
            plot_frontier(report, plot)
        else:
            plot_evaluation(result, plot)
    if as_json:
        click.echo(json.dumps(report, sort_keys=False))
        return
    click.echo(f"{trace.name} [{window}], {seeds} seed(s); baselines tuned on the training window by {tune_by}")
    click.echo(format_table(result))
    for name, run in result.runs.items():
        if run.tuned is not None:
            knob = {k: v for k, v in run.tuned.summary().items() if k not in ("grid", "tuned_on", "criterion")}
            click.echo(f"  {name}: {knob}")
    if frontier:
        click.echo(frontier_summary(report))
    if plot is not None:
        click.echo(f"plot: {plot}")


@click.command("evaluate-all")
@click.option(
    "--traces-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="Default: shared."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Repeatable (e.g. one model per training seed); default: the shipped model.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--window", type=click.Choice(["train", "validation", "test", "all"]), default="test", show_default=True)
@click.option("--tune-by", type=click.Choice(["reward", "slo"]), default="reward", show_default=True)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(["learned", "tuned", "hpa", "static", "heuristic"]),
    help="Repeatable; default: learned, hpa, static, heuristic (add tuned: it fine-tunes every model per trace).",
)
@click.option(
    "--update-doc",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"Replace the text between {RESULTS_BEGIN} and {RESULTS_END} in this markdown file with the tables.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--frontier", is_flag=True, help="Add the tuned policy, HPA frontiers, oracles and cost at matched SLO per trace."
)
@_tune_options
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: min(os.cpu_count() or 1, 4),
    show_default="CPU cores, at most 4",
    help="Traces evaluated at once, in worker processes.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --frontier: write one PNG with every trace's frontier.",
)
def evaluate_all_cmd(
    traces_dir: Path | None,
    models: tuple[Path, ...],
    seeds: int,
    window: str,
    tune_by: str,
    policies: tuple[str, ...],
    update_doc: Path | None,
    as_json: bool,
    tune_minutes: float | None,
    tune_steps: int | None,
    frontier: bool,
    jobs: int,
    plot: Path | None,
) -> None:
    """Every trace in a folder: the learned policy vs tuned baselines (with --frontier: cost at matched SLO)."""
    from rlscale.training.evaluate import POLICY_NAMES, evaluate_all
    from rlscale.training.report import render_markdown
    from rlscale.training.workloads import traces_dir as default_traces_dir

    folder = traces_dir if traces_dir is not None else default_traces_dir()
    loaded = [_load_model(m) for m in models] if models else [_load_model(None)]
    report = evaluate_all(
        sorted(folder.glob("*.csv")),
        loaded,
        sim=SimConfig(),
        window=window,
        seeds=range(seeds),
        criterion=tune_by,  # type: ignore[arg-type]
        frontier=frontier,
        policies=policies or POLICY_NAMES,  # type: ignore[arg-type]
        jobs=jobs,
        tune_minutes=tune_minutes,
        tune_steps=tune_steps,
        progress=lambda msg: click.echo(msg, err=True),
    )
    if plot is not None:
        if not frontier:
            raise click.BadParameter("--plot needs --frontier", param_hint="--plot")
        from rlscale.training.plots import plot_frontiers

        plot_frontiers(report["traces"], plot)
    text = render_markdown(report)
    if update_doc is not None:
        replace_between_markers(update_doc, text)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(text)


def replace_between_markers(path: Path, text: str) -> None:
    """Put generated text between the results markers of a hand-written document."""
    doc = path.read_text()
    begin, end = doc.find(RESULTS_BEGIN), doc.find(RESULTS_END)
    if begin < 0 or end < begin:
        raise click.BadParameter(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END} section", param_hint="--update-doc")
    path.write_text(doc[: begin + len(RESULTS_BEGIN)] + "\n" + text + doc[end:])


@click.command("reproduce")
@click.argument("name", type=click.Choice(["five-levels", "orchestration", "grpo", "actor-critic-alibaba"]))
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds (default: the experiment's own).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with a `policies` object) instead.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the training budget (env steps).")
def reproduce_cmd(name: str, seeds: int | None, as_json: bool, plot: Path | None, steps: int | None) -> None:
    """Re-run one of the papers' experiments here (docs/experiments.md); prints its table."""
    from rlscale.training.reproduce import EXPERIMENTS

    experiment = EXPERIMENTS[name]
    result = experiment.run(
        seeds if seeds is not None else experiment.default_seeds, lambda msg: click.echo(msg, err=True), steps
    )
    if plot is not None:
        experiment.plot(result, plot)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(experiment.format(result))
    if plot is not None:
        click.echo(f"plot: {plot}")


@click.command("seed000")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def seed000_cmd(ctx: click.Context, seeds: int, as_json: bool) -> None:
    """Alias of `rlscale reproduce five-levels` (the seed-000 experiment)."""
    ctx.invoke(reproduce_cmd, name="five-levels", seeds=seeds, as_json=as_json, plot=None, steps=None)
