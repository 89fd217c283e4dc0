"""The gradual-rollout gate: how large a share of decisions the learned policy gets.

Modes:

* ``shadow`` — the baseline acts every time; the learned policy's would-be choice is only
  recorded. The safe way to watch a new model.
* ``gradual`` — each decision goes to the learned policy with probability ``ratio`` (a
  seeded, counter-based draw, so a restored state makes the same draws). Every
  ``window_decisions`` decisions the gate compares the mean reward of intervals credited
  to learned decisions with those credited to baseline ones. An interval is credited to
  whoever decided into it, except after a change: a *reduction* (fewer pods, a lower
  limit) is credited with the next ``credit_intervals`` intervals, whoever holds in
  between, because its SLO damage arrives late (the load outgrows the smaller fleet;
  pods take time to start) and one-interval credit bills it to whoever holds next — which
  once let a model that always scales down be promoted. A hold forced by a cooldown the
  other policy's change started is credited to that change's author too. SLO violations
  after learned decisions demote at once, unless the baseline broke the SLO at least as
  often in the same window (a flash crowd that beats whoever decides is not the model's
  fault); then the scores decide: at least as good raises the ratio by ``step_up``,
  anything else lowers it by the larger ``backoff`` — trust is earned slowly and lost fast.
* ``full`` — the learned policy decides every time (scores are still recorded).

A demotion marks the learned policy *distrusted* until its next promotion; meanwhile the
baseline also moves the container limits back to the workload's own (the HPA it stands
for never changes limits, so a model's limit cut would otherwise outlive its demotion).

The whole state is a small dict of numbers (it lives in the custom resource's status) and
round-trips exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GateMode = Literal["shadow", "gradual", "full"]
Source = Literal["learned", "baseline"]

_MASK64 = (1 << 64) - 1


def _uniform(seed: int, counter: int) -> float:
    """A uniform draw in [0, 1) from (seed, counter) — SplitMix64, stateless and exact to restore."""
    z = (seed * 0x9E3779B97F4A7C15 + (counter + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


class GateConfig(BaseModel):
    """Rollout parameters (``spec.rollout`` of an AutoscalePolicy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: GateMode = "shadow"
    initial_ratio: float = Field(0.1, ge=0, le=1, description="Share given to the learned policy at start.")
    step_up: float = Field(0.1, gt=0, le=1, description="Ratio increase after a good window.")
    backoff: float = Field(0.2, gt=0, le=1, description="Ratio decrease after a bad window.")
    min_ratio: float = Field(0.0, ge=0, le=1)
    max_ratio: float = Field(1.0, ge=0, le=1)
    window_decisions: int = Field(20, ge=2, le=10_000, description="Decisions per evaluation window.")
    min_samples: int = Field(3, ge=1, description="Fewest learned outcomes needed to promote.")
    credit_intervals: int = Field(
        3,
        ge=1,
        le=100,
        description="Intervals after a reduction (fewer pods, a lower limit) credited to the policy that made it.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _ratios(self) -> GateConfig:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio ({self.min_ratio}) must not exceed max_ratio ({self.max_ratio})")
        return self


@dataclass
class GateState:
    """Everything the gate remembers between decisions."""

    ratio: float
    counter: int = 0
    window_count: int = 0
    learned_sum: float = 0.0
    learned_n: int = 0
    learned_violations: int = 0
    baseline_sum: float = 0.0
    baseline_n: int = 0
    baseline_violations: int = 0
    baseline_reference: float | None = None
    last_learned_score: float | None = None
    last_baseline_score: float | None = None
    windows: int = 0
    promotions: int = 0
    demotions: int = 0
    last_verdict: str = ""
    #: The policy whose change is still being credited, and for how many more intervals.
    holder: str | None = None
    holder_left: int = 0
    #: Set by a demotion, cleared by a promotion: while it is set, the baseline also moves
    #: the container limits back to the workload's own (see rlscale.policy.decide).
    distrusted: bool = False

    @classmethod
    def initial(cls, cfg: GateConfig) -> GateState:
        ratio = {"shadow": 0.0, "full": 1.0}.get(cfg.mode, cfg.initial_ratio)
        return cls(ratio=min(max(ratio, cfg.min_ratio), cfg.max_ratio) if cfg.mode == "gradual" else ratio)

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int | str | None]) -> GateState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


def choose(cfg: GateConfig, state: GateState) -> Source:
    """Who acts on this decision. Advances the draw counter."""
    state.counter += 1
    if cfg.mode == "shadow":
        return "baseline"
    if cfg.mode == "full":
        return "learned"
    return "learned" if _uniform(cfg.seed, state.counter) < state.ratio else "baseline"


def credited(state: GateState, decided_by: Source) -> Source:
    """Who the interval that just ended is credited to: the holder of a recent change, or its decider.

    Counts down the holder's intervals; call once per interval, whether or not its outcome is known.
    """
    if state.holder_left > 0 and state.holder in ("learned", "baseline"):
        state.holder_left -= 1
        return "learned" if state.holder == "learned" else "baseline"
    return decided_by


def note_decision(
    cfg: GateConfig, state: GateState, source: Source, *, reduced: bool, increased: bool, blocked: bool
) -> None:
    """Remember who changed the workload last, and for how many intervals its change is credited to it.

    A reduction (fewer pods, a lower limit) holds the next ``credit_intervals``: its damage
    arrives late. An increase holds only the next one (its cost is billed at once; its
    benefit arriving late only makes the gate slower to trust it, the safe direction) —
    except the baseline's increase while a model's cut is still being billed: the HPA
    scaling back up after an always-down model's cut is the repair, and the violations
    until the new pods serve are the cut's (seen on the local stack: billed to the
    baseline's scale-up, they excused the model, which was promoted).
    A decision that could not do what it chose because of a cooldown the *other* policy's
    change started (the HPA blocked from scaling down after a model scaled to the maximum)
    passes its interval to the change's author as well.
    """
    if reduced:
        state.holder, state.holder_left = source, cfg.credit_intervals
    elif increased:
        if source == "baseline" and state.holder == "learned" and state.holder_left > 0:
            return  # the baseline repairing a model's cut: the damage still playing out stays the cut's
        state.holder, state.holder_left = source, 1
    elif blocked and state.holder is not None and state.holder != source:
        state.holder_left = max(state.holder_left, 1)


def record_outcome(cfg: GateConfig, state: GateState, source: Source, reward: float, violated: bool) -> None:
    """Credit one interval's reward to the policy whose decision led into it; close windows."""
    if source == "learned":
        state.learned_sum += reward
        state.learned_n += 1
        state.learned_violations += int(violated)
    else:
        state.baseline_sum += reward
        state.baseline_n += 1
        state.baseline_violations += int(violated)
    state.window_count += 1
    if state.window_count >= cfg.window_decisions:
        _close_window(cfg, state)


def _close_window(cfg: GateConfig, state: GateState) -> None:
    learned = state.learned_sum / state.learned_n if state.learned_n else None
    if state.baseline_n >= cfg.min_samples:
        state.baseline_reference = state.baseline_sum / state.baseline_n
    state.last_learned_score = learned
    state.last_baseline_score = state.baseline_sum / state.baseline_n if state.baseline_n else None
    state.windows += 1
    verdict: str
    if cfg.mode == "gradual":
        if state.learned_violations > 0 and not _baseline_broke_as_often(cfg, state):
            verdict = (
                f"demoted: SLO broken after {state.learned_violations} of {state.learned_n} learned decisions, "
                f"{state.baseline_violations} of {state.baseline_n} baseline ones"
            )
            _move(cfg, state, -cfg.backoff)
            state.distrusted = True
        elif learned is None or state.learned_n < cfg.min_samples or state.baseline_reference is None:
            verdict = f"held: too few samples (learned {state.learned_n}, baseline {state.baseline_n})"
        elif learned >= state.baseline_reference:
            verdict = f"promoted: learned {learned:.3f} ≥ baseline {state.baseline_reference:.3f}"
            _move(cfg, state, cfg.step_up)
            state.distrusted = False
        else:
            verdict = f"demoted: learned {learned:.3f} < baseline {state.baseline_reference:.3f}"
            _move(cfg, state, -cfg.backoff)
            state.distrusted = True
    else:
        verdict = f"{cfg.mode}: scores recorded"
    state.last_verdict = verdict
    state.window_count = 0
    state.learned_sum = state.baseline_sum = 0.0
    state.learned_n = state.baseline_n = state.learned_violations = state.baseline_violations = 0


def _baseline_broke_as_often(cfg: GateConfig, state: GateState) -> bool:
    """Whether, in this window, the baseline broke the SLO at least as often per decision as the learned policy.

    Needs ``min_samples`` baseline outcomes: with too few (as at a high ratio), a learned
    violation is not excused.
    """
    if state.baseline_n < cfg.min_samples or state.learned_n == 0:
        return False
    return state.baseline_violations * state.learned_n >= state.learned_violations * state.baseline_n


def _move(cfg: GateConfig, state: GateState, delta: float) -> None:
    new = min(max(round(state.ratio + delta, 6), cfg.min_ratio), cfg.max_ratio)
    if new > state.ratio:
        state.promotions += 1
    elif new < state.ratio:
        state.demotions += 1
    state.ratio = new
