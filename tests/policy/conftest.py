"""Shared builders for the policy tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rlscale.policy.decide import Observation

T0 = 1_700_000_000.0  # a fixed wall-clock origin (2023-11-14, a Tuesday)


def make_obs(**overrides: object) -> Observation:
    """A healthy observation of a 5-replica Deployment; override any field."""
    fields: dict[str, object] = {
        "timestamp": T0,
        "replicas": 5,
        "ready_replicas": 5,
        "cpu_limit_m": 500,
        "memory_limit_mib": 512,
        "cpu_utilization": 0.7,
        "memory_utilization": 0.5,
        "request_rate": 100.0,
        "request_rate_prev": 100.0,
        "latency_p50_ms": 40.0,
        "latency_p99_ms": 120.0,
        "latency_p99_prev_ms": 120.0,
        "error_rate": 0.0,
        "queue_per_replica": 1.0,
    }
    fields.update(overrides)
    return Observation(**fields)  # type: ignore[arg-type]


class LogitsModel:
    """A stand-in for :class:`PolicyModel` whose logits the test chooses.

    Property tests use it to make the "learned policy" propose every action in turn;
    the real ONNX runner is tested on real ONNX files in test_model.py.
    """

    context_size = 0  # feed-forward, like the shipped model

    def __init__(self, logits: np.ndarray) -> None:
        self._logits = np.asarray(logits, dtype=np.float32).reshape(1, -1)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        return np.repeat(self._logits, obs.shape[0], axis=0)

    def step(self, obs: np.ndarray, context: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.logits(obs), np.zeros((obs.shape[0], 0), dtype=np.float32)


@pytest.fixture
def obs_factory() -> Callable[..., Observation]:
    return make_obs
