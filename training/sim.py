"""A vectorised simulator of a Kubernetes Deployment under load, for training and evaluation.

:class:`VectorSim` advances ``n_envs`` independent services at once with numpy: one
decision interval per :meth:`VectorSim.step`, integrated in ``SimConfig.substeps``
sub-steps. It deliberately owns only the *world* — pods, queues, memory, the metrics
pipeline — and takes everything a policy sees or is judged by from :mod:`rlscale.policy`:

* observations are built as raw columns and encoded by the spec
  (:func:`rlscale.policy.spec.encode_matrix`, the function :func:`~rlscale.policy.spec.encode` calls);
* an action index becomes a target only through the safety mask's clamped outcome
  (:func:`rlscale.policy.mask.action_mask` / :func:`rlscale.policy.mask.check`);
* the reward is :func:`rlscale.policy.reward.reward` of the interval's true outcome.

So a policy trained here meets in the cluster exactly the encoding, limits and objective
it was trained with. :func:`run_episode` plays any decision callback — the learned policy,
the HPA, a static count, all through :func:`rlscale.policy.decide.decide` — through the
same world, which is what makes the evaluation's comparison fair.

Randomness comes from two generators: one for exogenous noise (arrivals, metric noise,
scrape gaps, episode windows) whose draws never depend on the policy, one for what the
policy causes (how many pods an OOM kills, rounded stochastically). Two policies run with
the same seed therefore face the same load and the same measurement noise (common random
numbers); in evaluation (``common_noise`` / ``env_seeds``) envs draw per seed, so a batch
reproduces single runs exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rlscale.policy.actions import N_ACTIONS, propose_replicas
from rlscale.policy.mask import MaskResult, ScalingState, action_mask, action_proposals, check
from rlscale.policy.observation import FIELD_SOURCES, MEASURED_FIELDS, METRIC_FIELDS, Observation, measured_source
from rlscale.policy.reward import reward, slo_violated
from rlscale.policy.spec import CORE_METRICS, N_FEATURES, RAW_COLUMNS, encode_matrix
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import TRACE_STEP_S, Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
LoadLike = Trace | npt.ArrayLike

# The metrics pipeline's history ring holds one row per measured observation field
# (rlscale.policy.observation.MEASURED_FIELDS), in this order: the order is part of the
# noise stream (one draw per metric per interval), so new metrics are appended.
_RING: tuple[str, ...] = (
    "request_rate",
    "cpu_utilization",
    "memory_utilization",
    "latency_p50_ms",
    "latency_p99_ms",
    "error_rate",
    "queue_per_replica",
)
_M_RATE, _M_CPU, _M_MEM, _M_P50, _M_P99, _M_ERR, _M_QUEUE = range(7)
_N_METRICS = len(_RING)
if set(_RING) != set(MEASURED_FIELDS):
    raise ImportError(
        "the simulator's metrics pipeline must provide exactly the measured observation fields: "
        f"missing {sorted(set(MEASURED_FIELDS) - set(_RING))}, unknown {sorted(set(_RING) - set(MEASURED_FIELDS))}"
    )
_LN2 = math.log(2.0)
_LN100 = math.log(100.0)
_OOM_LOGIT = 1.702  # logistic approximation of the normal CDF
# Abramowitz & Stegun 7.1.26: erfc(x) ≈ poly(t)·exp(−x²), t = 1/(1 + p·x), |error| < 1.5e-7 (numpy has no erf).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


_Draw = Callable[[np.random.Generator, tuple[int, ...]], Any]


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
    return rng.standard_normal(shape)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
    return rng.random(shape)


def _normal_cdf(z: FloatArray) -> FloatArray:
    """Φ(z), vectorised, from Abramowitz & Stegun's erfc (absolute error below 1e-7; numpy has no erf)."""
    x = np.abs(z) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + _AS_P * x)
    a1, a2, a3, a4, a5 = _AS_A
    half_erfc = 0.5 * t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * np.exp(-x * x)
    return np.asarray(np.where(z >= 0, 1.0 - half_erfc, half_erfc), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Series:
    """The load series, flattened into one array so each env indexes it without Python loops."""

    flat: FloatArray  # every series' values, concatenated
    offset: IntArray  # (S,) first row of each series in flat
    length: IntArray  # (S,) rows
    start_s: FloatArray  # (S,) unix time of each series' row 0
    scale: FloatArray  # (S,) requests/s per unit of value
    names: tuple[str, ...]


def _as_series(config: SimConfig, loads: LoadLike | Sequence[LoadLike]) -> _Series:
    single = isinstance(loads, Trace) or (isinstance(loads, np.ndarray) and loads.ndim == 1)
    items: list[Any] = [loads] if single else list(loads)  # type: ignore[arg-type]
    if not items:
        raise ValueError("loads: give at least one load series")
    values, starts, names, refs = [], [], [], []
    for i, item in enumerate(items):
        ref: float | None = None
        if isinstance(item, Trace):
            v, start, name, ref = item.values, item.start_s, f"{item.name}[{item.window}]", item.reference_p95
        else:
            v = np.asarray(item, dtype=np.float64)
            start, name = 0.0, f"loads[{i}]"
        if v.ndim != 1 or v.size < 1:
            raise ValueError(f"loads[{i}] ({name}): must be a non-empty 1-D series, got shape {v.shape}")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"loads[{i}] ({name}): values must be finite and >= 0")
        values.append(v)
        starts.append(start)
        names.append(name)
        refs.append(ref)
    per_replica = config.pod_capacity_rps(config.initial_cpu_limit_m) * config.load_target_utilization
    scales = []
    for v, name, given in zip(values, names, refs, strict=True):
        if config.absolute_rps_per_unit is not None:
            scales.append(config.absolute_rps_per_unit)
            continue
        level = given if given is not None else (float(np.percentile(v, 95)) or float(v.max()))
        if level <= 0:
            raise ValueError(f"{name}: the series is all zeros, so there is no load to scale onto the service")
        scales.append(config.target_replicas_p95 * per_replica / level)
    lengths = np.array([v.size for v in values], dtype=np.int64)
    return _Series(
        flat=np.concatenate(values),
        offset=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        length=lengths,
        start_s=np.array(starts, dtype=np.float64),
        scale=np.array(scales, dtype=np.float64),
        names=tuple(names),
    )


class VectorSim:
    """``n_envs`` simulated Deployments stepped together; see the module docstring.

    ``loads`` is one series or a list of them (:class:`~rlscale.training.workloads.Trace`
    objects keep their clock; plain arrays start at unix time 0). Each episode plays a
    random window of ``episode_steps`` decisions of a random series (uniform over series);
    a series shorter than that is played whole, so its episodes are shorter.
    ``fixed_start=True`` starts every episode at row 0 (evaluation). ``common_noise=True``
    gives every env the same random draws (series, window, load multiplier, arrival and
    metric noise, scrape gaps, OOM rounding) — the same as a single env with that seed —
    so policies compared side by side face identical conditions. ``env_seeds`` generalises
    it: env ``i`` draws as a single env seeded ``env_seeds[i]`` would, and envs with equal
    seeds share draws (several policies × several seeds in one batch).

    With ``autoreset`` (the default, as gymnasium vector envs in same-step mode), an env
    whose episode ended is reset inside :meth:`step`: the returned observation is the new
    episode's first, and ``info["final_obs"]`` holds the last one of the old episode; the
    other ``info`` entries describe the step that ended it. Without it, an ended env keeps
    playing the last row of its series until :meth:`reset`.
    """

    def __init__(
        self,
        config: SimConfig,
        loads: LoadLike | Sequence[LoadLike],
        n_envs: int = 1,
        seed: int | None = None,
        *,
        autoreset: bool = True,
        fixed_start: bool = False,
        common_noise: bool = False,
        env_seeds: Sequence[int] | None = None,
        episode_steps: int | None = None,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if env_seeds is not None and len(env_seeds) != n_envs:
            raise ValueError(f"env_seeds: expected one seed per env ({n_envs}), got {len(env_seeds)}")
        self._env_seeds = tuple(int(x) for x in env_seeds) if env_seeds is not None else None
        self.config = config
        self.n_envs = n_envs
        self.autoreset = autoreset
        self.fixed_start = fixed_start
        self.common_noise = common_noise
        self.episode_steps = episode_steps if episode_steps is not None else config.episode_steps
        if self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {self.episode_steps}")
        self._series = _as_series(config, loads)
        lim = config.limits
        n = n_envs
        self._delay = config.startup_substeps
        # An OOM-killed container restarts after the kubelet's back-off, then starts up again.
        self._oom_delay = max(math.ceil((config.startup_delay_s + config.oom_backoff_s) / config.dt_s - 1e-9), 1)
        self._ring = max(self._delay, self._oom_delay) + 1
        # Each metric field reads one ring row, ``lag`` intervals before the latest scrape
        # (lagged fields such as the trend references: at least one interval back).
        self._metric_sources = [
            (_RING.index(src_name), max(1, math.ceil(offset / config.step_s - 1e-9)) if offset > 0 else 0)
            for src_name, offset in map(measured_source, METRIC_FIELDS)
        ]
        self._hist_len = config.scrape_delay_steps + max(lag for _, lag in self._metric_sources) + 1
        self._max_cpu_m = float(lim.max_replicas * lim.cpu_limit_max_m)
        # Proposals come from policy's table: replica moves for every count the limits allow,
        # and each action's CPU/memory step read off a state at zero.
        self._proposals = propose_replicas(np.arange(lim.max_replicas + 1, dtype=np.int64))
        zero = ScalingState.single(
            replicas=0,
            cpu_limit_m=0,
            memory_limit_mib=0,
            metrics_ok=True,
            memory_utilization=None,
            now=0.0,
            last_scale_up_at=None,
            last_scale_down_at=None,
            last_limit_change_at=None,
        )
        _, dc, dm = action_proposals(lim, zero)
        self._cpu_delta, self._mem_delta = dc[0].astype(np.int64), dm[0].astype(np.int64)
        # Rows of the trace advance by a whole number per decision when step_s is a multiple of 60 s.
        self._rows_per_step = int(config.step_s // TRACE_STEP_S) if config.step_s % TRACE_STEP_S == 0 else 0

        # Per-env episode bookkeeping.
        self._series_idx = np.zeros(n, dtype=np.int64)
        self._row0 = np.zeros(n, dtype=np.int64)  # flat index of the episode's first row
        self._row_last = np.zeros(n, dtype=np.int64)  # flat index of the series' last row
        self._ep_len = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)  # decisions taken this episode
        self._start_s = np.zeros(n, dtype=np.float64)
        self._scale = np.zeros(n, dtype=np.float64)
        self._ep_return = np.zeros(n, dtype=np.float64)
        # The Deployment.
        self.replicas = np.zeros(n, dtype=np.int64)
        self.cpu_limit_m = np.zeros(n, dtype=np.int64)
        self.memory_limit_mib = np.zeros(n, dtype=np.int64)
        self._ready = np.zeros(n, dtype=np.float64)
        self._pending = np.zeros((self._ring, n), dtype=np.float64)  # pods becoming ready, by sub-step slot
        self._backlog = np.zeros(n, dtype=np.float64)
        self._inflight = np.zeros(n, dtype=np.float64)  # requests being served, whole Deployment
        self._serving = np.zeros(n, dtype=np.float64)
        self._rollout_left_s = np.zeros(n, dtype=np.float64)
        self._last_up = np.full(n, np.nan)
        self._last_down = np.full(n, np.nan)
        self._last_limit = np.full(n, np.nan)
        # Per-pod service parameters, derived from the CPU limit by _capacity().
        self._mu_pod = np.zeros(n)  # requests/s
        self._s_ms = np.zeros(n)  # mean service time of one request
        self._s_over_c = np.zeros(n)  # s / servers: the M/M/c waiting-time scale
        self._expo = np.zeros(n)  # Sakasegawa's exponent √(2(c+1)) − 1
        # The CFS-quota term's per-pod parameters (cpu_limit_model "cfs_quota" only; zero otherwise).
        self._k_fast = np.zeros(n)  # min(k, 1): a full-speed worker's utilisation per unit of quota utilisation
        self._cfs_n = np.zeros(n)  # requests one period's quota holds, over the dispersion: k·P / (s·d)
        self._cfs_gap_ms = np.zeros(n)  # the part of a period a pod with a spent quota is stopped: P·(1 − k)
        self._cfs_ht_ms = np.zeros(n)  # the backlog-across-periods scale: (1 − k)·d·s / (2k)
        # What the metrics pipeline recorded for past intervals (noise applied once, when recorded).
        self._seen = np.zeros((self._hist_len, _N_METRICS, n), dtype=np.float64)
        self._g_step = 0
        self._g_sub = 0
        # Raw observation columns of the current state, as one matrix in RAW_COLUMNS order.
        self._raw = np.full((len(RAW_COLUMNS), n), np.nan)
        self._cols: dict[str, FloatArray] = {name: self._raw[i] for i, name in enumerate(RAW_COLUMNS)}
        self._cols["slo_ms"][:] = config.objective.latency_slo_ms
        self._cols["max_replicas"][:] = lim.max_replicas
        self._cols["cpu_limit_max_m"][:] = lim.cpu_limit_max_m
        self._cols["memory_limit_max_mib"][:] = lim.memory_limit_max_mib
        self._metric_rows = np.array([RAW_COLUMNS.index(name) for name in METRIC_FIELDS], dtype=np.intp)
        self._obs = np.zeros((n, N_FEATURES), dtype=np.float32)
        self._mask: MaskResult | None = None
        self._seed(seed)
        self._needs_reset = True

    # ------------------------------------------------------------------ public API
    @property
    def series_names(self) -> tuple[str, ...]:
        return self._series.names

    @property
    def now(self) -> FloatArray:
        """Unix time of the current decision, per env."""
        return self._start_s + self._t * self.config.step_s

    @property
    def episode_lengths(self) -> IntArray:
        """Decisions in each env's current episode."""
        return self._ep_len.copy()

    def reset(self, seed: int | None = None) -> npt.NDArray[np.float32]:
        """Start a new episode in every env; returns observations ``(n_envs, N_FEATURES)``."""
        if seed is not None:
            if self._env_seeds is not None:
                raise ValueError("reset(seed=...): this simulator was built with env_seeds; they cannot be replaced")
            self._seed(seed)
        self._reset_envs(np.arange(self.n_envs))
        self._needs_reset = False
        self._observe()
        return self._obs.copy()

    def columns(self) -> dict[str, FloatArray]:
        """The raw columns (:data:`rlscale.policy.spec.RAW_COLUMNS`) of the current observation."""
        return {k: v.copy() for k, v in self._cols.items()}

    def scaling_state(self) -> ScalingState:
        """The mask's view of the current state: observed metrics, exact spec, cooldown clocks."""
        c = self._cols
        metrics_ok = np.ones(self.n_envs, dtype=bool)
        for name in CORE_METRICS:
            metrics_ok &= ~np.isnan(c[name])
        return ScalingState(
            replicas=self.replicas.copy(),
            cpu_limit_m=self.cpu_limit_m.copy(),
            memory_limit_mib=self.memory_limit_mib.copy(),
            metrics_ok=metrics_ok,
            memory_utilization=c["memory_utilization"].copy(),
            now=self.now,
            last_scale_up_at=self._last_up.copy(),
            last_scale_down_at=self._last_down.copy(),
            last_limit_change_at=self._last_limit.copy(),
        )

    def mask_result(self) -> MaskResult:
        """The safety mask over every action for the current state (computed once per state)."""
        self._check_ready()
        if self._mask is None:
            self._mask = action_mask(self.config.limits, self.scaling_state())
        return self._mask

    def action_masks(self) -> BoolArray:
        """Which actions the safety mask allows now, ``(n_envs, N_ACTIONS)``; column 0 (no-op) is always True."""
        return self.mask_result().allowed

    def step(
        self, actions: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float32], FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        """Apply one action index per env, simulate one interval; gymnasium vector-env returns.

        A forbidden action is applied as the mask applies it: as the current value (a
        no-op), and ``info["action_allowed"]`` is False for it.
        """
        self._check_ready()
        a = np.asarray(actions)
        if a.shape != (self.n_envs,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"actions: expected integers of shape ({self.n_envs},), got {a.dtype} {a.shape}")
        if a.min() < 0 or a.max() >= N_ACTIONS:
            raise ValueError(f"actions: indices must be in [0, {N_ACTIONS}), got min {a.min()} max {a.max()}")
        a = a.astype(np.int64, copy=False)
        if self._mask is not None:
            m = self._mask
            rows = np.arange(self.n_envs)
            allowed = m.allowed[rows, a]
            targets = (m.replicas[rows, a], m.cpu_limit_m[rows, a], m.memory_limit_mib[rows, a])
        else:
            allowed, targets = self._outcome_of(a)
        obs, rew, term, trunc, info = self._advance(*targets)
        info["action"] = a
        info["action_allowed"] = allowed
        return obs, rew, term, trunc, info

    def step_targets(
        self, replicas: npt.ArrayLike, cpu_limit_m: npt.ArrayLike, memory_limit_mib: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float32], FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        """Set replicas and limits directly (a decision that was already masked and enforced elsewhere)."""
        return self._step_to(replicas, cpu_limit_m, memory_limit_mib, prestarted=False)

    def step_prestarted(
        self, replicas: npt.ArrayLike, cpu_limit_m: npt.ArrayLike, memory_limit_mib: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float32], FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        """Like :meth:`step_targets`, but as if the change had been made one start-up delay early.

        New pods are ready when the interval begins and a limit change has already rolled
        out: what a clairvoyant controller achieves by acting ahead of time. Only the
        clairvoyant oracle (:mod:`rlscale.training.oracle`) uses it; its cost accounting bills
        the early start.
        """
        return self._step_to(replicas, cpu_limit_m, memory_limit_mib, prestarted=True)

    def _step_to(
        self, replicas: npt.ArrayLike, cpu_limit_m: npt.ArrayLike, memory_limit_mib: npt.ArrayLike, *, prestarted: bool
    ) -> tuple[npt.NDArray[np.float32], FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        self._check_ready()
        shape = (self.n_envs,)
        r = np.broadcast_to(np.asarray(replicas), shape).astype(np.int64)
        c = np.broadcast_to(np.asarray(cpu_limit_m), shape).astype(np.int64)
        m = np.broadcast_to(np.asarray(memory_limit_mib), shape).astype(np.int64)
        for name, arr, lo in (("replicas", r, 0), ("cpu_limit_m", c, 1), ("memory_limit_mib", m, 1)):
            if arr.min() < lo:
                raise ValueError(f"{name}: must be >= {lo}, got {int(arr.min())}")
        obs, rew, term, trunc, info = self._advance(r, c, m, prestarted=prestarted)
        info["action"] = np.full(self.n_envs, -1, dtype=np.int64)
        info["action_allowed"] = np.ones(self.n_envs, dtype=bool)
        return obs, rew, term, trunc, info

    #: Per-env state, by the axis that indexes envs: copied by :meth:`copy_env`.
    _ENV_AXIS0: tuple[str, ...] = (
        "_series_idx", "_row0", "_row_last", "_ep_len", "_t", "_start_s", "_scale", "_ep_return", "replicas",
        "cpu_limit_m", "memory_limit_mib", "_ready", "_backlog", "_inflight", "_serving", "_rollout_left_s",
        "_last_up", "_last_down", "_last_limit", "_mu_pod", "_s_ms", "_s_over_c", "_expo", "_obs",
        "_k_fast", "_cfs_n", "_cfs_gap_ms", "_cfs_ht_ms",
    )  # fmt: skip
    _ENV_AXIS_LAST: tuple[str, ...] = ("_pending", "_seen", "_raw")

    def copy_env(self, src: npt.ArrayLike) -> None:
        """Make each env's state a copy of another's: env ``i`` takes env ``src[i]``'s (or all take ``src``).

        Copies clocks, pods, queues and metric history. The random streams are not per-env
        state: envs keep drawing from their own group's stream (``common_noise`` /
        ``env_seeds``), so copying within a group continues exactly that group's run. The
        clairvoyant oracle uses this to try every candidate allocation from one state, then
        continue from the one it picks.
        """
        idx = np.broadcast_to(np.asarray(src, dtype=np.intp), (self.n_envs,))
        if self._groups is not None and np.any(self._groups != self._groups[idx]):
            raise ValueError("copy_env: an env can only take the state of an env of its own seed group")
        for name in self._ENV_AXIS0:
            arr = getattr(self, name)
            arr[:] = arr[idx]
        for name in self._ENV_AXIS_LAST:
            arr = getattr(self, name)
            arr[...] = arr[..., idx]
        self._mask = None

    def observation(self, i: int = 0) -> Observation:
        """The current observation of env ``i`` as the decision function takes it (``None`` = unknown)."""
        c = self._cols
        values: dict[str, Any] = {}
        for name, src in FIELD_SOURCES.items():
            v = float(c[name][i])
            if src.kind == "deployment":
                values[name] = v if name == "timestamp" else int(v)
            else:
                values[name] = None if math.isnan(v) else v
        return Observation(**values)

    # ------------------------------------------------------------------ internals
    def _seed(self, seed: int | None) -> None:
        def streams(s: int | None) -> tuple[np.random.Generator, np.random.Generator]:
            exo, endo = np.random.SeedSequence(s).spawn(2)
            return np.random.default_rng(exo), np.random.default_rng(endo)

        self._groups: IntArray | None = None
        self._rng, self._rng_endo = streams(seed)
        if self._env_seeds is None and not self.common_noise:
            return
        # Envs in groups: one pair of streams per distinct seed, drawn one value per group.
        seeds = self._env_seeds if self._env_seeds is not None else (0,) * self.n_envs
        distinct = sorted(set(seeds))
        self._groups = np.array([distinct.index(x) for x in seeds], dtype=np.int64)
        if self._env_seeds is None:
            self._group_rngs = [(self._rng, self._rng_endo)]
        else:
            self._group_rngs = [streams(x) for x in distinct]

    def _exo(self, draw: _Draw, rows: tuple[int, ...], idx: IntArray | None) -> FloatArray:
        """Exogenous draws of shape ``rows + (k,)`` for envs ``idx`` (all when None).

        Independent envs take one vectorised draw. Grouped envs take one draw per group
        present, so each group's stream advances exactly as a single env's would.
        """
        if self._groups is None:
            return np.asarray(draw(self._rng, (*rows, self.n_envs if idx is None else idx.size)))
        groups = self._groups if idx is None else self._groups[idx]
        table = np.empty((*rows, len(self._group_rngs)))
        for g in np.unique(groups):
            table[..., g] = draw(self._group_rngs[g][0], rows)
        return table[..., groups]

    def _group_uniform(self) -> FloatArray:
        """One uniform per group from its policy-caused stream, spread to the group's envs."""
        assert self._groups is not None
        return np.array([endo.random() for _, endo in self._group_rngs])[self._groups]

    def _check_ready(self) -> None:
        if self._needs_reset:
            raise RuntimeError("call reset() before stepping the simulator")

    def _outcome_of(self, a: IntArray) -> tuple[BoolArray, tuple[IntArray, IntArray, IntArray]]:
        """The mask's clamped outcome of one chosen action per env, without evaluating all 63.

        Same rules (policy's :func:`~rlscale.policy.mask.check`), one column instead of
        the whole table: the step costs O(n), not O(n × N_ACTIONS), when nobody asked for
        the mask first.
        """
        lim = self.config.limits
        r = self.replicas
        if r.max() < self._proposals.shape[0] and r.min() >= 0:
            pr = self._proposals[r, a]
        else:  # a count outside the limits (set through step_targets): propose from scratch
            pr = propose_replicas(r)[np.arange(self.n_envs), a]
        pc = self.cpu_limit_m + self._cpu_delta[a]
        pm = self.memory_limit_mib + self._mem_delta[a]
        res = check(lim, self.scaling_state(), pr[:, None], pc[:, None], pm[:, None])
        return res.allowed[:, 0], (res.replicas[:, 0], res.cpu_limit_m[:, 0], res.memory_limit_mib[:, 0])

    def _capacity(self, idx: IntArray | BoolArray | slice) -> None:
        """Per-pod service parameters from the CPU limit: usable cores k → M/M/c servers and rate."""
        cfg = self.config
        free = np.maximum(self.cpu_limit_m[idx] - cfg.pod_base_cpu_m, 0.0) / 1000.0
        h = cfg.saturation_sharpness
        k = np.maximum(free / (1.0 + (free / cfg.cpu_saturation_cores) ** h) ** (1.0 / h), 1e-6)
        # A request uses at most one core: below one core it runs slower; above, the pod
        # serves requests in parallel on max(k, 1) "servers".
        servers = np.maximum(k, 1.0)
        if cfg.cpu_limit_model == "cfs_quota":
            # The kernel does not slow a sub-core pod down: a request runs at full core
            # speed, and the quota stops the pod for the rest of a period once spent
            # (the delay term in _service). Capacity stays k cores.
            k_fast = np.minimum(k, 1.0)
            period, d = cfg.cfs_period_ms, cfg.cfs_dispersion
            self._s_ms[idx] = cfg.cpu_per_request_ms
            self._k_fast[idx] = k_fast
            self._cfs_n[idx] = k * period / (cfg.cpu_per_request_ms * d)
            self._cfs_gap_ms[idx] = period * (1.0 - k_fast)
            self._cfs_ht_ms[idx] = (1.0 - k_fast) * d * cfg.cpu_per_request_ms / (2.0 * k)
        else:
            self._s_ms[idx] = cfg.cpu_per_request_ms / np.minimum(k, 1.0)
        self._s_over_c[idx] = self._s_ms[idx] / servers
        self._mu_pod[idx] = k * 1000.0 / cfg.cpu_per_request_ms
        self._expo[idx] = np.sqrt(2.0 * (servers + 1.0)) - 1.0

    def _service(
        self, idx: IntArray | slice, lam: FloatArray, serving: FloatArray, backlog: FloatArray, dt: float
    ) -> tuple[FloatArray, ...]:
        """One sub-step of the queueing model for envs ``idx`` (all arrays are theirs).

        A fluid backlog carries overload; below saturation Sakasegawa's M/M/c
        approximation gives the stochastic wait: P(wait) = ρ^(√(2(c+1))−1) and waits are
        exponential with mean s / (c(1−ρ)), so the q-quantile of the wait is
        s/(c(1−ρ)) · ln(P(wait)/(1−q)) when P(wait) > 1−q. Service time is exponential
        with mean s. With ``cpu_limit_model="cfs_quota"`` a sub-core pod's requests run at
        full speed (the M/M/c term at utilisation k·ρ) and :meth:`_quota_wait` adds the wait
        for the next CFS period; served, backlog, drops and CPU are the same either way.
        Returns served, new backlog, dropped, p50 and p99 (ms), CPU utilisation, memory
        working set per pod (MiB) and in-flight requests per pod.
        """
        cfg = self.config
        mu_pod, s_ms, s_over_c, expo = self._mu_pod[idx], self._s_ms[idx], self._s_over_c[idx], self._expo[idx]
        safe = np.maximum(serving, 1.0)
        mu = serving * mu_pod
        inv_mu = 1.0 / np.maximum(mu, 1e-9)
        total = backlog + lam * dt
        served = np.minimum(total, mu * dt)
        b1 = total - served
        drop = np.maximum(b1 - np.minimum(cfg.queue_capacity_per_replica * serving, cfg.request_timeout_s * mu), 0.0)
        b1 -= drop
        rho = np.minimum(lam * inv_mu, cfg.rho_cap)
        cfs = cfg.cpu_limit_model == "cfs_quota"
        if cfs:  # the M/M/c term is queueing behind requests at full speed: utilisation k·ρ below one core
            quota_u = rho
            rho = quota_u * self._k_fast[idx]
        with np.errstate(divide="ignore"):
            log_pw = expo * np.log(rho)  # -inf at no load: no waiting
        pw = np.exp(log_pw)
        theta = s_over_c / (1.0 - rho)
        timeout_ms = cfg.request_timeout_s * 1000.0
        # With nobody serving, whatever arrives fails at the timeout.
        base = cfg.base_latency_ms + timeout_ms * (serving <= 0)
        p50 = base + s_ms * _LN2 + theta * np.maximum(log_pw + _LN2, 0.0) + (500.0 * (backlog + b1)) * inv_mu
        p99 = (
            base
            + s_ms * _LN100
            + theta * np.maximum(log_pw + _LN100, 0.0)
            + (1000.0 * np.maximum(backlog, b1)) * inv_mu
        )
        if cfs:
            log_pq, theta_q = self._quota_wait(idx, quota_u)
            p50 += theta_q * np.maximum(log_pq + _LN2, 0.0)
            p99 += theta_q * np.maximum(log_pq + _LN100, 0.0)
        np.minimum(p50, timeout_ms, out=p50)
        np.minimum(p99, timeout_ms, out=p99)
        rate_pod = served / (dt * safe)
        cpu_util = np.minimum((cfg.pod_base_cpu_m + cfg.cpu_per_request_ms * rate_pod) / self.cpu_limit_m[idx], 1.0)
        mean_resp_s = (cfg.base_latency_ms + s_ms + pw * theta) * 0.001
        if cfs:
            mean_resp_s += np.exp(log_pq) * theta_q * 0.001
        inflight = rate_pod * mean_resp_s + b1 / safe
        ws = cfg.memory_base_mib + cfg.memory_per_inflight_mib * inflight
        return served, b1, drop, p50, p99, cpu_util, ws, inflight

    def _quota_wait(self, idx: IntArray | slice, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The CFS-quota delay at quota utilisation ``u``: (log P(a request meets a spent quota), tail scale ms).

        Why a term of its own: the kernel runs a sub-core pod's request at full core speed
        and, once the pod has used its quota q = k·P in the current period P, stops it until
        the period ends. Most requests are fast; the unlucky ones wait up to P − q. A slower
        core (the fluid model) gets both the median and the tail wrong.

        Derivation, per pod, k < 1 usable cores, s ms of CPU per request, dispersion d:

        * Probability. One period's quota holds n = k·P/s requests; the requests arriving
          in a period are Poisson with mean u·n (u: share of the quota the load uses). The
          quota runs out in a period when N ≥ n, and P(N ≥ n) = P(Gamma(n) ≤ u·n) (the
          Poisson–gamma duality, which also makes it smooth in a non-integer n).
          Wilson–Hilferty: (Gamma(n)/n)^(1/3) is nearly normal with mean 1 − 1/(9n) and
          variance 1/(9n), so π ≈ Φ(3√n · (u^(1/3) − 1 + 1/(9n))). This is taken as the
          probability that a request meets a spent quota. Arrivals with variance d times
          their mean behave like Poisson counts in units of d requests: n → n/d. π is
          small at low u (with the carry-over below, n = 2.5 at u = 0.3: 0.12; n = 5.3: 0.02)
          and falls faster with n (a larger quota per request averages bursts out). Near u = 1 a period also starts
          with work carried over from the last: Kingman's mean backlog, u/(2(1 − u))
          requests (in units of d), takes that much of the quota, so the test is
          N ≥ n' = n − u/(2(1 − u)), i.e. u·n/n' in place of u and n' in place of n. That
          takes the probability towards 1 at saturation (the real pods were throttled in
          88–100 % of periods there), where without it it would stop near ½.
        * Wait, given that. The rest of the period: the quota is spent at the earliest q
          into the period, so a request that meets it waits between 0 and P − q, on average
          (P − q)/2. Near u = 1 the backlog carries over into later periods: Kingman's
          heavy-traffic wait for the CPU work queued ahead, d·s·u/(2(1 − u)), stretched by
          the stopped share of each period, (P − q)/q = (1 − k)/k. The wait's tail is taken
          as exponential with the sum as mean: θ = P(1 − k)/2 + (1 − k)·d·s·u/(2k(1 − u)).
          So the q-quantile of the delay is θ·ln(π/(1 − q)) when π > 1 − q, the form the
          M/M/c term uses.

        Both scales carry (1 − k): at one core and above there is no stopped share and the
        model is the fluid one (full speed, Sakasegawa's M/M/c at ρ), so latency is
        continuous in the limit. ``u`` is capped at ``rho_cap`` by the caller; overload
        goes to the fluid backlog, as in the fluid model, and the timeout caps the total.
        """
        n, gap, ht = self._cfs_n[idx], self._cfs_gap_ms[idx], self._cfs_ht_ms[idx]
        carry = u / (2.0 * (1.0 - u))
        n_left = np.maximum(n - carry, 1e-3)
        root = np.sqrt(n_left)
        z = 3.0 * root * (np.cbrt(u * n / n_left) - 1.0) + 1.0 / (3.0 * root)
        with np.errstate(divide="ignore"):
            log_pq = np.log(_normal_cdf(z))
        theta_q = 0.5 * gap + ht * u / (1.0 - u)
        return log_pq, theta_q

    def _rows(self, idx: IntArray | slice, elapsed_s: float | FloatArray) -> IntArray:
        """Flat trace rows at ``elapsed_s`` into each env's episode (held at the series' last row)."""
        rows = self._row0[idx] + (np.asarray(elapsed_s) // TRACE_STEP_S).astype(np.int64)
        return np.minimum(rows, self._row_last[idx])

    def _record(self, idx: IntArray | None, truth: Sequence[FloatArray], back: int = 0) -> None:
        """Write an interval's metrics into the pipeline's history, with measurement noise.

        Noise is applied once, when the interval is recorded: re-reading the same window
        later (as the trend features do) returns the same value, as Prometheus would.
        """
        cfg = self.config
        row = self._seen[(self._g_step - back) % self._hist_len]
        sel: IntArray | slice = slice(None) if idx is None else idx
        sig = cfg.metric_noise
        if sig > 0:
            noise = np.exp(sig * self._exo(_normal, (_N_METRICS,), idx) - 0.5 * sig * sig)
            for m in range(_N_METRICS):
                row[m, sel] = truth[m] * noise[m]
        else:
            for m in range(_N_METRICS):
                row[m, sel] = truth[m]
        np.minimum(row[_M_ERR], 1.0, out=row[_M_ERR])

    def _reset_envs(self, idx: IntArray) -> None:
        cfg, lim, s = self.config, self.config.limits, self._series
        k = idx.size
        u = self._exo(_uniform, (3,), idx)  # series, window start, load multiplier
        ser = np.minimum((u[0] * s.length.size).astype(np.int64), s.length.size - 1)
        length = s.length[ser]
        rows_needed = math.ceil(self.episode_steps * cfg.step_s / TRACE_STEP_S - 1e-9)
        slack = np.maximum(length - rows_needed, 0)
        start = np.zeros(k, dtype=np.int64) if self.fixed_start else (u[1] * (slack + 1)).astype(np.int64)
        self._series_idx[idx] = ser
        self._row0[idx] = s.offset[ser] + start
        self._row_last[idx] = s.offset[ser] + length - 1
        avail_steps = np.floor((length - start) * TRACE_STEP_S / cfg.step_s + 1e-9).astype(np.int64)
        self._ep_len[idx] = np.maximum(np.minimum(self.episode_steps, avail_steps), 1)
        self._t[idx] = 0
        self._start_s[idx] = s.start_s[ser] + start * TRACE_STEP_S
        lo, hi = cfg.load_scale_range
        self._scale[idx] = s.scale[ser] * (lo + (hi - lo) * u[2])
        self._ep_return[idx] = 0.0

        self.cpu_limit_m[idx] = cfg.initial_cpu_limit_m
        self.memory_limit_mib[idx] = cfg.initial_memory_limit_mib
        self._capacity(idx)
        first_rate = s.flat[self._row0[idx]] * self._scale[idx]
        if cfg.initial_replicas is None:
            want = np.ceil(first_rate / (self._mu_pod[idx] * cfg.load_target_utilization))
            if cfg.initial_replicas_range != (1.0, 1.0):
                # Exploring starts: a Deployment found over- (or under-) sized, as after a burst
                # or when the operator takes one over. Drawn only when asked, so the exogenous
                # stream of every run with the default range is unchanged.
                lo_r, hi_r = np.log(cfg.initial_replicas_range)
                want = np.ceil(want * np.exp(lo_r + (hi_r - lo_r) * self._exo(_uniform, (), idx)))
            r0 = np.clip(want, max(lim.min_replicas, 1), lim.max_replicas).astype(np.int64)
        else:
            r0 = np.full(k, cfg.initial_replicas, dtype=np.int64)
        self.replicas[idx] = r0
        ready = r0.astype(np.float64)
        self._ready[idx] = ready
        self._serving[idx] = ready
        self._pending[:, idx] = 0.0
        self._backlog[idx] = 0.0
        self._inflight[idx] = 0.0
        self._rollout_left_s[idx] = 0.0
        self._last_up[idx] = np.nan
        self._last_down[idx] = np.nan
        self._last_limit[idx] = np.nan

        # Warm history: what the metrics pipeline recorded in the minutes before the window
        # (steady state of the initial Deployment under the load of those minutes).
        for j in range(1, self._hist_len + 1):
            back_s = -j * cfg.step_s
            rows = np.maximum(self._row0[idx] + int(back_s // TRACE_STEP_S), s.offset[ser])
            lam = s.flat[rows] * self._scale[idx]
            served, _, drop, p50, p99, cpu_u, ws, infl = self._service(idx, lam, ready, np.zeros(k), cfg.step_s)
            err = drop / np.maximum(served + drop, 1e-12)
            mem_u = ws / self.memory_limit_mib[idx]
            self._record(idx, (lam, np.where(ready > 0, cpu_u, np.nan), mem_u, p50, p99, err, infl), back=j)
        self._mask = None

    def _apply_targets(self, r_new: IntArray, c_new: IntArray, m_new: IntArray) -> tuple[BoolArray, BoolArray]:
        """Change the Deployment: pods created/deleted, limits rolled. Returns (replicas, limits) changed."""
        cfg = self.config
        now = self.now
        dr = r_new - self.replicas
        lim_changed = (c_new != self.cpu_limit_m) | (m_new != self.memory_limit_mib)
        up, down = dr > 0, dr < 0
        if up.any():
            self._last_up[up] = now[up]
            self._pending[(self._g_sub + self._delay) % self._ring] += np.maximum(dr, 0)
        if down.any():
            self._last_down[down] = now[down]
            # Kubernetes deletes not-yet-ready pods first (the newest of them first), then ready ones.
            rem = np.maximum(-dr, 0).astype(np.float64)
            for j in range(self._ring - 1, -1, -1):
                slot = self._pending[(self._g_sub + j) % self._ring]
                take = np.minimum(slot, rem)
                slot -= take
                rem -= take
            self._ready -= rem
        self.replicas = r_new.astype(np.int64, copy=True)
        if lim_changed.any():
            self._last_limit[lim_changed] = now[lim_changed]
            self.cpu_limit_m = c_new.astype(np.int64, copy=True)
            self.memory_limit_mib = m_new.astype(np.int64, copy=True)
            self._capacity(lim_changed)
            # A rolling update: maxUnavailable pods at a time, each down for the start-up delay.
            per_wave = np.maximum(np.ceil(cfg.restart_max_unavailable * r_new), 1.0)
            waves = np.ceil(r_new / per_wave)
            self._rollout_left_s = np.where(lim_changed, waves * cfg.startup_delay_s, self._rollout_left_s)
        return dr != 0, lim_changed

    def _advance(
        self, r_new: IntArray, c_new: IntArray, m_new: IntArray, *, prestarted: bool = False
    ) -> tuple[npt.NDArray[np.float32], FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        cfg = self.config
        n, dt, sub_n = self.n_envs, cfg.dt_s, cfg.substeps
        decision_now = self.now
        old_replicas = self.replicas
        replicas_changed, limits_changed = self._apply_targets(r_new, c_new, m_new)
        if prestarted:
            self._ready = self.replicas.astype(np.float64)
            self._pending[:] = 0.0
            self._rollout_left_s[:] = 0.0

        # The load of every sub-step: trace rows (piecewise constant per minute) × noise.
        if self._rows_per_step:
            base = self._row0 + self._t * self._rows_per_step
            sub_rows = [np.minimum(base + int(i * dt // TRACE_STEP_S), self._row_last) for i in range(sub_n)]
        else:
            elapsed0 = (self._t * cfg.step_s).astype(np.float64)
            sub_rows = [self._rows(slice(None), elapsed0 + i * dt) for i in range(sub_n)]
        lam_all = self._series.flat[np.stack(sub_rows)] * self._scale
        if cfg.arrival_noise > 0:
            sig = cfg.arrival_noise
            lam_all *= np.exp(sig * self._exo(_normal, (sub_n,), None) - 0.5 * sig * sig)

        served_sum = np.zeros(n)
        dropped = np.zeros(n)
        p50_w = np.zeros(n)
        p50_plain = np.zeros(n)
        p99_max = np.zeros(n)
        cpu_sum = np.zeros(n)
        ws_sum = np.zeros(n)
        valid = np.zeros(n)
        oom_kills = np.zeros(n)
        rolling = bool(self._rollout_left_s.max() > 0)
        every = slice(None)
        for i in range(sub_n):
            slot = self._g_sub % self._ring
            self._ready += self._pending[slot]
            self._pending[slot] = 0.0
            if rolling:
                down = np.minimum(np.ceil(cfg.restart_max_unavailable * self._ready), self._ready)
                serving = self._ready - down * (self._rollout_left_s > 0)
                self._rollout_left_s = np.maximum(self._rollout_left_s - dt, 0.0)
            else:
                serving = self._ready.copy()
            lam = lam_all[i]
            served, b1, drop, p50, p99, cpu_u, ws, infl = self._service(every, lam, serving, self._backlog, dt)

            # OOM kills: working sets spread across pods (normal, CV memory_spread); a pod whose
            # working set passes its limit is killed, drops its requests and restarts.
            at_risk = np.flatnonzero((ws > self.memory_limit_mib * (1.0 - 4.0 * cfg.memory_spread)) & (serving > 0))
            # Grouped envs draw every sub-step, one value per group, so their streams stay
            # aligned with single-env runs whatever happens to the other envs.
            group_u = self._group_uniform() if self._groups is not None else None
            if at_risk.size:
                w = ws[at_risk]
                z = (w - self.memory_limit_mib[at_risk]) / (cfg.memory_spread * w)
                p_over = 1.0 / (1.0 + np.exp(-_OOM_LOGIT * z))
                kills = np.zeros(n)
                # Expected kills, stochastically rounded to whole pods.
                u = group_u[at_risk] if group_u is not None else self._rng_endo.random(at_risk.size)
                kills[at_risk] = np.floor(serving[at_risk] * p_over + u)
                share = kills / np.maximum(serving, 1.0)
                lost_backlog = b1 * share
                lost_inflight = np.minimum((infl - b1 / np.maximum(serving, 1.0)) * kills, served)
                b1 -= lost_backlog
                served = served - lost_inflight
                drop = drop + lost_backlog + lost_inflight
                self._ready -= kills
                serving -= kills
                self._pending[(self._g_sub + self._oom_delay) % self._ring] += kills
                oom_kills += kills

            self._backlog = b1
            has = serving > 0
            served_sum += served
            dropped += drop
            p50_w += p50 * served
            p50_plain += p50
            np.maximum(p99_max, p99, out=p99_max)
            cpu_sum += cpu_u * has
            ws_sum += ws * has
            valid += has
            self._g_sub += 1
        self._serving = serving
        self._inflight = infl * serving

        # The interval's truth, as Prometheus would aggregate it.
        offered = lam_all.sum(axis=0) * dt
        inv_valid = 1.0 / np.maximum(valid, 1.0)
        no_data = np.where(valid > 0, 1.0, np.nan)
        p50 = np.where(served_sum > 0, p50_w / np.maximum(served_sum, 1e-12), p50_plain / sub_n)
        np.minimum(p50, p99_max, out=p50)  # a weighted mean of capped values can round past the cap
        # As Prometheus counts it: failed responses over all responses of the interval (a dropped
        # request may have arrived in an earlier interval, so offered is not the denominator).
        error_rate = dropped / np.maximum(served_sum + dropped, 1e-12)
        cpu_util = cpu_sum * inv_valid * no_data
        mem_util = ws_sum * inv_valid * no_data / self.memory_limit_mib
        queue = (self._backlog + self._inflight) / np.maximum(self._serving, 1.0)
        request_rate = offered / cfg.step_s
        self._record(None, (request_rate, cpu_util, mem_util, p50, p99_max, error_rate, queue))

        cpu_allocated = (self.replicas * self.cpu_limit_m).astype(np.float64)
        rew = reward(
            cfg.objective,
            latency_p99_ms=p99_max,
            error_rate=error_rate,
            allocated_cpu_m=cpu_allocated,
            max_cpu_m=self._max_cpu_m,
            replicas_changed=replicas_changed,
            limits_changed=limits_changed,
        )
        self._g_step += 1
        self._t += 1
        self._ep_return += rew
        truncated = self._t >= self._ep_len
        terminated = np.zeros(n, dtype=bool)

        info: dict[str, Any] = {
            "timestamp": decision_now,
            "offered": offered,
            "served": served_sum,
            "dropped": dropped,
            "request_rate": request_rate,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99_max,
            "error_rate": error_rate,
            "cpu_utilization": cpu_util,
            "memory_utilization": mem_util,
            "queue_per_replica": queue,
            "backlog": self._backlog.copy(),
            "replicas": self.replicas.copy(),
            "ready_replicas": self._serving.copy(),
            "cpu_limit_m": self.cpu_limit_m.copy(),
            "memory_limit_mib": self.memory_limit_mib.copy(),
            "cpu_allocated_m": cpu_allocated,
            "memory_allocated_mib": (self.replicas * self.memory_limit_mib).astype(np.float64),
            "cpu_used_m": np.nan_to_num(cpu_util) * self.cpu_limit_m * self._serving,
            "slo_violated": slo_violated(cfg.objective, p99_max, error_rate),
            "oom_kills": oom_kills,
            "replicas_changed": replicas_changed,
            "limits_changed": limits_changed,
            "scaled_up": r_new > old_replicas,
            "scaled_down": r_new < old_replicas,
            "reward": rew,
        }
        self._observe()
        if self.autoreset and truncated.any():
            done = np.flatnonzero(truncated)
            info["final_obs"] = self._obs.copy()
            info["episode_return"] = np.where(truncated, self._ep_return, np.nan)
            info["episode_length"] = np.where(truncated, self._t, 0)
            self._reset_envs(done)
            self._observe(done)
        return self._obs, rew, terminated, truncated, info

    def _observe(self, idx: IntArray | None = None) -> None:
        """Fill the observation columns — exact Deployment spec, delayed noisy metrics — and encode them."""
        cfg = self.config
        sel: IntArray | slice = slice(None) if idx is None else idx
        c = self._cols
        c["timestamp"][sel] = self.now[sel]
        c["replicas"][sel] = self.replicas[sel]
        c["ready_replicas"][sel] = self._serving[sel]
        c["cpu_limit_m"][sel] = self.cpu_limit_m[sel]
        c["memory_limit_mib"][sel] = self.memory_limit_mib[sel]
        latest = self._g_step - 1 - cfg.scrape_delay_steps
        raw = self._raw
        for row, (metric, lag) in zip(self._metric_rows, self._metric_sources, strict=True):
            raw[row, sel] = self._seen[(latest - lag) % self._hist_len, metric, sel]
        if cfg.metrics_missing_prob > 0:
            # A failed Prometheus query: every metric of that env is unknown at this decision.
            gap = np.where(self._exo(_uniform, (), idx) < cfg.metrics_missing_prob, np.nan, 1.0)
            raw[self._metric_rows[:, None], sel] *= gap
        if idx is None:
            # A fresh array each step: callers may keep it, and later resets write into the next one.
            self._obs = encode_matrix(raw)
        else:
            self._obs[idx] = encode_matrix(raw[:, idx])
        self._mask = None


__all__ = ["VectorSim"]
