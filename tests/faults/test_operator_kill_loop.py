"""Fault 3: the operator SIGKILLed 20 times at random points, next to an undisturbed twin run.

Two identical worlds run side by side (each its own namespace, chart install, twin and
Prometheus; the same load and policy, ``gradual`` rollout with a fixed seed): one operator is
left alone, the other is killed with SIGKILL (no shutdown handler runs) at a random moment
0.2–1.5 intervals after each start, 20 times, and started again as a new process. A kill can
land anywhere: between reconciles, in the middle of one, between writing a change's intent and
applying it. Promised (docs/operator.md, "Faults"):

* the Deployment takes the same path as in the undisturbed run (its replica levels, timing aside);
* no action twice: every replica change in the Deployment is one decision's, announced by at
  most one ``Scaled`` Event;
* the rollout state is continuous: the decision numbers the status shows only grow, the gate's
  draw counter equals the decision number, every decision's source is the draw its stored state
  predicts (SplitMix64(seed, counter) < ratio), and the ratio moves only when a window closes.

An operator that kept its state only in memory (``FAULTS_BROKEN_BUILD=forget_state``) restarts
its counters at every kill and fails this test.

What is not promised: decisions that changed nothing (holds) are written at most every 60 s
(the status heartbeat), so a kill forgets the holds since the last write and the restarted
process decides those numbers again — nothing was applied for them, and the draw for a number
is the same whoever makes it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_helpers import INTERVAL_S, FaultStack, Recorder, Seen, collapse, fault_stack
from kubernetes import client

from rlscale.devstack.cluster import LocalCluster
from rlscale.policy.gate import _uniform

pytestmark = pytest.mark.faults

KILLS = 20
SEED = 5
LOAD = [55.0] * 1000  # requests/s: one pod of 500m is saturated; two hold
ROLLOUT = {"mode": "gradual", "initialRatio": 0.5, "windowDecisions": 2, "minSamples": 1, "seed": SEED}


@pytest.fixture
def stacks(
    local_cluster: LocalCluster, admin_api: client.ApiClient, helm_binary: Path, tmp_path: Path
) -> Iterator[tuple[FaultStack, FaultStack]]:
    with contextlib.ExitStack() as es:
        made = [
            es.enter_context(fault_stack(local_cluster, admin_api, helm_binary, tmp_path / w, load=LOAD, replicas=1))
            for w in ("reference", "killed")
        ]
        yield made[0], made[1]


def _continuity(seen: list[Seen]) -> list[str]:
    """What breaks the rollout's continuity in a run's written statuses (nothing: it is continuous)."""
    out = []
    numbers = [s.number for s in seen]
    if numbers != sorted(set(numbers)):
        out.append(f"decision numbers not increasing: {numbers}")
    for s in seen:
        gate = s.state["gate"]
        if int(gate["counter"]) != s.number:
            out.append(f"#{s.number}: gate counter {gate['counter']}")
        predicted = "learned" if _uniform(SEED, int(gate["counter"])) < float(gate["ratio"]) else "baseline"
        if s.source != predicted:
            out.append(f"#{s.number}: source {s.source}, the stored draw says {predicted}")
    for a, b in itertools.pairwise(seen):
        ga, gb = a.state["gate"], b.state["gate"]
        if int(gb["windows"]) < int(ga["windows"]):
            out.append(f"#{a.number}→#{b.number}: windows {ga['windows']}→{gb['windows']}")
        if int(gb["windows"]) == int(ga["windows"]) and float(gb["ratio"]) != float(ga["ratio"]):
            out.append(f"#{a.number}→#{b.number}: ratio {ga['ratio']}→{gb['ratio']} without a window closing")
    return out


def test_sigkill_loop_keeps_the_path_and_the_rollout(stacks: tuple[FaultStack, FaultStack]) -> None:
    reference, killed = stacks
    rng = random.Random(16)
    for s in (reference, killed):
        spec = s.spec(mode="gradual")
        spec["rollout"] = dict(ROLLOUT)
        # At most 2 pods: whichever decider acts and whenever, the path is 1 → 2 and then holding (a
        # third pod depends on how a start-up transient meets a tick, which timing alone decides).
        spec["limits"]["maxReplicas"] = 2
        s.create_policy(spec)
    kills: list[float] = []
    # The recorders watch before either operator starts: the reference's first scale-up can land while
    # the killed world's operator is still starting (~seconds), and a recorder started after it would
    # miss the 1 in that path.
    with Recorder(reference.api, reference.namespace) as ref_rec, Recorder(killed.api, killed.namespace) as rec:
        reference.operator().start()
        op = killed.operator().start()
        for _ in range(KILLS):
            alive_s = rng.uniform(0.2, 1.5) * INTERVAL_S
            time.sleep(alive_s)
            op.kill()
            kills.append(alive_s)
            op = killed.operator().start()
        time.sleep(3 * INTERVAL_S)  # the last process decides a few times
        seen, ref_seen = rec.snapshot(), ref_rec.snapshot()
        path, ref_path = (collapse([r for _, r, _ in x.replica_history()]) for x in (rec, ref_rec))

    why = f"kills after {[round(k, 1) for k in kills]} s\n" + killed.diagnostics(rec)
    assert len(kills) == KILLS
    # The same path as the undisturbed run.
    assert path == ref_path, (path, ref_path, why)
    assert len(path) >= 2, f"nothing was scaled: {path}\n{why}"
    # Every replica change is one decision's, applied once.
    changes = [s for s in seen if s.decision["replicas"] != s.decision["previousReplicas"] and s.decision["applied"]]
    assert [(s.decision["previousReplicas"], s.decision["replicas"]) for s in changes] == list(
        itertools.pairwise(path)
    ), why
    scaled = [e for e in killed.events() if e[1] == "Scaled"]
    assert len(scaled) <= len(changes), (scaled, why)
    # The rollout state is continuous through 20 kills.
    assert not _continuity(seen), (_continuity(seen), why)
    assert not _continuity(ref_seen), _continuity(ref_seen)
    assert max(int(s.state["gate"]["counter"]) for s in seen) >= 10, why
