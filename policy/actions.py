"""The composite action table: a replica move combined with CPU- and memory-limit steps.

Replica moves are *relative* as well as unit-sized, because a policy limited to ±1 pod
cannot follow a flash crowd: doubling takes a Deployment from 5 to 50 replicas in four
decisions (5 → 10 → 20 → 40 → 50 with the max-replicas clamp). Limit moves are one
configured step up or down. The table is part of the model contract and of the spec
hash: a model trained on another table is refused.

Index 0 is the no-op, which the safety mask always allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

ReplicaKind = Literal["hold", "add", "scale"]

#: Replica moves in table order: (kind, value). "add" moves by whole pods; "scale" by a
#: fraction of the current count, always at least one pod.
REPLICA_MOVES: tuple[tuple[ReplicaKind, float], ...] = (
    ("hold", 0.0),
    ("add", -1.0),
    ("add", 1.0),
    ("scale", -0.5),
    ("scale", -0.2),
    ("scale", 0.5),
    ("scale", 1.0),
)
#: Limit moves, in configured steps. 0 first so that index 0 is the full no-op.
LIMIT_STEPS: tuple[int, ...] = (0, -1, 1)


@dataclass(frozen=True, slots=True)
class Action:
    """One composite action: a replica move and CPU/memory limit steps."""

    index: int
    replica_kind: ReplicaKind
    replica_value: float
    cpu_steps: int
    memory_steps: int

    @property
    def name(self) -> str:
        """A stable, readable name such as ``replicas+100%,cpu-1``."""
        parts: list[str] = []
        if self.replica_kind == "add":
            parts.append(f"replicas{int(self.replica_value):+d}")
        elif self.replica_kind == "scale":
            parts.append(f"replicas{round(self.replica_value * 100):+d}%")
        if self.cpu_steps:
            parts.append(f"cpu{self.cpu_steps:+d}")
        if self.memory_steps:
            parts.append(f"memory{self.memory_steps:+d}")
        return ",".join(parts) or "noop"

    @property
    def changes_limits(self) -> bool:
        return self.cpu_steps != 0 or self.memory_steps != 0

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "replica_kind": self.replica_kind,
            "replica_value": self.replica_value,
            "cpu_steps": self.cpu_steps,
            "memory_steps": self.memory_steps,
        }


def _build_table() -> tuple[Action, ...]:
    table: list[Action] = []
    for kind, value in REPLICA_MOVES:
        for cpu in LIMIT_STEPS:
            for mem in LIMIT_STEPS:
                table.append(Action(len(table), kind, value, cpu, mem))
    return tuple(table)


ACTIONS: tuple[Action, ...] = _build_table()
NOOP: Action = ACTIONS[0]
N_ACTIONS: int = len(ACTIONS)
ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in ACTIONS)
ACTION_BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}

# Column arrays of the table, for vectorised application over many states at once.
_KIND_ADD = np.array([a.replica_kind == "add" for a in ACTIONS])
_KIND_SCALE = np.array([a.replica_kind == "scale" for a in ACTIONS])
_VALUE = np.array([a.replica_value for a in ACTIONS], dtype=np.float64)
CPU_STEPS: npt.NDArray[np.int64] = np.array([a.cpu_steps for a in ACTIONS], dtype=np.int64)
MEMORY_STEPS: npt.NDArray[np.int64] = np.array([a.memory_steps for a in ACTIONS], dtype=np.int64)


def action_table() -> list[dict[str, object]]:
    """The table as plain data: stored in model metadata and hashed into the spec."""
    return [a.as_dict() for a in ACTIONS]


def propose_replicas(replicas: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Unclamped replica proposals of every action, shape ``(n, N_ACTIONS)``.

    A relative move always changes the count by at least one pod, so "+50%" of 1 is 2
    and "-20%" of 3 is 2; bounds and step limits are applied later by the mask.
    """
    r = replicas.astype(np.float64)[:, None]
    up = np.maximum(r + 1.0, np.ceil(r * (1.0 + _VALUE)))
    down = np.minimum(r - 1.0, np.floor(r * (1.0 + _VALUE)))
    scaled = np.where(_VALUE > 0, up, down)
    out = np.where(_KIND_SCALE, scaled, np.where(_KIND_ADD, r + _VALUE, r))
    return out.astype(np.int64)
