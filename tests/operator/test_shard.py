"""Sharding by rendezvous hashing over the replicas' Leases (operator/shard.py), without a cluster.

Who owns a policy is a pure function of the Lease timestamps and the tick's due time, so
these tests play replicas joining, dying and stopping on a fake clock and check: the
policies are split about evenly; a dead replica's policies, and only those, move; a new
replica takes its share only after the settle time, so every replica agrees at every
tick; at every tick each policy has exactly one owner among the replicas that see the
same Leases; a replica whose own Lease may have lapsed owns nothing. The real API server
version, with a replica killed, is tests/e2e/test_sharding_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rlscale.operator.shard import LEASE_LABEL, Member, ShardMembership, members_from_leases, owner

POLICIES = [(f"ns-{i % 7}", f"app-{i}") for i in range(2000)]


def test_policies_split_evenly_and_only_a_dead_replicas_share_moves() -> None:
    members = [Member(x, 0.0, 100.0) for x in ("a", "b", "c")]
    before = {p: owner(members, *p, at=50.0) for p in POLICIES}
    counts = {m.identity: sum(1 for o in before.values() if o == m.identity) for m in members}
    assert all(550 < c < 780 for c in counts.values()), counts
    members[1] = Member("b", 0.0, 60.0)  # b stops renewing: its lease runs out at 60
    after = {p: owner(members, *p, at=61.0) for p in POLICIES}
    moved = {p for p in POLICIES if before[p] != after[p]}
    assert moved == {p for p in POLICIES if before[p] == "b"}
    assert "b" not in after.values()
    assert owner([], "ns", "x", at=0.0) is None


def test_a_joining_replica_counts_only_after_the_settle_time() -> None:
    leases = [
        _lease("a", acquired=0.0, renewed=95.0),
        _lease("b", acquired=90.0, renewed=95.0),  # just joined
    ]
    members = members_from_leases(leases, settle_s=6.0)
    assert {m.identity for m in members if m.live(93.0)} == {"a"}
    assert {m.identity for m in members if m.live(96.0)} == {"a", "b"}
    assert all(owner(members, *p, at=93.0) == "a" for p in POLICIES[:50])
    assert {owner(members, *p, at=96.0) for p in POLICIES[:50]} == {"a", "b"}
    # Leases without times (hand-made, half-written) are ignored.
    assert members_from_leases([{"spec": {"holderIdentity": "x"}}], 6.0) == []


class _Leases:
    """The Lease calls of KubeApi, on a dict, with a shared fake clock's timestamps in the bodies."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.fail = False

    async def put_lease(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        from rlscale.operator.kube import ApiError

        if self.fail:
            raise ApiError("patch lease", 503, "unavailable")
        self.items[name] = body

    async def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        key, _, value = selector.partition("=")
        return [b for b in self.items.values() if b["metadata"]["labels"].get(key) == value]


def test_replicas_agree_on_one_owner_per_policy_and_take_over_a_dead_ones_share() -> None:
    api = _Leases()
    now = [1000.0]
    replicas = {
        x: ShardMembership(api, x, "ops", lease_s=9.0, clock=lambda: now[0])  # type: ignore[arg-type]
        for x in ("a", "b", "c")
    }

    async def renew(names: list[str]) -> None:
        for name in names:
            await replicas[name].step()

    asyncio.run(renew(["a", "b", "c"]))
    asyncio.run(renew(["a", "b", "c"]))  # everyone has listed everyone
    now[0] += 7.0  # past the settle time (2 × 3 s)
    asyncio.run(renew(["a", "b", "c"]))
    due = now[0]
    owners = {p: [x for x, r in replicas.items() if r.owns(*p, at=due)] for p in POLICIES}
    assert all(len(o) == 1 for o in owners.values())
    assert {o[0] for o in owners.values()} == {"a", "b", "c"}

    # c dies (stops renewing). Until its lease lapses nobody else takes its policies; afterwards a and b do.
    for _ in range(4):
        now[0] += 3.0
        asyncio.run(renew(["a", "b"]))
        due = now[0]
        for p in POLICIES[:300]:
            holders = [x for x in ("a", "b") if replicas[x].owns(*p, at=due)]
            if owners[p] == ["c"]:
                c_lapsed = due >= replicas["c"]._renewed + 9.0  # type: ignore[operator]
                assert len(holders) == (1 if c_lapsed else 0), (p, due, holders)
            else:
                assert holders == owners[p]
    due = now[0]
    assert all(len([x for x in ("a", "b") if replicas[x].owns(*p, at=due)]) == 1 for p in POLICIES)

    # A replica that cannot renew its own Lease stops acting once the others may think it dead.
    api.fail = True
    now[0] += 9.5
    asyncio.run(_step_quietly(replicas["a"]))
    assert not any(replicas["a"].owns(*p, at=now[0]) for p in POLICIES)

    # A stopping replica expires its Lease: the others drop it at their next listing.
    api.fail = False
    asyncio.run(replicas["b"].stop())
    assert not any(replicas["b"].owns(*p, at=now[0]) for p in POLICIES)
    asyncio.run(replicas["a"].step())
    assert {m.identity for m in replicas["a"].members if m.live(now[0])} == {"a"}


async def _step_quietly(r: ShardMembership) -> None:
    from rlscale.operator.kube import ApiError

    with contextlib.suppress(ApiError):
        await r.step()


def _lease(identity: str, *, acquired: float, renewed: float) -> dict[str, Any]:
    from rlscale.operator.shard import _rfc3339_micro

    return {
        "metadata": {"name": f"rlscale-shard-{identity}", "labels": {LEASE_LABEL: "rlscale"}},
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": 9,
            "acquireTime": _rfc3339_micro(acquired),
            "renewTime": _rfc3339_micro(renewed),
        },
    }
