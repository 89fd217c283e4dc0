"""The safety mask: which actions the hard limits allow now, and why each other one is not.

Every rule is evaluated for every action over a batch of states at once (numpy), so the
vectorised simulator masks PPO's logits with exactly the rules the operator enforces.

Semantics, in the order the rules are checked (the first rule that forbids an action is
the one reported):

1. ``metrics_missing`` — without the core metrics, only holding or scaling up is allowed:
   no data, no scale-down, no limit change. A memory-limit decrease also needs the memory
   working set.
2. cooldowns — ``scale_up_cooldown`` after a scale-up; ``scale_down_cooldown`` after any
   scaling (a scale-down right after a scale-up is what flapping looks like);
   ``limit_cooldown`` between limit changes, which restart pods.
3. bounds — an action that cannot move in its direction because the count or the limit is
   already at ``max``/``min`` is forbidden (``max_replicas``, ``min_replicas``,
   ``cpu_bounds``, ``memory_bounds``). An action that can move, but too far, is *clamped*
   to the bound and to the step limit instead (as the HPA's behaviour policies do).
4. budgets — ``cpu_budget``/``memory_budget`` when replicas × limit would exceed the
   optional total; scale-ups are clamped to the budget where some room is left.
5. ``memory_working_set`` — a memory limit may not drop below working set × headroom.

The no-op is always allowed. :func:`rlscale.policy.decide.decide` checks the baseline's
target through the same :func:`check` as the table's actions, and clamps the final
decision into the bounds once more, whichever policy produced it (defence in depth).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import numpy.typing as npt

from rlscale.policy.actions import CPU_STEPS, MEMORY_STEPS, propose_replicas
from rlscale.policy.limits import ScalingLimits

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class MaskRule(enum.IntEnum):
    """Why an action is forbidden; 0 means allowed. Lower codes are checked first."""

    ALLOWED = 0
    METRICS_MISSING = 1
    SCALE_UP_COOLDOWN = 2
    SCALE_DOWN_COOLDOWN = 3
    LIMIT_COOLDOWN = 4
    MAX_REPLICAS = 5
    MIN_REPLICAS = 6
    CPU_BOUNDS = 7
    MEMORY_BOUNDS = 8
    CPU_BUDGET = 9
    MEMORY_BUDGET = 10
    MEMORY_WORKING_SET = 11

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ScalingState:
    """What the mask needs to know about each workload; every field has shape ``(n,)``.

    Times are unix seconds; ``NaN`` in a ``last_*`` field means "never".
    """

    replicas: IntArray
    cpu_limit_m: IntArray
    memory_limit_mib: IntArray
    metrics_ok: BoolArray
    memory_utilization: FloatArray
    now: FloatArray
    last_scale_up_at: FloatArray
    last_scale_down_at: FloatArray
    last_limit_change_at: FloatArray

    @classmethod
    def single(
        cls,
        *,
        replicas: int,
        cpu_limit_m: int,
        memory_limit_mib: int,
        metrics_ok: bool,
        memory_utilization: float | None,
        now: float,
        last_scale_up_at: float | None,
        last_scale_down_at: float | None,
        last_limit_change_at: float | None,
    ) -> ScalingState:
        """A batch of one, for the operator's per-policy decision."""

        def t(x: float | None) -> FloatArray:
            return np.array([np.nan if x is None else x], dtype=np.float64)

        return cls(
            replicas=np.array([replicas], dtype=np.int64),
            cpu_limit_m=np.array([cpu_limit_m], dtype=np.int64),
            memory_limit_mib=np.array([memory_limit_mib], dtype=np.int64),
            metrics_ok=np.array([metrics_ok]),
            memory_utilization=t(memory_utilization),
            now=t(now),
            last_scale_up_at=t(last_scale_up_at),
            last_scale_down_at=t(last_scale_down_at),
            last_limit_change_at=t(last_limit_change_at),
        )


@dataclass(frozen=True)
class MaskResult:
    """Per state and proposal: allowed or not, the rule, and the clamped outcome.

    The outcomes (``replicas``, ``cpu_limit_m``, ``memory_limit_mib``: what taking each
    proposal would set, or the current value where it is forbidden) are computed on first
    use: PPO's rollouts need only ``allowed``. ``targets`` holds the clamped (replicas, CPU,
    memory) of each proposal as if it were allowed, for a caller that reads one column.
    """

    allowed: BoolArray  # (n, k)
    reason: npt.NDArray[np.int8]  # (n, k) MaskRule codes
    targets: tuple[IntArray, IntArray, IntArray]  # clamped (replicas, cpu, memory), (n, k)
    _current: tuple[IntArray, IntArray, IntArray]  # (n, 1)

    @cached_property
    def replicas(self) -> IntArray:
        return np.where(self.allowed, self.targets[0], self._current[0])

    @cached_property
    def cpu_limit_m(self) -> IntArray:
        return np.where(self.allowed, self.targets[1], self._current[1])

    @cached_property
    def memory_limit_mib(self) -> IntArray:
        return np.where(self.allowed, self.targets[2], self._current[2])


def step_rooms(limits: ScalingLimits, replicas: npt.NDArray[np.int64]) -> tuple[IntArray, IntArray]:
    """How many pods one scale-up may add and one scale-down may remove from ``replicas``.

    The pods or the percentage of the current count, whichever is more. The clairvoyant
    oracle (``rlscale.training.oracle``) bills its schedule by the same rooms.
    """
    up = np.maximum(limits.max_scale_up_pods, np.ceil(replicas * (limits.max_scale_up_percent / 100.0)))
    down = np.maximum(limits.max_scale_down_pods, np.floor(replicas * (limits.max_scale_down_percent / 100.0)))
    return up.astype(np.int64), down.astype(np.int64)


def check(
    limits: ScalingLimits,
    state: ScalingState,
    proposed_replicas: IntArray,
    proposed_cpu_m: IntArray,
    proposed_memory_mib: IntArray,
) -> MaskResult:
    """Check proposals of shape ``(n, k)`` against the limits for states of shape ``(n,)``."""
    r = state.replicas[:, None]
    c = state.cpu_limit_m[:, None]
    m = state.memory_limit_mib[:, None]
    now = state.now[:, None]
    dr = np.sign(proposed_replicas - r)
    dc = np.sign(proposed_cpu_m - c)
    dm = np.sign(proposed_memory_mib - m)
    limit_move = (dc != 0) | (dm != 0)

    # Clamp replicas to the step limits, then to the bounds; a hold stays exactly a hold.
    # Rooms are (n, 1) and integer, so the (n, k) arithmetic below stays in int64.
    up_room, down_room = step_rooms(limits, r)
    tr = np.minimum(np.maximum(proposed_replicas, r - down_room), r + up_room)
    tr = np.minimum(np.maximum(tr, limits.min_replicas), limits.max_replicas)
    tc = np.minimum(np.maximum(proposed_cpu_m, limits.cpu_limit_min_m), limits.cpu_limit_max_m)
    tc = np.where(dc == 0, c, tc)
    tm = np.minimum(np.maximum(proposed_memory_mib, limits.memory_limit_min_mib), limits.memory_limit_max_mib)
    tm = np.where(dm == 0, m, tm)
    up, down = dr > 0, dr < 0
    if limits.max_total_cpu_m is not None:
        tr = np.where(up, np.minimum(tr, limits.max_total_cpu_m // np.maximum(tc, 1)), tr)
    if limits.max_total_memory_mib is not None:
        tr = np.where(up, np.minimum(tr, limits.max_total_memory_mib // np.maximum(tm, 1)), tr)
    tr = np.where(dr == 0, r, tr)
    stuck_up = up & (tr <= r)

    no = np.zeros(tr.shape, dtype=bool)
    mem_unknown = np.isnan(state.memory_utilization)[:, None]
    last_scaled = np.fmax(state.last_scale_up_at, state.last_scale_down_at)[:, None]
    cpu_over = mem_over = no
    if limits.max_total_cpu_m is not None:
        cpu_over = ((tr * tc > limits.max_total_cpu_m) & (up | (dc > 0))) | stuck_up
    if limits.max_total_memory_mib is not None:
        mem_over = ((tr * tm > limits.max_total_memory_mib) & (up | (dm > 0))) | stuck_up
    # One condition per rule, in the order of _RULE_ORDER: the first that holds is reported.
    conditions = (
        (~state.metrics_ok[:, None] & (down | limit_move)) | ((dm < 0) & mem_unknown),
        up & (now < state.last_scale_up_at[:, None] + limits.scale_up_cooldown_s),
        down & (now < last_scaled + limits.scale_down_cooldown_s),
        limit_move & (now < state.last_limit_change_at[:, None] + limits.limit_change_cooldown_s),
        stuck_up & (r >= limits.max_replicas),
        down & (tr >= r),
        (dc != 0) & (dc * (tc - c) <= 0),
        (dm != 0) & (dm * (tm - m) <= 0),
        cpu_over,
        mem_over,
        (dm < 0) & ~mem_unknown & (tm < state.memory_utilization[:, None] * m * limits.memory_headroom),
        stuck_up,  # a scale-up that cannot happen for any other reason (not reachable with sane limits)
    )
    # The first rule that holds wins: argmax finds the first True along the rule axis;
    # where none holds, the appended all-True row maps to code 0 (allowed).
    # (concatenate + reshape: np.stack costs several times more for the operator's n = 1.)
    held = np.concatenate((*conditions, np.ones(tr.shape, dtype=bool))).reshape(len(conditions) + 1, *tr.shape)
    reason = _RULE_CODES[held.argmax(axis=0)]
    return MaskResult(allowed=reason == 0, reason=reason, targets=(tr, tc, tm), _current=(r, c, m))


_RULE_ORDER = np.array(
    [
        MaskRule.METRICS_MISSING,
        MaskRule.SCALE_UP_COOLDOWN,
        MaskRule.SCALE_DOWN_COOLDOWN,
        MaskRule.LIMIT_COOLDOWN,
        MaskRule.MAX_REPLICAS,
        MaskRule.MIN_REPLICAS,
        MaskRule.CPU_BOUNDS,
        MaskRule.MEMORY_BOUNDS,
        MaskRule.CPU_BUDGET,
        MaskRule.MEMORY_BUDGET,
        MaskRule.MEMORY_WORKING_SET,
        MaskRule.MAX_REPLICAS,
    ],
    dtype=np.int8,
)
_RULE_CODES = np.append(_RULE_ORDER, np.int8(MaskRule.ALLOWED))
#: Labels by code, for reports (``RULE_LABELS[code]``).
RULE_LABELS: tuple[str, ...] = tuple(rule.label for rule in MaskRule)


def action_proposals(limits: ScalingLimits, state: ScalingState) -> tuple[IntArray, IntArray, IntArray]:
    """Unclamped (replicas, CPU, memory) proposals of every action, each ``(n, N_ACTIONS)``."""
    if len(state.replicas) == 1:
        return _single_proposals(
            int(state.replicas[0]),
            int(state.cpu_limit_m[0]),
            int(state.memory_limit_mib[0]),
            limits.cpu_limit_step_m,
            limits.memory_limit_step_mib,
        )
    return _proposals(
        state.replicas, state.cpu_limit_m, state.memory_limit_mib, limits.cpu_limit_step_m, limits.memory_limit_step_mib
    )


def _proposals(
    replicas: IntArray, cpu_m: IntArray, memory_mib: IntArray, cpu_step_m: int, memory_step_mib: int
) -> tuple[IntArray, IntArray, IntArray]:
    proposed_r = propose_replicas(replicas)
    proposed_c = cpu_m[:, None] + CPU_STEPS * cpu_step_m
    proposed_m = memory_mib[:, None] + MEMORY_STEPS * memory_step_mib
    return proposed_r, proposed_c, proposed_m


@lru_cache(maxsize=4096)
def _single_proposals(
    replicas: int, cpu_m: int, memory_mib: int, cpu_step_m: int, memory_step_mib: int
) -> tuple[IntArray, IntArray, IntArray]:
    """The operator's batch of one, cached: a workload's counts and limits repeat between decisions.

    The arrays are shared between callers, so they are made read-only.
    """
    r, c, m = (np.array([v], dtype=np.int64) for v in (replicas, cpu_m, memory_mib))
    out = _proposals(r, c, m, cpu_step_m, memory_step_mib)
    for a in out:
        a.flags.writeable = False
    return out


def action_mask(limits: ScalingLimits, state: ScalingState) -> MaskResult:
    """Evaluate every action of the table, shape ``(n, N_ACTIONS)``. Column 0 is the no-op."""
    return check(limits, state, *action_proposals(limits, state))
