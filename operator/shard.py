"""Sharding the policies across operator replicas: a Lease per replica, rendezvous hashing per policy.

Kopf's peering elects *one* active replica; to scale out, every replica runs instead (each
``--standalone``, with ``--shard-identity``) and owns a share of the policies. Each replica
keeps a ``coordination.k8s.io`` Lease named after it in ``--shard-namespace`` and renews it
every third of ``--shard-lease-s``; every replica lists the Leases as often, and a policy
belongs to the live replica with the highest ``hash(replica, namespace, policy)``
(rendezvous hashing: when a replica comes or goes only its own share moves).

Who is live is a pure function of the Lease timestamps and of the time a tick was due, so
replicas that have seen the same Leases agree on every owner at every tick without talking
to each other:

* a replica counts from ``acquireTime + settle`` (``settle`` = two renew periods): by then
  every replica has listed its Lease, so ownership moves at the same tick everywhere and no
  policy is reconciled by two replicas in one interval;
* it stops counting at ``renewTime + leaseDurationSeconds``: a replica that died loses its
  share one lease duration after its last renew, and the others reconcile it from their
  next tick — within two intervals when the lease is shorter than the interval;
* a replica that could not renew its own Lease for a lease duration owns nothing (the
  others may have taken its share), and a replica that stops expires its Lease so its
  share moves at once.

Without ``--shard-identity`` there is no sharding: one replica owns every policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rlscale.operator.kube import ApiError, KubeApi

log = logging.getLogger(__name__)

#: Labels every shard Lease carries (the replicas list them by it).
LEASE_LABEL = "rlscale.io/shard-group"
LEASE_PREFIX = "rlscale-shard-"


@dataclass(frozen=True, slots=True)
class Member:
    """One replica as its Lease describes it (unix times)."""

    identity: str
    since: float  # acquireTime + settle
    until: float  # renewTime + leaseDurationSeconds

    def live(self, at: float) -> bool:
        return self.since <= at < self.until


def _score(identity: str, namespace: str, name: str) -> int:
    digest = hashlib.blake2b(f"{identity}\x00{namespace}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(members: list[Member], namespace: str, name: str, at: float) -> str | None:
    """The replica that owns ``namespace/name`` at time ``at``: the live member with the highest score."""
    live = [m.identity for m in members if m.live(at)]
    if not live:
        return None
    return max(live, key=lambda identity: (_score(identity, namespace, name), identity))


def _time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _rfc3339_micro(t: float) -> str:
    """Lease times are MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def members_from_leases(leases: list[dict[str, Any]], settle_s: float) -> list[Member]:
    """The :class:`Member` each shard Lease describes (Leases without the times are skipped)."""
    out = []
    for lease in leases:
        spec = lease.get("spec") or {}
        identity, acquired, renewed = (
            spec.get("holderIdentity"),
            _time(spec.get("acquireTime")),
            _time(spec.get("renewTime")),
        )
        duration = spec.get("leaseDurationSeconds")
        if not identity or acquired is None or renewed is None or not isinstance(duration, int | float):
            continue
        out.append(Member(str(identity), acquired + settle_s, renewed + float(duration)))
    return out


class ShardMembership:
    """This replica's Lease, renewed in the background, and the owner of each policy.

    ``clock`` is wall time (Lease times are wall times).
    """

    def __init__(
        self,
        kube: KubeApi,
        identity: str,
        namespace: str,
        *,
        lease_s: float = 10.0,
        group: str = "rlscale",
        clock: Callable[[], float],
    ) -> None:
        self.kube = kube
        self.identity = identity
        self.namespace = namespace
        self.lease_s = lease_s
        self.renew_s = lease_s / 3
        self.settle_s = 2 * self.renew_s
        self.group = group
        self.clock = clock
        self.members: list[Member] = []
        self._acquired: float | None = None
        self._renewed: float | None = None  # our last successful renew
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_name(self) -> str:
        return LEASE_PREFIX + self.identity

    def owns(self, namespace: str, name: str, at: float) -> bool:
        """Whether this replica reconciles ``namespace/name`` at the tick due at ``at``."""
        if self._renewed is None or at >= self._renewed + self.lease_s:
            return False  # we may be "dead" to the others: do nothing rather than something twice
        return owner(self.members, namespace, name, at) == self.identity

    async def start(self) -> None:
        """Take the Lease and list the members once (so the first ticks know them), then keep both fresh."""
        await self.step()
        self._task = asyncio.create_task(self._loop(), name="rlscale-shard-lease")

    async def stop(self) -> None:
        """Stop renewing and expire the Lease: the other replicas take this one's share at their next listing.

        Expired rather than deleted, so the operator needs no ``delete`` on Leases.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._renewed = None
        with contextlib.suppress(ApiError):
            await self.kube.put_lease(self.namespace, self.lease_name, self._body(renewed=self.clock() - self.lease_s))

    def _body(self, *, renewed: float) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.lease_name, "labels": {LEASE_LABEL: self.group}},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_s)),
                "acquireTime": _rfc3339_micro(self._acquired if self._acquired is not None else renewed),
                "renewTime": _rfc3339_micro(renewed),
            },
        }

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self.step()
            except ApiError as exc:  # keep trying; owns() turns False once our Lease may have lapsed
                log.warning("shard lease: %s", exc)

    async def step(self) -> None:
        """Renew (or create) this replica's Lease, then list every replica's."""
        now = self.clock()
        if self._acquired is None:
            self._acquired = now
        await self.kube.put_lease(self.namespace, self.lease_name, self._body(renewed=now))
        self._renewed = now
        leases = await self.kube.list_leases(self.namespace, f"{LEASE_LABEL}={self.group}")
        self.members = members_from_leases(leases, self.settle_s)
