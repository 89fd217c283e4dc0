"""A model run at a decision interval far from the one it was trained at: status and one Warning say so.

The model still decides (its moves stay inside the safety mask); the user is told that it
moves several times where it learnt to move once (docs/training.md, "The decision interval").
"""

from __future__ import annotations

import base64
from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, eventually, running_operator
from kmock_ext import OperatorEmulator, deployment, policy
from random_model import random_mlp_onnx
from test_operator_kmock import _busy_metrics, _conditions, _create, _events, _status

from rlscale.operator.report import INTERVAL_TOLERANCE, interval_mismatch
from rlscale.policy.model import DEFAULT_MODEL_PATH, PolicyModel

CONFIGMAPS = kmock.resource("", "v1", "configmaps")


def _trained_at(step_s: Any) -> bytes:
    return random_mlp_onnx(seed=3, training={"seed": 0, "config": {"sim": {"step_s": step_s}}})


@pytest.mark.parametrize(
    ("trained", "interval", "says"),
    [
        (None, 5, ""),  # the model does not say: nothing to compare
        (60.0, 60, ""),
        (60.0, 30, ""),  # within the tolerance either way
        (60.0, 120, ""),
        (60.0, 15, "more moves"),
        (60.0, 5, "more moves"),
        (60.0, 300, "fewer moves"),
    ],
)
def test_only_an_interval_beyond_the_tolerance_is_a_mismatch(trained: float | None, interval: int, says: str) -> None:
    message = interval_mismatch(trained, interval)
    assert (says in message) if says else message == ""
    if says:
        assert f"trained at {trained:g} s" in message and f"every {interval} s" in message
        assert "spec.intervalSeconds" in message
        assert ("scaleUpCooldownSeconds: 60 paces" in message) == (interval < 60)  # the advice only for a faster pace
    assert INTERVAL_TOLERANCE == 2.0


def test_cooldowns_that_pace_moves_like_the_model_are_not_a_mismatch() -> None:
    assert interval_mismatch(60.0, 15, paced_s=60.0) == ""  # may move once a minute: as trained
    assert interval_mismatch(60.0, 15, paced_s=30.0) == ""  # within the tolerance
    assert "more moves" in interval_mismatch(60.0, 15, paced_s=0.0)  # the default: no scale-up cooldown
    assert "fewer moves" in interval_mismatch(60.0, 300, paced_s=600.0)  # slower is slower, whatever the pace


def test_the_model_reports_the_interval_it_was_trained_at() -> None:
    assert PolicyModel.load(DEFAULT_MODEL_PATH).trained_interval_s == 60.0  # the shipped model: one-minute decisions
    assert PolicyModel.from_bytes(_trained_at(15)).trained_interval_s == 15.0
    for unrecorded in (None, "60", True, -1, 0):
        assert PolicyModel.from_bytes(_trained_at(unrecorded)).trained_interval_s is None, unrecorded
    assert PolicyModel.from_bytes(random_mlp_onnx(seed=3)).trained_interval_s is None


def _with_model(
    emulator: OperatorEmulator, data: bytes, prom: FakePrometheus, interval: int, **spec: Any
) -> dict[str, Any]:
    """A busy Deployment, the model in a ConfigMap, and the policy (to create) that runs it every ``interval`` s."""
    emulator.objects[kmock.resource("apps", "v1", "deployments"), "shop", "web"] = deployment("web", "shop", replicas=2)
    _busy_metrics(prom)
    emulator.objects[CONFIGMAPS, "shop", "model"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model", "namespace": "shop", "resourceVersion": "5"},
        "binaryData": {"policy.onnx": base64.b64encode(data).decode()},
    }
    return policy(
        "web",
        "shop",
        "web",
        prom.url,
        intervalSeconds=interval,
        model={"source": "configMap", "configMapRef": {"name": "model", "key": "policy.onnx"}},
        **spec,
    )


@pytest.mark.asyncio
async def test_a_mismatched_interval_is_in_status_with_one_warning(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    async with running_operator(emulator):
        await _create(emulator, _with_model(emulator, _trained_at(60), fake_prometheus, interval=5))
        # Three decisions at least: the Warning is posted once, for the transition, not per decision.
        status = await eventually(
            lambda: (s := _status(emulator, "shop", "web")).get("controllerState", {}).get("decisions", 0) >= 3 and s,
            timeout=40,
        )
        warnings = await eventually(lambda: _events(emulator, "IntervalMismatch"))
    model = _conditions(status)["ModelLoaded"]
    assert (model["status"], model["reason"]) == ("True", "IntervalMismatch")
    assert "trained at 60 s decisions" in model["message"] and "every 5 s" in model["message"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert status["lastDecision"]["source"] in ("baseline", "learned")  # it still decides


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("trained", "spec"),
    [
        (5, {}),  # trained at the policy's own interval
        (60, {"limits": {"scaleUpCooldownSeconds": 60}}),  # decides every 5 s, moves at most once a minute
    ],
)
async def test_a_model_at_its_own_pace_is_simply_loaded(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus, trained: int, spec: dict[str, Any]
) -> None:
    async with running_operator(emulator):
        await _create(emulator, _with_model(emulator, _trained_at(trained), fake_prometheus, interval=5, **spec))
        status = await eventually(lambda: (s := _status(emulator, "shop", "web")).get("lastDecision") and s)
    model = _conditions(status)["ModelLoaded"]
    assert (model["status"], model["reason"]) == ("True", "Loaded")
    assert not _events(emulator, "IntervalMismatch")
