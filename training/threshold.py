"""The threshold autoscaler: scale out above an upper CPU threshold, in below a lower one, with a cooldown.

The rule most cloud autoscalers started with (AWS step scaling, the orchestration study's
baseline): when the observed CPU utilisation is above ``upper``, add ``step`` replicas;
below ``lower``, remove ``step``; after any change, wait ``cooldown_s`` before the next.
It is not one of the operator's baselines, so it runs here as a decision callback — but its
proposal goes through :func:`rlscale.policy.decide.decide` as a fixed-count recommendation,
so the safety mask (bounds, step limits, the mask's own cooldowns, no data → no scale-down)
judges it exactly as it judges every other policy.

Its three knobs are tuned like every baseline: on the trace's training window only
(:func:`tune_threshold`), by cumulative reward (the declared objective).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.policy.baselines import BaselineConfig
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide
from rlscale.training.episodes import episode_metrics, run_episodes
from rlscale.training.evaluate import aggregate, decision_config
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import Trace


class ThresholdConfig(BaseModel):
    """The threshold rule's knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upper: float = Field(0.8, gt=0, le=3, description="Scale out when CPU utilisation (of the limit) is above this.")
    lower: float = Field(0.3, ge=0, lt=3, description="Scale in when it is below this.")
    cooldown_s: float = Field(300.0, ge=0, description="Seconds after a change before the rule acts again.")
    step: int = Field(1, ge=1, description="Replicas added or removed per action.")

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


#: The tuning grid (upper × lower × cooldown), searched on the training window.
UPPERS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
LOWERS: tuple[float, ...] = (0.2, 0.4)
COOLDOWNS_S: tuple[float, ...] = (60.0, 300.0)


def threshold_target(th: ThresholdConfig, replicas: int, utilisation: float | None, since_change_s: float) -> int:
    """The rule's proposal: ``replicas ± step`` past a threshold once the cooldown is over, else ``replicas``."""
    if utilisation is None or since_change_s < th.cooldown_s:
        return replicas
    if utilisation > th.upper:
        return replicas + th.step
    if utilisation < th.lower:
        return max(replicas - th.step, 0)
    return replicas


def threshold_fn(config: DecisionConfig, th: ThresholdConfig) -> Callable[[Observation], Decision]:
    """A stateful decision callback: the rule's proposal, masked and enforced by ``decide``."""
    state = ControllerState.initial(config)
    last_change = -math.inf

    def fn(obs: Observation) -> Decision:
        nonlocal state, last_change
        target = threshold_target(th, obs.replicas, obs.cpu_utilization, obs.timestamp - last_change)
        proposal = config.model_copy(update={"baseline": BaselineConfig(kind="static", static_replicas=target)})
        decision, state = decide(obs, proposal, state)
        if decision.replicas != obs.replicas:
            last_change = obs.timestamp
        return decision

    return fn


def threshold_grid() -> list[ThresholdConfig]:
    return [
        ThresholdConfig(upper=u, lower=lo, cooldown_s=c)
        for u, lo, c in itertools.product(UPPERS, LOWERS, COOLDOWNS_S)
        if lo < u
    ]


def tune_threshold(sim: SimConfig, train_window: Trace, seeds: Sequence[int] = (0,)) -> dict[str, Any]:
    """The grid point with the highest cumulative reward on ``train_window`` (a training window only)."""
    if train_window.window != "train":
        raise ValueError(f"the threshold rule is tuned on a training window only, got {train_window.window!r}")
    grid = threshold_grid()
    base = decision_config(sim, BaselineConfig(kind="static"))
    fns = [threshold_fn(base, th) for _ in seeds for th in grid]
    logs = run_episodes(sim, train_window, fns, [s for s in seeds for _ in grid])
    scores = []
    for i, _th in enumerate(grid):
        per_seed = [episode_metrics(logs[k * len(grid) + i]) for k in range(len(seeds))]
        scores.append(aggregate(per_seed)["cumulative_reward"])
    best = max(range(len(grid)), key=lambda i: scores[i])
    return {"chosen": grid[best], "tuned_on": train_window.window, "reward": scores[best], "grid_size": len(grid)}


__all__ = ["ThresholdConfig", "threshold_fn", "threshold_grid", "threshold_target", "tune_threshold"]
