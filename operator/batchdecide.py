"""Batched decisions: the policies due in one tick are decided in one ``decide_batch`` call.

Every policy runs its own reconcile, but the handlers start all policies of a namespace
(with the same interval) at the same moments and their Prometheus reads finish together
(:mod:`~rlscale.operator.batchread`), so they reach the decision within a few
milliseconds of each other. :class:`DecisionBatcher` collects the decisions asked for
within ``window_s`` of the first one (or until ``max_batch`` are waiting) and runs
policy/'s :func:`~rlscale.policy.decide.decide_batch` once for all of them: one ONNX run
per model instead of one per policy. ``decide_batch`` gives each controller exactly what
:func:`~rlscale.policy.decide.decide` would, so batching changes when a decision is
computed, never what it is (tests/operator/test_batchdecide.py checks it).

If the batch call raises (a bad input in one controller), each waiting decision is retried
alone, so one policy's trouble stays its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, decide, decide_batch
from rlscale.policy.model import PolicyModel
from rlscale.policy.observation import Observation

Result = tuple[Decision, ControllerState]


@dataclass(slots=True)
class _Request:
    obs: Observation
    config: DecisionConfig
    state: ControllerState
    model: PolicyModel | None
    model_error: str | None
    future: asyncio.Future[Result]


class DecisionBatcher:
    """Collects concurrent decisions into ``decide_batch`` calls.

    ``observe(seconds, size)`` is called after each batch (the operator's metrics).
    """

    def __init__(
        self,
        *,
        window_s: float = 0.005,
        max_batch: int = 1024,
        observe: Callable[[float, int], None] | None = None,
    ) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError("window_s must be >= 0 and max_batch >= 1")
        self.window_s = window_s
        self.max_batch = max_batch
        self._observe = observe
        self._waiting: list[_Request] = []
        self._timer: asyncio.TimerHandle | None = None

    async def decide(
        self,
        obs: Observation,
        config: DecisionConfig,
        state: ControllerState,
        model: PolicyModel | None,
        model_error: str | None = None,
    ) -> Result:
        """What ``decide(obs, config, state, model, model_error=model_error)`` returns, decided in a batch."""
        loop = asyncio.get_running_loop()
        request = _Request(obs, config, state, model, model_error, loop.create_future())
        self._waiting.append(request)
        if len(self._waiting) >= self.max_batch:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self.flush)
        return await request.future

    def flush(self) -> None:
        """Decide everything waiting now (the timer calls this; so does a full batch)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        live = [r for r in batch if not r.future.done()]  # a cancelled reconcile no longer waits
        if not live:
            return
        start = time.perf_counter()
        try:
            decisions, states = decide_batch(
                [r.obs for r in live],
                [r.config for r in live],
                [r.state for r in live],
                [r.model for r in live],
                model_errors=[r.model_error for r in live],
            )
        except Exception:
            for r in live:  # one controller's bad input must not fail the others
                try:
                    r.future.set_result(decide(r.obs, r.config, r.state, r.model, model_error=r.model_error))
                except Exception as exc:
                    r.future.set_exception(exc)
        else:
            for r, d, s in zip(live, decisions, states, strict=True):
                r.future.set_result((d, s))
        if self._observe is not None:
            self._observe(time.perf_counter() - start, len(live))
