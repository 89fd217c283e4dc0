"""Evaluation: metrics, tuned baselines that only ever see the training window, the CLI's JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from random_model import random_mlp_onnx

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.model import PolicyModel
from rlscale.training import evaluate as ev
from rlscale.training.cli import evaluate_all_cmd, evaluate_cmd
from rlscale.training.episodes import LOG_KEYS, EpisodeLog, episode_metrics
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, generate

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def _trace(values: np.ndarray, name: str = "t") -> Trace:
    return Trace(name=name, values=values, start_s=4 * 86_400.0)


def _write(path: Path, values: np.ndarray) -> Path:
    path.write_text("t_seconds,value\n" + "".join(f"{60 * i},{v:.3f}\n" for i, v in enumerate(values)))
    return path


def test_episode_metrics_units() -> None:
    n = 120  # two hours of one-minute steps
    steps = {k: np.zeros(n) for k in LOG_KEYS}
    steps.update(
        replicas=np.full(n, 3),
        cpu_allocated_m=np.full(n, 3 * 500.0),
        memory_allocated_mib=np.full(n, 3 * 1024.0),
        cpu_used_m=np.full(n, 750.0),
        served=np.full(n, 10.0),
        latency_p50_ms=np.full(n, 40.0),
        latency_p99_ms=np.linspace(0, 990, n),
        dropped=np.ones(n),
        reward=np.full(n, 0.5),
        slo_violated=np.arange(n) < 7,
        replicas_changed=np.arange(n) % 10 == 0,
        limits_changed=np.arange(n) == 5,
    )
    m = episode_metrics(EpisodeLog(seed=0, load_name="x", step_s=60.0, steps=steps))
    assert m["slo_violation_minutes"] == 7
    assert m["replica_hours"] == pytest.approx(6.0)
    assert m["cpu_hours"] == pytest.approx(3.0)
    assert m["memory_gib_hours"] == pytest.approx(6.0)
    assert m["utilisation"] == pytest.approx(0.5)
    assert m["mean_latency_ms"] == pytest.approx(40.0)
    assert m["p99_latency_ms"] == pytest.approx(np.percentile(np.linspace(0, 990, n), 99))
    assert m["dropped_requests"] == n and m["cumulative_reward"] == pytest.approx(60.0)
    assert m["scaling_actions"] == 12 + 1


def test_aggregate_reports_mean_and_sample_spread() -> None:
    agg = ev.aggregate([{"x": 1.0}, {"x": 3.0}])
    assert agg == {"x": 2.0, "x_std": pytest.approx(np.sqrt(2.0)), "x_min": 1.0, "x_max": 3.0}
    assert ev.aggregate([{"x": 1.0}])["x_std"] == 0.0


def test_tuning_refuses_any_window_but_training() -> None:
    split = _trace(generate("diurnal", 400, 0).values).split()
    for name in ("validation", "test", "all"):
        with pytest.raises(ValueError, match="training window only"):
            ev.tune_baseline("hpa", SimConfig(), split[name])


def test_tuned_baselines_cannot_see_the_test_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two traces that share their first 70 % but differ wildly afterwards tune identically,
    and every episode played while tuning lies inside the training rows."""
    base = generate("diurnal", 600, 1).values
    calm = base.copy()
    wild = base.copy()
    wild[420:] *= np.where(np.arange(180) % 20 < 10, 8.0, 0.1)  # flash crowds only after the training window
    played: list[tuple[str, int, int]] = []
    real = ev.run_controllers

    def spy(sim, load, controllers, seed=0, **kw):  # type: ignore[no-untyped-def]
        played.append((load.window, load.first_row, load.first_row + len(load)))
        return real(sim, load, controllers, seed, **kw)

    monkeypatch.setattr(ev, "run_controllers", spy)
    sim = SimConfig()
    chosen = {}
    for label, values in (("calm", calm), ("wild", wild)):
        played.clear()
        result = ev.evaluate(_trace(values), sim=sim, policies=("hpa", "static", "heuristic"), seeds=(0,))
        chosen[label] = {n: r.tuned.chosen for n, r in result.runs.items() if r.tuned is not None}
        tuning, reporting = played[:-1], played[-1]
        assert tuning and all(w == "train" and lo >= 0 and hi <= 420 for w, lo, hi in tuning)
        assert reporting == ("test", 510, 600)
    assert chosen["calm"] == chosen["wild"]


def test_tuning_picks_the_grid_point_with_the_best_criterion() -> None:
    split = _trace(generate("flash_crowd", 500, 4).values).split()
    tuned = ev.tune_baseline("hpa", SimConfig(), split.train, criterion="slo")
    keys = [(c["metrics"]["slo_violation_minutes"], c["metrics"]["replica_hours"]) for c in tuned.candidates]
    best = tuned.candidates[keys.index(min(keys))]["knob"]["target_utilization"]
    assert tuned.chosen.hpa.target_utilization == best
    assert [c["knob"]["target_utilization"] for c in tuned.candidates] == list(ev.HPA_TARGETS)


def test_every_policy_runs_through_decide_with_the_same_load() -> None:
    model = PolicyModel.from_bytes(random_mlp_onnx(seed=2))
    result = ev.evaluate(_trace(generate("weekly", 300, 3).values), sim=SimConfig(), models=[model], seeds=(0, 1))
    assert set(result.runs) == set(ev.POLICY_NAMES)
    for run in result.runs.values():
        assert len(run.per_seed) == 2
        first, second = run.logs
        np.testing.assert_array_equal(first.steps["offered"], result.runs["hpa"].logs[0].steps["offered"])
        assert not np.array_equal(first.steps["offered"], second.steps["offered"])  # seeds differ
    assert result.runs["learned"].config.gate.mode == "full"
    assert result.runs["static"].config.baseline.kind == "static"
    assert result.runs["heuristic"].config.baseline.kind == "proportional"


def test_evaluate_json_has_one_object_with_every_policy_and_metric(tmp_path: Path) -> None:
    trace = _write(tmp_path / "short.csv", generate("flash_crowd", 300, 5).values)
    model = tmp_path / "m.onnx"
    model.write_bytes(random_mlp_onnx(seed=1))
    result = CliRunner().invoke(
        evaluate_cmd, ["--trace", str(trace), "--model", str(model), "--seeds", "2", "--window", "test", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)  # exactly one JSON document
    assert set(doc) >= {"trace", "window", "seeds", "policies"}
    assert doc["trace"] == "short" and doc["window"] == "test" and doc["seeds"] == 2
    assert set(doc["policies"]) == {"learned", "hpa", "static", "heuristic"}
    for name, metrics in doc["policies"].items():
        for key in ev.METRICS:
            assert isinstance(metrics[key], float), (name, key)
            assert metrics[f"{key}_std"] >= 0.0
        if name != "learned":
            assert metrics["tuning"]["tuned_on"] == "train"


def test_evaluate_repeatable_policy_and_plot(tmp_path: Path) -> None:
    trace = _write(tmp_path / "short.csv", generate("diurnal", 200, 6).values)
    png = tmp_path / "out.png"
    args = ["--trace", str(trace), "--policy", "hpa", "--policy", "static", "--seeds", "1", "--plot", str(png)]
    result = CliRunner().invoke(evaluate_cmd, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["policies"]) == {"hpa", "static"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reports_a_bad_trace_file_by_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_seconds,value\n0,1\n60,oops\n")
    result = CliRunner().invoke(evaluate_cmd, ["--trace", str(bad), "--policy", "hpa"])
    assert result.exit_code != 0
    assert "bad.csv:3" in result.output and "oops" in result.output


def test_evaluate_refuses_a_model_for_another_spec(tmp_path: Path) -> None:
    trace = _write(tmp_path / "short.csv", generate("diurnal", 200, 6).values)
    model = tmp_path / "wrong.onnx"
    model.write_bytes(random_mlp_onnx(metadata={"rlscale.spec_hash": "0000"}))
    result = CliRunner().invoke(evaluate_cmd, ["--trace", str(trace), "--model", str(model), "--policy", "learned"])
    assert result.exit_code != 0 and "--model" in result.output and "spec" in result.output


def test_baseline_knobs_are_reported() -> None:
    assert ev.baseline_knob(BaselineConfig(kind="static", static_replicas=4)) == {"static_replicas": 4.0}
    sim = SimConfig()
    static = ev.baseline_grid("static", sim)
    assert len({b.static_replicas for b in static}) == len(static)
    assert all(sim.limits.min_replicas <= b.static_replicas <= sim.limits.max_replicas for b in static)


@pytest.mark.skipif(not TRACES.is_dir(), reason="public traces not present")
def test_public_trace_windows_are_chronological() -> None:
    from rlscale.training.workloads import load_trace

    split = load_trace(TRACES / "azure_functions_2019_single_fn_1d_1min.csv").split()
    assert (split.train.first_row, split.validation.first_row, split.test.first_row) == (0, 1008, 1224)


def test_evaluate_all_frontier_reports_cost_at_matched_slo_and_updates_the_doc(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    _write(folder / "a.csv", generate("diurnal", 200, 1).values)
    _write(folder / "b.csv", generate("bursty", 200, 2).values)
    model = tmp_path / "m.onnx"
    model.write_bytes(random_mlp_onnx(seed=3))
    doc = tmp_path / "evaluation.md"
    doc.write_text("# Title\n\nintro\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nafter\n")
    plot = tmp_path / "frontiers.png"
    policies = [x for p in ("learned", "tuned", "hpa", "static", "heuristic") for x in ("--policy", p)]
    args = ["--traces-dir", str(folder), "--model", str(model), "--seeds", "1", "--update-doc", str(doc), "--json"]
    result = CliRunner().invoke(
        evaluate_all_cmd, [*args, "--frontier", "--plot", str(plot), "--tune-steps", "4096", "--jobs", "2", *policies]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert [t["trace"] for t in report["traces"]] == ["a", "b"]
    for t in report["traces"]:
        assert set(t["policies"]) == {"learned", "tuned", "hpa", "static", "heuristic"}
        assert len(t["frontier"]["hpa"]) == 39 and t["oracle"]["replica_hours"] > 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nintro\n") and text.endswith("<!-- results:end -->\n\nafter\n")
    assert "old" not in text and "| a |" in text and "### b [test]" in text and "cost_ratio" in text
    assert plot.stat().st_size > 10_000
