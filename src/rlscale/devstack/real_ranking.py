"""``rlscale real-ranking``: the HPA and the learned policy on real pods, ranked against the simulator's prediction.

Two ``rlscale demo --node-kind real`` runs of one 20-minute step pattern at 1× (each
starts and tears down the whole stack, so the second starts as clean as the first): gate
``shadow``, where the HPA baseline makes every decision, and gate ``full``, where the
learned policy does. Then the simulator plays the same pattern with the same decision
configs (:mod:`rlscale.training.real_ranking`) under each service config fitted to the real
pods by ``rlscale calibrate`` (by default both fits of the committed measurements: the
fluid CPU model and the CFS-quota one), and the rankings — on SLO-violation minutes and on
replica-seconds — are set side by side. ``--from-runs`` redoes only the prediction and the
comparison from a previous run's samples (no node needed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from rlscale.devstack.demo import REAL_LIMITS, Demo, DemoOptions, demo_policy
from rlscale.devstack.realload import RealWorkload
from rlscale.operator.models import AutoscalePolicySpec
from rlscale.policy.decide import DecisionConfig
from rlscale.policy.model import DEFAULT_MODEL_PATH, PolicyModel
from rlscale.training.calibration import FitWeights, MeasurementSet, calibrate
from rlscale.training.real_ranking import (
    GATE_MODE,
    PolicyName,
    PolicyOutcome,
    RealService,
    compare,
    format_comparison,
    outcome_from_samples,
    predict,
    ranking_sim_config,
    step_pattern,
)
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import write_trace

CALIBRATION_DIR = Path(__file__).resolve().parents[3] / "docs" / "calibration"
DEFAULT_MEASUREMENTS = CALIBRATION_DIR / "measurements-2026-12-02.json"
#: ``rlscale calibrate --cpu-limit-model cfs_quota`` on those measurements (docs/simulator.md).
DEFAULT_CFS_CONFIG = CALIBRATION_DIR / "fitted-cfs-2026-12-02.json"
POLICIES: tuple[PolicyName, ...] = ("hpa", "learned")
#: The service parameters the report quotes for each simulator config.
FITTED_FIELDS = (
    "cpu_limit_model",
    "cpu_per_request_ms",
    "pod_base_cpu_m",
    "base_latency_ms",
    "cfs_dispersion",
    "startup_delay_s",
)


def decision_configs() -> dict[PolicyName, DecisionConfig]:
    """What the operator decides with in each run: the demo's own AutoscalePolicy, parsed as the operator parses it."""
    return {
        name: AutoscalePolicySpec.model_validate(
            demo_policy("http://unused", GATE_MODE[name], REAL_LIMITS)["spec"]
        ).decision_config()
        for name in POLICIES
    }


def run_real(name: PolicyName, pattern_csv: Path, out: Path, peak_rps: float, minutes: float) -> dict[str, Any]:
    """One demo run on real pods; its samples and start time, also written to ``out/<name>/samples.json``."""
    opts = DemoOptions(
        trace=pattern_csv,
        minutes=minutes,
        speed=1.0,
        start=0,
        out=out / name,
        mode=GATE_MODE[name],
        seed=None,
        nodes=1,
        node_kind="real",
        peak_rps=peak_rps,
    )
    demo = Demo(opts)
    code = demo.run()
    if code:
        raise click.ClickException(f"the {name} run was interrupted")
    workload = demo.twin
    if not isinstance(workload, RealWorkload) or not workload.samples():
        raise click.ClickException(f"the {name} run produced no samples (see {out / name / 'stack'})")
    record = {
        "policy": name,
        "gate": GATE_MODE[name],
        "peak_rps": peak_rps,
        "started_unix": time.time() - (time.monotonic() - demo.t0),
        "step_s": workload.step_s,
        "pods_created": workload.pods_seen,
        "samples": [asdict(s) for s in workload.samples()],
    }
    (out / name / "samples.json").write_text(json.dumps(record, indent=1))
    return record


def service_configs(sim_configs: tuple[Path, ...], measurements: Path) -> dict[str, SimConfig]:
    """The fitted services to predict with, by label.

    Given files, those; by default two: the measurements fitted as ``rlscale calibrate`` fits
    them by default (the fluid CPU model), and the CFS-quota fit kept next to them
    (:data:`DEFAULT_CFS_CONFIG`), so the report shows whether the ranking depends on the
    latency model.
    """
    if sim_configs:
        return {path.name: SimConfig.model_validate_json(path.read_text()) for path in sim_configs}
    data = MeasurementSet.model_validate_json(measurements.read_text())
    _, fitted = calibrate(data, weights=FitWeights())
    out = {f"fluid fit of {measurements.name}": fitted}
    if DEFAULT_CFS_CONFIG.is_file():
        out[f"CFS-quota fit ({DEFAULT_CFS_CONFIG.name})"] = SimConfig.model_validate_json(
            DEFAULT_CFS_CONFIG.read_text()
        )
    return out


@click.command("real-ranking")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/real-ranking"))
@click.option("--peak-rps", type=click.FloatRange(1, 200), default=60.0, show_default=True)
@click.option("--seeds", type=click.IntRange(1, 50), default=5, show_default=True, help="Simulator seeds.")
@click.option(
    "--sim-config",
    "sim_configs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A fitted service's SimConfig JSON (rlscale calibrate's fitted-sim-config.json); repeat for several. "
    "Default: the fluid fit of --measurements and docs/calibration's CFS-quota fit.",
)
@click.option(
    "--measurements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_MEASUREMENTS,
    show_default=True,
)
@click.option(
    "--from-runs",
    is_flag=True,
    help="Reuse OUT/hpa/samples.json and OUT/learned/samples.json instead of running the real stack.",
)
def real_ranking_cmd(
    out: Path, peak_rps: float, seeds: int, sim_configs: tuple[Path, ...], measurements: Path, from_runs: bool
) -> None:
    """Run the tuned HPA and the learned policy on real pods and compare their ranking with the simulator's."""
    out.mkdir(parents=True, exist_ok=True)
    pattern = step_pattern()
    runs: dict[PolicyName, dict[str, Any]] = {}
    if from_runs:
        for name in POLICIES:
            path = out / name / "samples.json"
            if not path.is_file():
                raise click.ClickException(f"--from-runs: {path} is missing (run without --from-runs first)")
            runs[name] = json.loads(path.read_text())
    else:
        pattern_csv = write_trace(out / "pattern.csv", pattern.values)
        minutes = len(pattern) + 1.0
        for name in POLICIES:
            gate = GATE_MODE[name]
            click.echo(f"\n==> real run: {name} (gate {gate}), {len(pattern)} min at 1×, peak {peak_rps:g}/s")
            runs[name] = run_real(name, pattern_csv, out, peak_rps, minutes)
    try:
        services = service_configs(sim_configs, measurements)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"the service config: {exc}") from exc
    configs = decision_configs()
    timed = step_pattern(start_s=float(runs["hpa"]["started_unix"]))
    real_service = RealService(peak_rps=float(runs["hpa"]["peak_rps"]))
    model = PolicyModel.load(DEFAULT_MODEL_PATH)
    real: dict[PolicyName, PolicyOutcome] = {
        name: outcome_from_samples(runs[name]["samples"], float(runs[name]["step_s"])) for name in POLICIES
    }
    comparisons: dict[str, dict[str, Any]] = {}
    tables = []
    for label, service in services.items():
        sim = ranking_sim_config(service, configs["hpa"], real_service, timed)
        comparison = compare(real, predict(sim, timed, configs, model, seeds=tuple(range(seeds))))
        comparisons[label] = {
            "service": service.model_dump(include=set(FITTED_FIELDS)),
            **comparison.model_dump(),
        }
        tables.append(f"### simulator: {label}\n\n{format_comparison(comparison)}")
    report = {
        "pattern": list(pattern.values / 100.0),
        "peak_rps": real_service.peak_rps,
        "simulator_seeds": seeds,
        "pods_created": {name: runs[name].get("pods_created") for name in POLICIES},
        "predictions": comparisons,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    text = "\n\n".join(tables)
    (out / "table.md").write_text(text + "\n")
    click.echo(f"\n{text}\n\nreport: {out / 'report.json'}")


__all__ = ["decision_configs", "real_ranking_cmd", "run_real", "service_configs"]
