"""Restart-resume: status restores the ControllerState exactly; an unapplied change is finished, not repeated."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import kmock
import pytest
from conftest import FakePrometheus, api_client, steady_service
from kmock_ext import OperatorEmulator, deployment, policy
from random_model import random_mlp_onnx, random_recurrent_onnx

from rlscale.operator.handlers import Runtime
from rlscale.operator.kube import KubeApi
from rlscale.operator.reconcile import PolicyRef
from rlscale.operator.settings import OperatorSettings

pytestmark = pytest.mark.asyncio

ASP = kmock.resource("rlscale.io", "v1alpha1", "autoscalepolicies")
DEPLOY = kmock.resource("apps", "v1", "deployments")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")


class Crash(BaseException):
    """The operator process dies (not an API error: nothing catches it)."""


class CrashOnScale(KubeApi):
    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        raise Crash()


def _setup(
    emulator: OperatorEmulator, prom: FakePrometheus, mode: str = "gradual", model: bytes | None = None
) -> dict[str, Any]:
    emulator.objects[DEPLOY, "shop", "web"] = deployment("web", "shop", replicas=2)
    emulator.objects[CONFIGMAPS, "shop", "model"] = {
        "metadata": {"name": "model", "namespace": "shop", "resourceVersion": "3"},
        "binaryData": {"m": base64.b64encode(model or random_mlp_onnx(seed=3)).decode()},
    }
    prom.values = steady_service(0.9)
    body = policy(
        "web",
        "shop",
        "web",
        prom.url,
        rollout={"mode": mode, "initialRatio": 0.5, "windowDecisions": 2, "minSamples": 1, "seed": 11},
        model={"source": "configMap", "configMapRef": {"name": "model", "key": "m"}},
        limits={"scaleDownCooldownSeconds": 0, "limitChangeCooldownSeconds": 0},
    )
    emulator.objects[ASP, "shop", "web"] = body
    return body


def _stored_status(emulator: OperatorEmulator) -> dict[str, Any]:
    # Through JSON, as a restarted operator reads it from the API server.
    return json.loads(json.dumps(emulator.objects[ASP, "shop", "web"].raw["status"]))


async def _crash_after_first_decision(
    emulator: OperatorEmulator, prom: FakePrometheus
) -> tuple[dict[str, Any], OperatorSettings, PolicyRef, dict[str, Any]]:
    """A shadow-mode policy whose operator dies after writing its first decision, before scaling.

    Returns the policy, the settings, its ref and the status the dead operator left behind.
    """
    body = _setup(emulator, prom, mode="shadow")
    settings = OperatorSettings(metrics_port=0)
    ref = PolicyRef("shop", "web", 1)
    client = api_client(str(emulator.url))
    crashing = Runtime.build(settings, client)
    crashing.reconciler.kube = CrashOnScale(client, crashing.executor)
    with pytest.raises(Crash):
        await crashing.reconciler.reconcile(ref, body["spec"], None)
    crashing.close()
    return body, settings, ref, _stored_status(emulator)


@pytest.mark.parametrize("memory", [0, 8], ids=["feed-forward", "with-memory"])
async def test_status_round_trip_resumes_the_same_decisions(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus, memory: int
) -> None:
    """Operator A makes 3 decisions; B (fresh process state) continues from status exactly as A would have.

    With a model that has memory, the context it carries is part of the stored state, so B
    resumes A's memory rather than starting from an empty one.
    """
    model = random_recurrent_onnx(context=memory, seed=3) if memory else None
    body = _setup(emulator, fake_prometheus, model=model)
    clock = iter(1_800_000_000.0 + 15 * i for i in range(100))
    settings = OperatorSettings(metrics_port=0)
    ref = PolicyRef("shop", "web", 1)

    a = Runtime.build(settings, api_client(str(emulator.url)))
    a.reconciler.clock = lambda: next(clock)
    status: dict[str, Any] | None = None
    for _ in range(3):
        status = (await a.reconciler.reconcile(ref, body["spec"], status)).status
    # A keeps going in memory; B restarts from what the API server stored.
    times = [next(clock) for _ in range(3)]
    a_decisions = []
    a_status = status
    emulator_snapshot = _stored_status(emulator)
    deployment_snapshot = copy.deepcopy(emulator.objects[DEPLOY, "shop", "web"].raw)
    a.reconciler.clock = iter(times).__next__
    for _ in range(3):
        out = await a.reconciler.reconcile(ref, body["spec"], a_status)
        a_status = out.status
        a_decisions.append((out.decision.source, out.decision.action, out.decision.replicas))  # type: ignore[union-attr]
    a.close()

    async def resume(stored: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """A fresh operator continuing from ``stored``, the Deployment put back as it was at the snapshot."""
        emulator.objects[DEPLOY, "shop", "web"] = copy.deepcopy(deployment_snapshot)
        b = Runtime.build(settings, api_client(str(emulator.url)))
        b.reconciler.clock = iter(times).__next__
        decisions, b_status = [], stored
        for _ in range(3):
            out = await b.reconciler.reconcile(ref, body["spec"], b_status)
            b_status = out.status
            decisions.append((out.decision.source, out.decision.action, out.decision.replicas))  # type: ignore[union-attr]
        b.close()
        return decisions, b_status

    b_decisions, b_status = await resume(copy.deepcopy(emulator_snapshot))
    assert b_decisions == a_decisions
    assert b_status["controllerState"] == a_status["controllerState"]
    assert b_status["controllerState"]["decisions"] == 6
    context = b_status["controllerState"]["context"]
    if not memory:
        assert context is None
    else:
        assert len(context) == memory
        # The stored memory mattered: a restart that lost it would be somewhere else now.
        forgetful = copy.deepcopy(emulator_snapshot)
        forgetful["controllerState"]["context"] = None
        _, c_status = await resume(forgetful)
        assert max(abs(x - y) for x, y in zip(context, c_status["controllerState"]["context"], strict=True)) > 1e-3
    # The gate really drew: gradual at 0.5 with 6 draws.
    assert b_status["controllerState"]["gate"]["counter"] == 6


async def test_crash_between_decision_and_action_finishes_it_once(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    body, settings, ref, stored = await _crash_after_first_decision(emulator, fake_prometheus)
    assert stored["pending"]["replicas"] == 6 and stored["controllerState"]["decisions"] == 1
    assert stored["lastDecision"]["applied"] is False
    assert emulator.objects[DEPLOY, "shop", "web"].raw["spec"]["replicas"] == 2

    restarted = Runtime.build(settings, api_client(str(emulator.url)))
    try:
        out = await restarted.reconciler.reconcile(ref, body["spec"], stored)
        assert out.decision is None and out.applied  # finished the old decision, made no new one
        assert emulator.objects[DEPLOY, "shop", "web"].raw["spec"]["replicas"] == 6
        after = _stored_status(emulator)
        assert "pending" not in after
        assert after["controllerState"]["decisions"] == 1
        assert after["lastDecision"]["applied"] is True
        # The next reconcile is a new decision (number 2) from the new replica count.
        out = await restarted.reconciler.reconcile(ref, body["spec"], after)
        assert out.decision is not None and out.decision.previous_replicas == 6
        assert _stored_status(emulator)["controllerState"]["decisions"] == 2
    finally:
        restarted.close()
    scale_calls = [c for c in emulator.calls if c == ("apps", "deployments", "scale", "patch")]
    assert len(scale_calls) <= 2  # the resumed one, and possibly one from decision 2


async def test_stale_pending_change_is_dropped_not_applied(
    emulator: OperatorEmulator, fake_prometheus: FakePrometheus
) -> None:
    body, settings, ref, stored = await _crash_after_first_decision(emulator, fake_prometheus)
    later = Runtime.build(settings, api_client(str(emulator.url)))
    later.reconciler.clock = lambda: stored["pending"]["createdAt"] + 3600
    events: list[tuple[str, str, str]] = []
    try:
        out = await later.reconciler.reconcile(ref, body["spec"], stored, post_event=lambda *e: events.append(e))
    finally:
        later.close()
    assert not out.applied
    assert any(reason == "PendingDropped" for _, reason, _ in events)
    assert emulator.objects[DEPLOY, "shop", "web"].raw["spec"]["replicas"] == 2
