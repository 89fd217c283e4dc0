"""Evaluation v2: the HPA frontier, the clairvoyant oracle, cost at matched SLO, and the JSON they make."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from random_model import random_mlp_onnx

from rlscale.policy.limits import ScalingLimits
from rlscale.policy.model import PolicyModel
from rlscale.training import evaluate as ev
from rlscale.training.cli import evaluate_cmd
from rlscale.training.frontier import HPA_STABILIZATION_S, HPA_TARGETS, hpa_grid, match, pareto
from rlscale.training.oracle import bill, run_oracle
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, generate

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def _trace(values: np.ndarray, name: str = "t") -> Trace:
    return Trace(name=name, values=values, start_s=4 * 86_400.0)


def test_the_grid_is_every_target_by_every_stabilisation_window() -> None:
    assert HPA_TARGETS[0] == 0.3 and HPA_TARGETS[-1] == 0.9 and len(HPA_TARGETS) == 13
    grid = hpa_grid()
    assert len(grid) == 39
    assert {(b.hpa.target_utilization, b.hpa.scale_down_stabilization_s) for b in grid} == {
        (t, s) for t in HPA_TARGETS for s in HPA_STABILIZATION_S
    }


def test_pareto_keeps_the_points_no_other_beats_on_both() -> None:
    pts = [
        {"slo_violation_minutes": 0.0, "replica_hours": 10.0},
        {"slo_violation_minutes": 1.0, "replica_hours": 8.0},
        {"slo_violation_minutes": 1.0, "replica_hours": 9.0},  # beaten by the one above
        {"slo_violation_minutes": 5.0, "replica_hours": 8.0},  # beaten on SLO at equal cost
        {"slo_violation_minutes": 9.0, "replica_hours": 2.0},
    ]
    assert pareto(pts) == [True, True, False, False, True]


def test_match_takes_the_cheapest_hpa_point_as_reliable_within_tolerance() -> None:
    hpa = [
        {"slo_violation_minutes": 0.0, "replica_hours": 20.0},
        {"slo_violation_minutes": 2.4, "replica_hours": 12.0},
        {"slo_violation_minutes": 6.0, "replica_hours": 8.0},
    ]
    m = match(2.0, 9.0, hpa, oracle_rh=6.0)  # 2.4 ≤ 2.0 + 0.5
    assert m["matched_hpa_replica_hours"] == 12.0
    assert m["cost_ratio"] == pytest.approx(0.75) and m["gap_closed"] == pytest.approx(0.5)
    assert not m["dominates_hpa_on_slo"]
    none = match(0.0, 30.0, hpa[1:], oracle_rh=6.0)  # more reliable than any HPA point
    assert none["cost_ratio"] is None and none["dominates_hpa_on_slo"]
    assert none["safest_hpa"] == hpa[1]


def test_billing_starts_pods_one_interval_early_and_keeps_the_step_limits() -> None:
    lim = ScalingLimits(max_replicas=50, max_scale_up_pods=2, max_scale_up_percent=0, max_scale_down_pods=1,
                        max_scale_down_percent=0)  # fmt: skip
    billed = bill([1, 1, 1, 7, 7, 1, 1], lim, start_ahead=True, first=1)
    # 7 needed in interval 3: set in interval 2 (start-up), reachable 2 pods a step from 1 → 1,3,5,7 …
    assert list(billed[:4]) == [3, 5, 7, 7]
    # … and down by one pod a step afterwards.
    assert list(billed[4:]) == [7, 6, 5]
    for a, b in itertools.pairwise(billed):
        assert -1 <= b - a <= 2


def test_oracle_pays_less_than_a_static_count_that_meets_the_slo() -> None:
    sim = SimConfig()
    window = _trace(generate("diurnal", 400, 5).values).split().test
    oracle = run_oracle(sim, window, seed=0)
    assert oracle.unavoidable_minutes <= 1.0  # at most the first interval
    assert (oracle.replicas >= oracle.needed).all()
    assert oracle.replica_hours < sim.limits.max_replicas * len(oracle.needed) / 60.0


@pytest.fixture(scope="module")
def frontier_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``evaluate --frontier --json`` on a bursty synthetic trace, every policy, two seeds."""
    folder = tmp_path_factory.mktemp("frontier")
    model = folder / "m.onnx"
    model.write_bytes(random_mlp_onnx(seed=7))
    trace = folder / "bursty.csv"
    values = generate("bursty", 800, 3).values
    trace.write_text("t_seconds,value\n" + "".join(f"{60 * i},{v:.3f}\n" for i, v in enumerate(values)))
    args = [
        "--trace",
        str(trace),
        "--model",
        str(model),
        "--seeds",
        "2",
        "--frontier",
        "--json",
        "--tune-steps",
        "4096",
    ]
    for p in ("learned", "tuned", "hpa", "static", "heuristic"):
        args += ["--policy", p]
    result = CliRunner().invoke(evaluate_cmd, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_frontier_json_schema(frontier_report: dict) -> None:
    r = frontier_report
    assert {"trace", "window", "seeds", "policies", "frontier", "oracle"} <= set(r)
    assert len(r["frontier"]["hpa"]) == 39
    for p in r["frontier"]["hpa"]:
        assert {"target_utilization", "stabilization_s", "slo_violation_minutes", "replica_hours", "pareto"} <= set(p)
        assert isinstance(p["pareto"], bool)
    assert any(p["pareto"] for p in r["frontier"]["hpa"])
    assert {"replica_hours", "slo_violation_minutes", "unavoidable_minutes"} <= set(r["oracle"])
    persistence = r["persistence"]
    assert persistence["rules"] == 240
    assert persistence["slo_cap_minutes"] == pytest.approx(r["policies"]["hpa"]["slo_violation_minutes"] + 1.0)
    for key in ("best", "best_at_hpa_slo"):
        best = persistence[key]
        assert {"multiplier", "lookback", "margin_pods", "trend", "cost_ratio", "replica_hours"} <= set(best), key
        assert best["cost_ratio"] == pytest.approx(best["replica_hours"] / best["matched_hpa_replica_hours"])
    for name, run in r["policies"].items():
        keys = {"matched_hpa_replica_hours", "cost_ratio", "gap_closed", "dominates_hpa_on_slo"}
        assert keys <= set(run), name
        if run["cost_ratio"] is not None:
            assert run["cost_ratio"] == pytest.approx(run["replica_hours"] / run["matched_hpa_replica_hours"])
    tuned = r["policies"]["tuned"]
    assert tuned["fine_tuned"] is True and tuned["models"][0].startswith("tuned:bursty:")
    assert [f["steps_done"] for f in tuned["fine_tune"]] == [4096]


def test_no_policy_run_beats_the_oracle(frontier_report: dict) -> None:
    """The floor holds: no run of any policy (or HPA grid mean) costs less with no more SLO-violation minutes."""
    r = frontier_report
    o = r["oracle"]
    points = [(p["slo_violation_minutes"], p["replica_hours"]) for p in r["frontier"]["hpa"]]
    points += [(p["slo_violation_minutes"], p["replica_hours"]) for p in r["frontier"]["static"]]
    for name, run in r["policies"].items():
        floor = o["any_cpu_limit"] if name in ("learned", "tuned") else o  # those may change CPU limits
        assert not (
            run["replica_hours_min"] < floor["replica_hours"] - 1e-9
            and run["slo_violation_minutes_max"] <= floor["slo_violation_minutes"]
        ), name
    best = r["persistence"]["best"]  # it knows only the past, so it cannot beat the floor either
    points.append((best["slo_violation_minutes"], best["replica_hours"]))
    for slo, rh in points:
        assert not (rh < o["replica_hours"] and slo <= o["slo_violation_minutes"]), (slo, rh)


@pytest.mark.slow
@pytest.mark.skipif(not TRACES.is_dir(), reason="public traces not found")
@pytest.mark.parametrize(
    "name", ["azure_functions_2019_single_fn_1d_1min", "azure_functions_2019_sample1350fn_1d_1min"]
)
def test_no_policy_beats_the_oracle_on_public_windows(name: str) -> None:
    """The same property on real traces, per seed, for the HPA grid, the static grid and the shipped model."""
    from rlscale.policy.model import DEFAULT_MODEL_PATH
    from rlscale.training.workloads import load_trace

    sim = SimConfig()
    trace = load_trace(TRACES / f"{name}.csv")
    result = ev.evaluate(
        trace, sim=sim, policies=("learned", "hpa"), models=[PolicyModel.load(DEFAULT_MODEL_PATH)],
        seeds=(0, 1), frontier=True,
    )  # fmt: skip
    per_seed = {p["seed"]: p for p in result.oracle["per_seed"]}  # type: ignore[index]
    for run in result.runs.values():
        for seed, m in run.seeded():
            o = per_seed[seed]
            cheaper = m["replica_hours"] < o["any_cpu_limit_replica_hours"] - 1e-9
            assert not (cheaper and m["slo_violation_minutes"] <= o["any_cpu_limit_unavoidable_minutes"]), (
                run.name,
                seed,
            )


def test_copy_env_makes_every_env_continue_exactly_as_the_source() -> None:
    """After ``copy_env``, envs given the same targets produce the same step as the source env (no state missed)."""
    from rlscale.training.sim import VectorSim

    sim = SimConfig(metrics_missing_prob=0.1)
    env = VectorSim(sim, generate("bursty", 300, 4).values, n_envs=3, fixed_start=True, common_noise=True, seed=2,
                    autoreset=False, episode_steps=200)  # fmt: skip
    env.reset()
    for r in ([2, 5, 9], [3, 8, 1], [4, 4, 12]):  # diverge: pods, queues, limits, cooldown clocks
        env.step_targets(np.array(r), np.array([1000, 1500, 750]), np.array([1024, 2048, 512]))
    env.copy_env(1)
    masks = env.action_masks()  # cooldown clocks and limits, as the mask sees them
    assert (masks == masks[1]).all()
    for _ in range(5):
        obs, rew, _, _, info = env.step_targets(np.array([6, 6, 6]), np.array([1250] * 3), np.array([1024] * 3))
        assert (obs == obs[1]).all() and (rew == rew[1]).all()
        for key in ("latency_p99_ms", "backlog", "ready_replicas", "oom_kills", "error_rate"):
            assert (info[key] == info[key][1]).all(), key


def test_bars_are_judged_without_the_tuned_hpa_among_the_policies() -> None:
    """`evaluate-all --frontier --policy learned` alone: the bar falls back to cost_ratio (it used to crash)."""
    from rlscale.training.report import _meets

    dominating = {"cost_ratio": 1.2, "dominates_hpa_on_slo": True, "replica_hours": 10.0}
    assert _meets(dominating, 1.0, {"replica_hours": 11.0})
    assert not _meets(dominating, 1.0, {"replica_hours": 9.0})
    assert not _meets(dominating, 1.0, None)
    assert _meets({"cost_ratio": 0.9, "dominates_hpa_on_slo": False, "replica_hours": 10.0}, 1.0, None)


def test_the_reports_show_the_persistence_oracle(frontier_report: dict) -> None:
    """`evaluate --frontier` prints it, and the evaluate-all markdown gives it a column."""
    from rlscale.training.report import frontier_summary, render_markdown

    best = frontier_report["persistence"]["best_at_hpa_slo"]
    text = frontier_summary(frontier_report)
    assert f"cost_ratio {best['cost_ratio']:.2f} within the tuned HPA's SLO + 1 min" in text
    report = {"window": "test", "models": [], "seeds": 2, "criterion": "reward", "frontier": True}
    md = render_markdown({**report, "traces": [frontier_report]})
    row = next(line for line in md.splitlines() if line.startswith("| bursty"))
    assert f"| {best['cost_ratio']:.2f} ({best['slo_violation_minutes']:.1f} min" in row
