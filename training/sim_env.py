"""A single-environment Gymnasium wrapper over :class:`~rlscale.training.sim.VectorSim`.

PPO in this project steps :class:`VectorSim` directly (thousands of envs per numpy
call); this wrapper exists so that the simulator also plugs into the wider ecosystem —
gymnasium's checkers and wrappers, Stable-Baselines3 and sb3-contrib's ``MaskablePPO``
(which calls :meth:`AutoscaleEnv.action_masks`) — without a second implementation of
the world. Everything here is shape plumbing; the dynamics are VectorSim's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from rlscale.policy.actions import N_ACTIONS
from rlscale.policy.spec import FEATURES, N_FEATURES
from rlscale.training.sim import LoadLike, VectorSim
from rlscale.training.sim_config import SimConfig
from rlscale.training.workloads import PATTERNS, training_mix

ObsType = npt.NDArray[np.float32]

#: The observation bounds, straight from the spec's declared feature ranges.
OBS_LOW = np.array([f.lo for f in FEATURES], dtype=np.float32)
OBS_HIGH = np.array([f.hi for f in FEATURES], dtype=np.float32)


class AutoscaleEnv(gym.Env[ObsType, np.int64]):
    """One simulated Deployment; actions are indices into the policy's composite action table.

    ``loads`` defaults to one generated series of each pattern (seed 0). The current
    safety mask is available as :meth:`action_masks` (the sb3-contrib convention) and in
    every ``info["action_mask"]``; a forbidden action is applied as a no-op, exactly as
    the mask's clamped outcome says.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        config: SimConfig | None = None,
        loads: LoadLike | Sequence[LoadLike] | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else SimConfig()
        if loads is None:
            loads = list(training_mix(0, n_generated=len(PATTERNS)).loads)
        self.sim = VectorSim(self.config, loads, n_envs=1, seed=seed, autoreset=False)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.observation_space = spaces.Box(low=OBS_LOW, high=OBS_HIGH, shape=(N_FEATURES,), dtype=np.float32)
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.sim.reset(seed=seed)
        self._done = False
        return obs[0], {"action_mask": self.action_masks()}

    def step(self, action: np.int64 | int) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before step()")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action must be an integer in [0, {N_ACTIONS}), got {action!r}")
        obs, rew, term, trunc, info = self.sim.step(np.array([action], dtype=np.int64))
        out: dict[str, Any] = {k: (v[0] if isinstance(v, np.ndarray) and v.ndim >= 1 else v) for k, v in info.items()}
        self._done = bool(term[0] or trunc[0])
        out["action_mask"] = self.action_masks()
        return obs[0], float(rew[0]), bool(term[0]), bool(trunc[0]), out

    def action_masks(self) -> npt.NDArray[np.bool_]:
        """Allowed actions now, shape ``(N_ACTIONS,)``; the no-op (0) is always allowed."""
        return self.sim.action_masks()[0].copy()
