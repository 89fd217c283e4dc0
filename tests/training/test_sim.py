"""The simulator's contract: shapes, the policy/ interfaces it must go through, resets, seeds, evaluation runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rlscale.policy.actions import ACTIONS, N_ACTIONS
from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.policy.mask import action_mask
from rlscale.policy.reward import reward
from rlscale.policy.spec import FEATURES, N_FEATURES, RAW_COLUMNS, encode
from rlscale.training.episodes import LOG_KEYS, run_episode, run_episodes
from rlscale.training.sim import VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace, generate, load_trace, traces_dir

LO = np.array([f.lo for f in FEATURES], dtype=np.float32)
HI = np.array([f.hi for f in FEATURES], dtype=np.float32)


@pytest.fixture(scope="module")
def loads() -> list[Trace]:
    return [generate(p, 2 * 1440, seed=i) for i, p in enumerate(("diurnal", "flash_crowd", "mixed"))]


def small(**overrides: object) -> SimConfig:
    return SimConfig(**{"episode_steps": 50, **overrides})  # type: ignore[arg-type]


def random_allowed(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    return np.where(allowed, rng.random(allowed.shape), -1.0).argmax(axis=1)


def test_reset_and_step_shapes(loads: list[Trace]) -> None:
    sim = VectorSim(small(), loads, n_envs=16, seed=0)
    obs = sim.reset()
    assert obs.shape == (16, N_FEATURES) and obs.dtype == np.float32
    assert np.all((obs >= LO) & (obs <= HI))
    masks = sim.action_masks()
    assert masks.shape == (16, N_ACTIONS) and masks.dtype == bool
    obs, rew, term, trunc, info = sim.step(np.zeros(16, dtype=np.int64))
    assert obs.shape == (16, N_FEATURES)
    assert rew.shape == term.shape == trunc.shape == (16,)
    assert not term.any()
    for key in (*LOG_KEYS, "scaled_up", "scaled_down", "action", "action_allowed"):
        assert np.asarray(info[key]).shape == (16,), key
    assert set(sim.columns()) == set(RAW_COLUMNS)


def test_observations_are_policy_encoded_columns(loads: list[Trace]) -> None:
    sim = VectorSim(small(metrics_missing_prob=0.3), loads, n_envs=32, seed=1)
    obs = sim.reset()
    rng = np.random.default_rng(1)
    for _ in range(10):
        np.testing.assert_array_equal(obs, encode(sim.columns()))
        obs = sim.step(random_allowed(rng, sim.action_masks()))[0]


def test_action_masks_are_policy_mask_of_the_observed_state(loads: list[Trace]) -> None:
    sim = VectorSim(small(), loads, n_envs=32, seed=2)
    sim.reset()
    rng = np.random.default_rng(2)
    for _ in range(10):
        expected = action_mask(sim.config.limits, sim.scaling_state())
        np.testing.assert_array_equal(sim.action_masks(), expected.allowed)
        assert sim.action_masks()[:, 0].all()  # the no-op
        sim.step(random_allowed(rng, sim.action_masks()))


def test_actions_apply_the_masks_clamped_outcome(loads: list[Trace]) -> None:
    sim = VectorSim(small(), loads, n_envs=64, seed=3)
    sim.reset()
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = sim.mask_result()
        actions = rng.integers(0, N_ACTIONS, size=64)  # some forbidden on purpose
        rows = np.arange(64)
        info = sim.step(actions)[4]
        np.testing.assert_array_equal(info["replicas"], mask.replicas[rows, actions])
        np.testing.assert_array_equal(info["cpu_limit_m"], mask.cpu_limit_m[rows, actions])
        np.testing.assert_array_equal(info["memory_limit_mib"], mask.memory_limit_mib[rows, actions])
        np.testing.assert_array_equal(info["action_allowed"], mask.allowed[rows, actions])
    assert not info["action_allowed"].all()


def test_forbidden_action_is_a_noop() -> None:
    cfg = small(initial_replicas=50)  # at max_replicas: every scale-up is forbidden
    sim = VectorSim(cfg, np.full(100, 10.0), seed=0)
    sim.reset()
    up = next(a.index for a in ACTIONS if a.replica_value > 0 and not a.changes_limits)
    assert not sim.action_masks()[0, up]
    info = sim.step(np.array([up]))[4]
    assert info["replicas"][0] == 50 and not info["action_allowed"][0] and not info["replicas_changed"][0]


def test_stepping_with_or_without_asking_for_the_mask_is_the_same(loads: list[Trace]) -> None:
    """step() evaluates one column of the mask when nobody asked for all of it; both must agree."""
    a = VectorSim(small(), loads, n_envs=48, seed=4)
    b = VectorSim(small(), loads, n_envs=48, seed=4)
    a.reset()
    b.reset()
    rng = np.random.default_rng(4)
    for _ in range(60):
        actions = rng.integers(0, N_ACTIONS, size=48)
        a.action_masks()
        oa, ra, _, ta, ia = a.step(actions)
        ob, rb, _, tb, ib = b.step(actions)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ia["action_allowed"], ib["action_allowed"])


def test_reward_is_policy_reward_of_the_true_outcome(loads: list[Trace]) -> None:
    cfg = small()
    sim = VectorSim(cfg, loads, n_envs=32, seed=5)
    sim.reset()
    rng = np.random.default_rng(5)
    lim = cfg.limits
    for _ in range(10):
        _, rew, _, _, info = sim.step(random_allowed(rng, sim.action_masks()))
        expected = reward(
            cfg.objective,
            latency_p99_ms=info["latency_p99_ms"],
            error_rate=info["error_rate"],
            allocated_cpu_m=info["replicas"] * info["cpu_limit_m"],
            max_cpu_m=float(lim.max_replicas * lim.cpu_limit_max_m),
            replicas_changed=info["replicas_changed"],
            limits_changed=info["limits_changed"],
        )
        np.testing.assert_allclose(rew, expected)


def test_autoreset_returns_final_info_and_starts_a_new_episode(loads: list[Trace]) -> None:
    sim = VectorSim(small(episode_steps=5), loads, n_envs=8, seed=6)
    sim.reset()
    total = np.zeros(8)
    for step in range(5):
        obs, rew, _, trunc, info = sim.step(np.zeros(8, dtype=np.int64))
        total += rew
        assert trunc.all() == (step == 4)
    assert "final_obs" in info and info["final_obs"].shape == (8, N_FEATURES)
    assert not np.array_equal(info["final_obs"], obs)
    np.testing.assert_allclose(info["episode_return"], total)
    np.testing.assert_array_equal(info["episode_length"], 5)
    np.testing.assert_array_equal(sim.now, sim.columns()["timestamp"])  # the new episode's clock
    assert sim.step(np.zeros(8, dtype=np.int64))[3].sum() == 0


def test_episodes_play_random_windows_of_random_series(loads: list[Trace]) -> None:
    sim = VectorSim(small(episode_steps=60), loads, n_envs=200, seed=7)
    sim.reset()
    assert len(set(sim._series_idx.tolist())) == 3
    assert len(set(sim._row0.tolist())) > 100
    for i in range(200):  # every window lies inside its series
        s = sim._series_idx[i]
        assert sim._series.offset[s] <= sim._row0[i]
        assert sim._row0[i] + 60 <= sim._series.offset[s] + sim._series.length[s]


def test_short_series_give_short_episodes() -> None:
    sim = VectorSim(small(episode_steps=50), np.full(20, 5.0), n_envs=2, seed=0)
    sim.reset()
    truncs = [sim.step(np.zeros(2, dtype=np.int64))[3] for _ in range(20)]
    assert [t.all() for t in truncs] == [False] * 19 + [True]


def test_windows_keep_the_trace_clock() -> None:
    trace = Trace(name="t", values=np.ones(500), start_s=1_000_000.0)
    test_window = trace.split().test
    sim = VectorSim(small(), test_window, seed=0, fixed_start=True)
    sim.reset()
    assert sim.columns()["timestamp"][0] == 1_000_000.0 + test_window.first_row * 60


def test_same_seed_same_run_and_other_seed_other_run(loads: list[Trace]) -> None:
    def run(seed: int) -> np.ndarray:
        sim = VectorSim(small(metrics_missing_prob=0.1), loads, n_envs=8, seed=seed)
        out = [sim.reset()]
        rng = np.random.default_rng(0)
        for _ in range(30):
            out.append(sim.step(random_allowed(rng, sim.action_masks()))[0])
        return np.stack(out)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_load_and_noise_do_not_depend_on_the_actions(loads: list[Trace]) -> None:
    """Common random numbers: two policies with one seed face the same load."""
    a = VectorSim(small(), loads, n_envs=8, seed=9)
    b = VectorSim(small(), loads, n_envs=8, seed=9)
    a.reset()
    b.reset()
    grow = next(x.index for x in ACTIONS if x.replica_kind == "scale" and x.replica_value == 1.0 and x.cpu_steps == 1)
    for _ in range(30):
        ia = a.step(np.zeros(8, dtype=np.int64))[4]
        ib = b.step(np.full(8, grow))[4]
        np.testing.assert_array_equal(ia["offered"], ib["offered"])
    assert not np.array_equal(ia["replicas"], ib["replicas"])


def test_step_rejects_bad_actions(loads: list[Trace]) -> None:
    sim = VectorSim(small(), loads, n_envs=4, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros(4, dtype=np.int64))
    sim.reset()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        sim.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        sim.step(np.zeros(4))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 63\)"):
        sim.step(np.array([0, 0, 0, 63]))
    with pytest.raises(ValueError, match="replicas: must be >= 0"):
        sim.step_targets(-1, 1000, 1024)


def test_bad_loads_are_named() -> None:
    with pytest.raises(ValueError, match="at least one"):
        VectorSim(small(), [], seed=0)
    with pytest.raises(ValueError, match=r"loads\[1\].*finite and >= 0"):
        VectorSim(small(), [np.ones(10), np.array([1.0, -1.0])], seed=0)
    with pytest.raises(ValueError, match=r"loads\[0\].*all zeros"):
        VectorSim(small(), [np.zeros(10)], seed=0)
    with pytest.raises(ValueError, match="n_envs"):
        VectorSim(small(), np.ones(10), n_envs=0)


def test_sim_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="initial_replicas"):
        SimConfig(initial_replicas=100)  # default max_replicas is 50
    with pytest.raises(ValidationError, match="initial_cpu_limit_m"):
        SimConfig(initial_cpu_limit_m=8000)
    with pytest.raises(ValidationError, match="substeps"):
        SimConfig(substeps=0)
    with pytest.raises(ValidationError, match="load_scale_range"):
        SimConfig(load_scale_range=(2.0, 1.0))
    with pytest.raises(ValidationError, match="cpu_per_requst_ms"):
        SimConfig(cpu_per_requst_ms=5)  # type: ignore[call-arg]
    cfg = SimConfig()
    with pytest.raises(ValidationError):
        cfg.step_s = 30.0  # type: ignore[misc]
    assert SimConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert all(f.description for f in SimConfig.model_fields.values())


def test_load_is_scaled_to_the_target_replicas() -> None:
    cfg = SimConfig(target_replicas_p95=10, arrival_noise=0.0)
    values = np.linspace(0, 100, 1000)
    sim = VectorSim(cfg, values, seed=0)
    need = np.percentile(values, 95) * sim._series.scale[0]
    assert need == pytest.approx(10 * cfg.pod_capacity_rps(1000) * cfg.load_target_utilization)


def test_windows_are_scaled_by_the_training_window() -> None:
    """A test period busier than training stays busier in the simulator: its scale is fitted on training data."""
    values = np.r_[np.full(700, 10.0), np.full(300, 30.0)]
    split = Trace(name="t", values=values).split(0.7, 0.15, 0.15)
    cfg = SimConfig()
    scales = [VectorSim(cfg, split[w], seed=0)._series.scale[0] for w in ("train", "validation", "test", "all")]
    assert scales == [scales[0]] * 4
    own = VectorSim(cfg, Trace(name="t", values=split.test.values), seed=0)._series.scale[0]
    assert own == pytest.approx(scales[0] / 3)


def test_load_scale_range_varies_episodes() -> None:
    sim = VectorSim(SimConfig(load_scale_range=(0.5, 1.5)), np.ones(2000), n_envs=500, seed=0)
    sim.reset()
    ratio = sim._scale / sim._series.scale[0]
    assert 0.5 <= ratio.min() < 0.6 and 1.4 < ratio.max() <= 1.5


# --------------------------------------------------------------------------- evaluation runs


@dataclass
class Decider:
    """A decide() closure, as the evaluation passes one."""

    config: DecisionConfig

    def __post_init__(self) -> None:
        self.state = ControllerState.initial(self.config)
        self.seen: list[Observation] = []

    def __call__(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        decision, self.state = decide(obs, self.config, self.state)
        return decision


def test_run_episode_plays_the_whole_load_through_decide() -> None:
    cfg = SimConfig()
    load = generate("ramp", 300, seed=1)
    hpa = Decider(DecisionConfig(limits=cfg.limits, objective=cfg.objective))
    log = run_episode(cfg, load, hpa, seed=0, keep_decisions=True)
    assert len(log) == 300 and len(hpa.seen) == 300
    assert set(log.steps) == set(LOG_KEYS)
    assert all(isinstance(d, Decision) for d in log.decisions)
    assert [d.replicas for d in log.decisions] == log.steps["replicas"].tolist()
    assert log.load_name == "generated:ramp:1[all]"
    # Observations are the noisy, delayed view; the log is the truth.
    assert hpa.seen[0].timestamp == load.start_s
    assert hpa.seen[10].request_rate != log.steps["request_rate"][10]
    summary = log.summary()
    assert 0 <= summary["slo_violation_fraction"] <= 1
    assert summary["served_fraction"] + summary["dropped_fraction"] <= 1 + 1e-9
    assert summary["steps"] == 300


def test_hpa_follows_load_up_and_down() -> None:
    """Real control through the simulator: the HPA adds pods as load rises and removes them after."""
    cfg = SimConfig()
    load = np.r_[np.full(60, 10.0), np.full(120, 100.0), np.full(120, 10.0)]
    log = run_episode(cfg, load, Decider(DecisionConfig(limits=cfg.limits, objective=cfg.objective)), seed=0)
    r = log.steps["replicas"]
    assert r[170] > 3 * r[50]
    assert r[-1] < r[170] / 3


def test_run_episodes_batch_matches_single_runs() -> None:
    cfg = SimConfig()
    load = generate("flash_crowd", 400, seed=2)
    configs = [
        DecisionConfig(limits=cfg.limits, objective=cfg.objective),
        DecisionConfig(limits=cfg.limits, objective=cfg.objective, baseline=BaselineConfig(kind="static")),
        DecisionConfig(
            limits=cfg.limits,
            objective=cfg.objective,
            baseline=BaselineConfig(kind="proportional", rate_per_replica=60.0),
        ),
    ]
    batch = run_episodes(cfg, load, [Decider(c) for c in configs], seed=11)
    for c, log in zip(configs, batch, strict=True):
        single = run_episode(cfg, load, Decider(c), seed=11)
        assert single.summary() == log.summary()
    np.testing.assert_array_equal(batch[0].steps["offered"], batch[1].steps["offered"])
    assert batch[0].summary() != batch[1].summary()


def test_run_episodes_with_a_seed_per_callback_matches_single_runs() -> None:
    """Policies × seeds in one batch: each env is exactly the single run with its seed."""
    cfg = SimConfig(metrics_missing_prob=0.05, initial_memory_limit_mib=512, load_scale_range=(0.8, 1.2))
    load = generate("bursty", 300, seed=4)
    hpa = DecisionConfig(limits=cfg.limits, objective=cfg.objective)
    static = DecisionConfig(limits=cfg.limits, objective=cfg.objective, baseline=BaselineConfig(kind="static"))
    configs, seeds = [hpa, static, hpa, static], [1, 1, 2, 2]
    batch = run_episodes(cfg, load, [Decider(c) for c in configs], seed=seeds)
    for c, s, log in zip(configs, seeds, batch, strict=True):
        single = run_episode(cfg, load, Decider(c), seed=s)
        assert log.seed == s
        for key in LOG_KEYS:
            np.testing.assert_array_equal(log.steps[key], single.steps[key], err_msg=key)
    np.testing.assert_array_equal(batch[0].steps["offered"], batch[1].steps["offered"])
    assert not np.array_equal(batch[0].steps["offered"], batch[2].steps["offered"])
    with pytest.raises(ValueError, match="one seed per callback"):
        run_episodes(cfg, load, [Decider(hpa)], seed=[1, 2])


def test_env_seeds_cannot_be_replaced_on_reset() -> None:
    sim = VectorSim(SimConfig(), np.ones(100), n_envs=2, env_seeds=[3, 4])
    sim.reset()
    with pytest.raises(ValueError, match="env_seeds"):
        sim.reset(seed=1)
    with pytest.raises(ValueError, match="one seed per env"):
        VectorSim(SimConfig(), np.ones(100), n_envs=2, env_seeds=[3])


def test_run_episode_on_a_real_test_window() -> None:
    path = traces_dir() / "worldcup98_1998-06-24_7d_1min.csv"
    if not path.exists():
        pytest.skip(f"public traces not found at {path.parent} (set RLSCALE_TRACES_DIR)")
    window = load_trace(path).split().test
    cfg = SimConfig()
    log = run_episode(cfg, window, Decider(DecisionConfig(limits=cfg.limits, objective=cfg.objective)), seed=0)
    assert len(log) == len(window) == 1512
    assert log.load_name == f"{Path(path).stem}[test]"
    assert log.summary()["mean_replicas"] > 1


def test_observation_conversion_marks_unknown_as_none() -> None:
    sim = VectorSim(SimConfig(metrics_missing_prob=1.0), np.full(100, 5.0), seed=0)
    sim.reset()
    obs = sim.observation(0)
    assert obs.cpu_utilization is None and obs.request_rate is None and not obs.metrics_ok
    assert obs.replicas == sim.replicas[0] and obs.cpu_limit_m == 1000
    sim = VectorSim(SimConfig(), np.full(100, 5.0), seed=0)
    sim.reset()
    assert sim.observation(0).metrics_ok


def test_initial_replicas_range_multiplies_the_sized_start(loads: list[Trace]) -> None:
    """Exploring starts: each episode's first count is the sized one times a log-uniform draw from the range."""
    sized = VectorSim(small(), loads, n_envs=64, seed=3)
    sized.reset()
    base = sized.replicas.copy()
    doubled = VectorSim(small(initial_replicas_range=(2.0, 2.0)), loads, n_envs=64, seed=3)
    doubled.reset()
    assert np.array_equal(doubled.replicas, np.minimum(2 * base, small().limits.max_replicas))
    spread = VectorSim(small(initial_replicas_range=(1.0, 4.0)), loads, n_envs=64, seed=3)
    spread.reset()
    ratio = spread.replicas / base
    assert np.all(spread.replicas >= base) and np.all(ratio <= 4.0 + 1e-9)
    assert len(np.unique(np.round(ratio, 2))) > 10  # drawn per env, not one factor for all


def test_default_initial_replicas_range_draws_nothing(loads: list[Trace], monkeypatch: pytest.MonkeyPatch) -> None:
    """(1, 1) takes no random number at reset, so every seeded run with the default is what it was before."""
    draws: list[tuple[int, ...]] = []
    real = VectorSim._exo

    def counting(self: VectorSim, draw: object, rows: tuple[int, ...], idx: object) -> object:
        draws.append(rows)
        return real(self, draw, rows, idx)  # type: ignore[arg-type]

    monkeypatch.setattr(VectorSim, "_exo", counting)
    per_config, sims = [], []
    for scale in ((1.0, 1.0), (1.0, 1.5)):
        draws.clear()
        sims.append(VectorSim(small(initial_replicas_range=scale), loads, n_envs=8, seed=5))
        sims[-1].reset()
        per_config.append(list(draws))
    # The range's one draw per reset sits right after the (series, start, load) draw; nothing else moves.
    assert per_config[1] == [per_config[0][0], (), *per_config[0][1:]]
    default, wider = sims  # the same windows, only the count moves
    assert np.array_equal(wider._series_idx, default._series_idx) and np.array_equal(wider._row0, default._row0)


def test_initial_replicas_range_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="initial_replicas_range"):
        SimConfig(initial_replicas_range=(2.0, 1.0))
    with pytest.raises(ValidationError, match=r"initial_replicas_range.*needs initial_replicas unset"):
        SimConfig(initial_replicas=3, initial_replicas_range=(1.0, 2.0))
