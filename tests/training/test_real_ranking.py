"""The simulator's half of the real-stack ranking (issue 12): config, prediction, verdicts, the CLI's re-run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rlscale.devstack.real_ranking import (
    DEFAULT_CFS_CONFIG,
    DEFAULT_MEASUREMENTS,
    decision_configs,
    real_ranking_cmd,
    service_configs,
)
from rlscale.policy.model import DEFAULT_MODEL_PATH, PolicyModel
from rlscale.training.real_ranking import (
    STEP_PATTERN,
    PolicyOutcome,
    RealService,
    better,
    compare,
    outcome_from_samples,
    predict,
    ranking_sim_config,
    step_pattern,
)
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace

needs_model = pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="no shipped model (make model)")


def _outcome(slo: float, rs: float) -> PolicyOutcome:
    return PolicyOutcome(slo_violation_minutes=slo, replica_seconds=rs, cpu_core_seconds=rs * 0.15, replicas_max=3)


def test_the_decision_configs_are_the_demo_policys_with_the_gate_that_makes_each_act() -> None:
    configs = decision_configs()
    assert configs["hpa"].gate.mode == "shadow" and configs["learned"].gate.mode == "full"
    assert configs["hpa"].limits == configs["learned"].limits
    assert configs["hpa"].limits.max_replicas == 6 and configs["hpa"].limits.cpu_limit_max_m == 300
    assert configs["hpa"].baseline.hpa.target_utilization == pytest.approx(0.7)


def test_the_sim_config_keeps_the_fitted_service_and_takes_the_real_runs_setting() -> None:
    service = SimConfig(cpu_per_request_ms=5.5, pod_base_cpu_m=11.0, base_latency_ms=3.0, startup_delay_s=7.6)
    pattern = step_pattern()
    decision = decision_configs()["hpa"]
    sim = ranking_sim_config(service, decision, RealService(peak_rps=60.0), pattern)
    assert (sim.cpu_per_request_ms, sim.pod_base_cpu_m, sim.base_latency_ms, sim.startup_delay_s) == (
        5.5,
        11.0,
        3.0,
        7.6,
    )
    assert sim.limits == decision.limits and sim.objective == decision.objective
    assert sim.step_s == 5.0 and sim.initial_replicas == 1 and sim.initial_cpu_limit_m == 150
    assert sim.initial_memory_limit_mib == 128 and sim.memory_base_mib < 128  # no OOM the real pods do not have
    assert float(np.max(pattern.values)) * sim.absolute_rps_per_unit == pytest.approx(60.0)  # type: ignore[operator]


def test_the_pattern_is_whole_minutes_of_fractions_of_the_peak() -> None:
    pattern = step_pattern(start_s=1_800_000_000.0)
    assert len(pattern) == len(STEP_PATTERN) == 20
    assert pattern.start_s == 1_800_000_000.0
    assert float(pattern.values.max()) == 100.0 and float(pattern.values.min()) == 25.0


@needs_model
def test_the_prediction_scales_with_the_load_and_repeats_under_the_same_seeds() -> None:
    configs = decision_configs()
    model = PolicyModel.load(DEFAULT_MODEL_PATH)
    service = SimConfig(cpu_per_request_ms=5.5, pod_base_cpu_m=11.0, startup_delay_s=7.6)
    short = Trace(name="short", values=np.array([25.0, 100.0, 100.0, 100.0, 25.0]), kind="generated")
    light = ranking_sim_config(service, configs["hpa"], RealService(peak_rps=5.0), short)
    heavy = ranking_sim_config(service, configs["hpa"], RealService(peak_rps=80.0), short)
    a = predict(heavy, short, configs, model, seeds=(0, 1))
    assert a == predict(heavy, short, configs, model, seeds=(0, 1))
    b = predict(light, short, configs, model, seeds=(0, 1))
    assert a["hpa"].replicas_max > b["hpa"].replicas_max >= 1  # the HPA scales up for 80/s, not for 5/s
    assert a["hpa"].replica_seconds > b["hpa"].replica_seconds
    for outcome in (*a.values(), *b.values()):
        assert outcome.replica_seconds == pytest.approx(outcome.replica_seconds)  # finite
        assert 0.0 <= outcome.slo_violation_minutes <= 5.0


def test_verdicts_rank_by_metric_and_call_small_differences_ties() -> None:
    hpa = _outcome(slo=5.0, rs=3000.0)
    assert better(hpa, _outcome(slo=1.0, rs=3000.0), "slo") == "learned"
    assert better(hpa, _outcome(slo=9.0, rs=3000.0), "slo") == "hpa"
    assert better(hpa, _outcome(slo=5.3, rs=3000.0), "slo") == "tie"
    assert better(hpa, _outcome(slo=5.0, rs=3500.0), "cost") == "hpa"
    assert better(hpa, _outcome(slo=5.0, rs=2500.0), "cost") == "learned"
    assert better(hpa, _outcome(slo=5.0, rs=3050.0), "cost") == "tie"
    c = compare(
        {"hpa": hpa, "learned": _outcome(slo=1.0, rs=3500.0)}, {"hpa": hpa, "learned": _outcome(slo=1.0, rs=2500.0)}
    )
    assert c.real_better == {"slo": "learned", "cost": "hpa"}
    assert c.agrees == {"slo": True, "cost": False}


def test_a_real_runs_outcome_sums_its_samples_as_the_simulator_sums_intervals() -> None:
    samples = [
        {"slo_violated": True, "replicas": 2, "cpu_limit_m": 150},
        {"slo_violated": False, "replicas": 3, "cpu_limit_m": 300},
    ]
    out = outcome_from_samples(samples, step_s=5.0)
    assert out.slo_violation_minutes == pytest.approx(5.0 / 60.0)
    assert out.replica_seconds == 25.0
    assert out.cpu_core_seconds == pytest.approx((2 * 0.15 + 3 * 0.3) * 5.0)
    assert out.replicas_max == 3 and out.replica_changes == 1
    with pytest.raises(ValueError, match="no samples"):
        outcome_from_samples([], step_s=5.0)


def _fake_run(path: Path, policy: str, replicas: int, violated: int) -> None:
    samples = [
        {"slo_violated": i < violated, "replicas": replicas, "cpu_limit_m": 150, "wall_s": 5.0 * i} for i in range(240)
    ]
    path.mkdir(parents=True)
    record = {"policy": policy, "peak_rps": 60.0, "started_unix": 1.8e9, "step_s": 5.0, "samples": samples}
    (path / "samples.json").write_text(json.dumps(record))


@needs_model
def test_from_runs_compares_saved_real_runs_with_the_prediction(tmp_path: Path) -> None:
    _fake_run(tmp_path / "hpa", "hpa", replicas=2, violated=60)
    _fake_run(tmp_path / "learned", "learned", replicas=4, violated=0)
    config = tmp_path / "service.json"
    config.write_text(SimConfig(cpu_per_request_ms=5.5, pod_base_cpu_m=11.0, startup_delay_s=7.6).model_dump_json())
    result = CliRunner().invoke(
        real_ranking_cmd, ["--out", str(tmp_path), "--from-runs", "--seeds", "1", "--sim-config", str(config)]
    )
    assert result.exit_code == 0, result.output
    (label, report), *others = json.loads((tmp_path / "report.json").read_text())["predictions"].items()
    assert label == "service.json" and not others
    assert report["real"]["hpa"]["slo_violation_minutes"] == pytest.approx(5.0)
    assert report["real"]["learned"]["replica_seconds"] == pytest.approx(4 * 240 * 5.0)
    assert report["real_better"] == {"slo": "learned", "cost": "hpa"}
    assert report["service"]["cpu_per_request_ms"] == 5.5
    assert set(report["agrees"]) == {"slo", "cost"} and "| better on |" in (tmp_path / "table.md").read_text()


def test_from_runs_without_saved_runs_says_which_file_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(real_ranking_cmd, ["--out", str(tmp_path), "--from-runs"])
    assert result.exit_code != 0
    assert "hpa/samples.json is missing" in result.output


def test_by_default_it_predicts_with_both_fits_of_the_committed_measurements() -> None:
    services = service_configs((), DEFAULT_MEASUREMENTS)
    assert len(services) == 2 and DEFAULT_CFS_CONFIG.is_file()
    fluid, cfs = services.values()
    assert fluid.cpu_limit_model == "fluid" and cfs.cpu_limit_model == "cfs_quota"
