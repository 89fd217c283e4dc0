"""Several simulated services in one budget (training/budget_sim.py) and ``rlscale evaluate-budget``.

The budget simulator must keep every column within its budget at every interval, leave a
member alone when the budget never binds (the same run as the member alone), and differ
between rules only where the budget binds. The CLI's JSON holds the shape the issue asks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rlscale.policy.baselines import BaselineConfig, HpaConfig
from rlscale.policy.budget import BudgetConfig
from rlscale.policy.model import DEFAULT_MODEL_PATH, PolicyModel
from rlscale.training.budget_cli import evaluate_budget_cmd
from rlscale.training.budget_eval import overlapping_windows, peak_row
from rlscale.training.budget_floor import short_members, violation_floor
from rlscale.training.budget_sim import BudgetColumn, member_seed, run_budget
from rlscale.training.episodes import Controller, run_controllers
from rlscale.training.evaluate import decision_config
from rlscale.training.oracle import run_oracles
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, generate

SIM = SimConfig()


def _loads() -> list[Trace]:
    # Two flash crowds at the same minutes: both members want capacity at once.
    return [
        Trace(name="a", values=generate("flash_crowd", 240, 1).values, start_s=86_400.0),
        Trace(name="b", values=generate("flash_crowd", 240, 1).values * 1.5, start_s=86_400.0),
    ]


def _hpa(target: float = 0.5) -> Controller:
    return Controller(decision_config(SIM, BaselineConfig(kind="hpa", hpa=HpaConfig(target_utilization=target))))


def _model() -> PolicyModel:
    return PolicyModel.load(DEFAULT_MODEL_PATH)


@pytest.mark.parametrize("cores", [14, 24])
def test_no_column_ever_holds_more_than_the_budget(cores: int) -> None:
    learned = Controller(decision_config(SIM, BaselineConfig(kind="hpa"), learned=True), _model())
    columns = [
        BudgetColumn((_hpa(), _hpa()), "fcfs", 0),
        BudgetColumn((learned, learned), "fcfs", 0),
        BudgetColumn((learned, learned), "fair", 0, coordinated=True),
    ]
    logs = run_budget(SIM, _loads(), BudgetConfig(cpu_m=cores * 1000), columns)
    for members in logs:
        held = np.sum([log.steps["cpu_allocated_m"] for log in members], axis=0)
        # Services start sized for their first minute, possibly past the budget: then never more than that.
        assert np.all(held <= max(cores * 1000, held[0])), held.max()
        assert np.all(held[held > cores * 1000] <= held[0])
    # The budget bound (the independent HPAs asked past it), so the test tests something.
    assert logs[0][0].steps["budget_binding"].any()
    assert max(np.sum([log.steps["cpu_allocated_m"] for log in m], axis=0).max() for m in logs) >= cores * 1000 - 1000


def test_a_budget_that_never_binds_leaves_each_member_as_it_would_run_alone() -> None:
    loads = _loads()
    alone = [run_controllers(SIM, load, [_hpa()], seed=member_seed(3, j))[0] for j, load in enumerate(loads)]
    together = run_budget(SIM, loads, BudgetConfig(cpu_m=10**7), [BudgetColumn((_hpa(), _hpa()), "fcfs", 3)])[0]
    for a, b in zip(alone, together, strict=True):
        assert not b.steps["budget_binding"].any()
        for key in ("replicas", "cpu_limit_m", "slo_violated", "latency_p99_ms"):
            np.testing.assert_array_equal(a.steps[key], b.steps[key], err_msg=key)


def test_rules_differ_only_when_the_budget_binds() -> None:
    loads = _loads()
    cols = [BudgetColumn((_hpa(), _hpa()), "fcfs", 0), BudgetColumn((_hpa(), _hpa()), "fair", 0)]
    roomy = run_budget(SIM, loads, BudgetConfig(cpu_m=10**7), cols)
    for j in range(2):
        np.testing.assert_array_equal(roomy[0][j].steps["replicas"], roomy[1][j].steps["replicas"])
    tight = run_budget(SIM, loads, BudgetConfig(cpu_m=24_000), cols)
    differs = any(not np.array_equal(tight[0][j].steps["replicas"], tight[1][j].steps["replicas"]) for j in range(2))
    assert differs
    assert tight[0][0].steps["refused_pods"].sum() + tight[0][1].steps["refused_pods"].sum() > 0


def test_overlapping_windows_put_every_peak_in_the_middle() -> None:
    n = 3000
    rows = np.arange(n)
    early = Trace(name="early", values=1 + 50 * np.exp(-(((rows - 2300) / 30) ** 2)))
    late = Trace(name="late", values=1 + 50 * np.exp(-(((rows - 2900) / 30) ** 2)))
    windows = overlapping_windows([early, late], window="all", hours=4)
    assert [len(w) for w in windows] == [240, 240]
    assert abs(peak_row(windows[0].values) - 120) <= 2
    assert windows[0].first_row == 2300 - 120
    # The late peak is 100 rows from the end: its window is clipped at the trace's end, the peak kept.
    assert windows[1].first_row == n - 240 and peak_row(windows[1].values) == 2900 - (n - 240)


def _write(path: Path, values: np.ndarray) -> Path:
    path.write_text("t_seconds,value\n" + "".join(f"{60 * i},{v:.3f}\n" for i, v in enumerate(values)))
    return path


def test_evaluate_budget_json_shape(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", generate("flash_crowd", 600, 2).values)
    b = _write(tmp_path / "b.csv", generate("diurnal", 600, 3).values)
    plot = tmp_path / "budget.png"
    args = ["--trace", str(a), "--trace", str(b), "--budget-cores", "12", "--seeds", "2", "--hours", "1.5"]
    result = CliRunner().invoke(evaluate_budget_cmd, [*args, "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc["budget_cores"] == 12 and doc["seeds"] == 2
    assert set(doc["policies"]) == {"hpa", "learned", "coordinated"}
    for p in doc["policies"].values():
        for key in ("slo_violation_minutes_total", "jain_index", "budget_utilisation"):
            assert isinstance(p[key], float)
        assert 0 < p["jain_index"] <= 1
        assert set(p["members"]) == {"a", "b"}
        for m in p["members"].values():
            assert m["slo_violation_minutes"] >= 0 and m["replica_hours"] > 0
        total = sum(m["slo_violation_minutes"] for m in p["members"].values())
        assert p["slo_violation_minutes_total"] == pytest.approx(total)
    assert plot.stat().st_size > 0
    assert doc["peak_demand_cores"] > 0
    # The clairvoyant floor is under every policy's total, seed by seed.
    floor = doc["floor"]["slo_violation_minutes_total_per_seed"]
    assert len(floor) == 2
    for p in doc["policies"].values():
        assert all(f <= t + 1e-9 for f, t in zip(floor, p["slo_violation_minutes_total_per_seed"], strict=True))
    relative = CliRunner().invoke(
        evaluate_budget_cmd, [*args[:4], "--budget-fraction", "0.5", "--seeds", "1", "--json"]
    )
    assert relative.exit_code == 0, relative.output
    rel = json.loads(relative.output.strip().splitlines()[-1])
    assert rel["budget_cores"] == pytest.approx(0.5 * rel["peak_demand_cores"], abs=0.05)
    one = CliRunner().invoke(evaluate_budget_cmd, ["--trace", str(a), "--budget-cores", "4"])
    assert one.exit_code != 0 and "at least two" in one.output
    both = CliRunner().invoke(evaluate_budget_cmd, [*args[:4], "--budget-cores", "4", "--budget-fraction", "0.5"])
    assert both.exit_code != 0 and "exactly one" in both.output


def test_a_model_column_remembers_what_it_was_granted_an_hpa_column_what_it_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the operator does for rlscale's policies (regrant); a plain HPA under a quota keeps its own memory."""
    import rlscale.training.budget_sim as budget_sim

    calls: list[bool] = []
    real = budget_sim.regrant

    def spy(config, state, decision, *granted):  # type: ignore[no-untyped-def]
        calls.append(decision.source == "learned")
        return real(config, state, decision, *granted)

    monkeypatch.setattr(budget_sim, "regrant", spy)
    learned = Controller(decision_config(SIM, BaselineConfig(kind="hpa"), learned=True), _model())
    hpa_logs = run_budget(SIM, _loads(), BudgetConfig(cpu_m=14_000), [BudgetColumn((_hpa(), _hpa()), "fcfs", 0)])
    assert sum(int(r) for log in hpa_logs[0] for r in log.steps["refused_pods"]) > 0  # cut, yet not regranted
    assert calls == []
    run_budget(SIM, _loads(), BudgetConfig(cpu_m=14_000), [BudgetColumn((learned, learned), "fcfs", 0)])
    assert calls and all(calls)


def test_the_floor_counts_the_fewest_members_that_must_be_short() -> None:
    needs = np.array([[1.0, 4.0, 4.0, 1.0], [2.0, 3.0, 9.0, 1.0], [5.0, 3.0, 1.0, 1.0]])
    unavoidable = np.zeros_like(needs, dtype=bool)
    unavoidable[0, 3] = True  # no allocation meets member 0's SLO here: short whatever the budget
    # Budget 6: {1,2} fit (5 short); {3,3} fit (4 short); {1,4} fit (9 short); {1,1} fit, 0 unavoidable.
    assert short_members(needs, unavoidable, 6.0).tolist() == [1, 1, 1, 1]
    assert short_members(needs, unavoidable, 100.0).tolist() == [0, 0, 0, 1]
    assert short_members(needs, unavoidable, 0.5).tolist() == [3, 3, 3, 3]


def test_the_floor_grows_as_the_budget_shrinks_and_is_the_unavoidable_minutes_without_one() -> None:
    loads = _loads()
    floors = [violation_floor(SIM, loads, cores, [0])[0] for cores in (10**6, 30, 14, 8)]
    assert floors == sorted(floors) and floors[-1] > floors[0]
    alone = sum(run_oracles(SIM, load, [0], variants=[False])[(False, 0)].unavoidable_minutes for load in loads)
    assert floors[0] == pytest.approx(alone)
