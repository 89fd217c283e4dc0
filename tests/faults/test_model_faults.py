"""Fault 5: a corrupt or mismatched model swapped into the policy's ConfigMap mid-run.

The policy runs in ``full`` rollout (the learned policy decides every interval) with its model
in a ConfigMap that the operator re-reads every second. Mid-run the ConfigMap's model is
replaced by (a) the same file truncated to half its bytes, (b) a well-formed model whose
metadata claims another observation spec, and finally (c) the good model again. Promised
(docs/operator.md, "Faults"): while the model is bad every decision is the baseline's,
``ModelLoaded=False`` says why (the message names what is wrong), a Warning Event is posted
once, decisions keep coming on time; when a good model returns, ``ModelLoaded=True`` and the
learned policy decides again within two intervals.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e_helpers import threshold_policy_onnx, wait_for_events
from faults_helpers import INTERVAL_S, FaultStack, Recorder, Seen, counters, fault_stack, model_with_spec_hash
from kubernetes import client

from rlscale.devstack.cluster import LocalCluster
from rlscale.devstack.operator_stack import OperatorProcess
from rlscale.policy.spec import SPEC_HASH

pytestmark = pytest.mark.faults

LOAD = [110.0] * 400  # requests/s: steady, one scale-up from 2 pods then holding


@pytest.fixture
def stack(local_cluster: LocalCluster, admin_api: client.ApiClient, helm_binary: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    with fault_stack(local_cluster, admin_api, helm_binary, tmp_path, load=LOAD, replicas=2) as s:
        yield s


def _bad_phase(
    stack: FaultStack, op: OperatorProcess, rec: Recorder, data: bytes, expect_in_message: str
) -> list[Seen]:
    """Swap ``data`` in; judge the next three intervals; return the statuses written meanwhile.

    A refused model changes what a user sees (ModelLoaded, the decision's source), so the first
    decision after the swap is written at once; the holding decisions after it may not be
    (the status heartbeat), so that no learned decision was made is read from ``/metrics``.
    """
    before = rec.count()
    stack.set_model(data)
    t0 = time.monotonic()
    first = rec.wait(
        lambda r: next((s for s in r.after(before) if expect_in_message in (s.model.get("error") or "")), None),
        timeout=3 * INTERVAL_S,
        what=f"ModelLoaded=False naming the fault ({expect_in_message})",
    )
    # Noticed at the first decision after the swap (the ConfigMap is re-read every second).
    assert first.first_seen - t0 <= 2 * INTERVAL_S + 1, stack.diagnostics(rec)
    c1 = counters(op)
    time.sleep(3 * INTERVAL_S)
    c2 = counters(op)
    assert c2["learned"] == c1["learned"], f"learned decisions with a refused model: {c1} → {c2}"
    assert c2["baseline"] - c1["baseline"] >= 2, f"decisions stopped while the model was refused: {c1} → {c2}"
    covered = rec.after(first.number - 1)
    for s in covered:
        cond = s.condition("ModelLoaded")
        assert cond.get("status") == "False", (s.number, cond)
        assert expect_in_message in cond.get("message", ""), (s.number, cond)
        assert s.source == "baseline", f"decision #{s.number} was the learned policy's with a bad model\n" + (
            stack.diagnostics(rec)
        )
    return covered


def test_corrupt_and_mismatched_models_fall_back_to_the_baseline_and_recover(stack: FaultStack) -> None:
    good = threshold_policy_onnx()
    op = stack.operator().start()
    stack.create_policy(stack.spec(mode="full"))
    with Recorder(stack.api, stack.namespace) as rec:
        # A good model: the learned policy decides.
        rec.wait(
            lambda r: [s for s in r.snapshot() if s.model.get("loaded") and s.source == "learned"],
            timeout=6 * INTERVAL_S,
            what="a learned decision with the good model",
        )
        truncated = _bad_phase(stack, op, rec, good[: len(good) // 2], "not a valid ONNX model")
        mismatched = _bad_phase(stack, op, rec, model_with_spec_hash(good, "0" * len(SPEC_HASH)), "was built for spec")

        # The good model again: loaded and deciding within two intervals.
        before = rec.count()
        c1 = counters(op)
        stack.set_model(good)
        t0 = time.monotonic()
        back = rec.wait(
            lambda r: next((s for s in r.after(before) if s.model.get("loaded") is True), None),
            timeout=3 * INTERVAL_S,
            what="ModelLoaded=True after the good model returned",
        )
        assert back.first_seen - t0 <= 2 * INTERVAL_S + 1, stack.diagnostics(rec)
        assert back.condition("ModelLoaded").get("status") == "True", back.conditions
        assert back.source == "learned", stack.diagnostics(rec)
        assert counters(op)["learned"] > c1["learned"]
        numbers = [s.number for s in rec.snapshot()]

    # Decision numbers in the written statuses only grow (none reused), through both bad models.
    assert numbers == sorted(set(numbers)), numbers
    assert truncated[-1].number < mismatched[0].number
    # One Warning for the transition to False (two bad models in a row are one transition).
    warnings = wait_for_events(
        stack.api,
        stack.namespace,
        "web",
        lambda evs: [e for e in evs if e.reason == "ModelUnavailable" and e.type == "Warning"],
        what="the ModelUnavailable Warning Event",
    )
    assert sum(int(e.count or 1) for e in warnings) == 1, stack.events()
    assert "not a valid ONNX model" in warnings[0].message, stack.events()
