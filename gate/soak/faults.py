"""The seeded fault schedule: every kind in turn, in a shuffled order each round, at
random moments, each held for a random while and then taken away.

A fault names the alert kinds the gate must raise while it lasts (none where the
gate has no alert for it: its process is down, or nothing is wrong at the door),
and the soak then waits for the gate to be back to normal on its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultKind:
    name: str
    hold: tuple[float, float]  # how long it lasts, seconds (0: a single blow)
    alerts: frozenset[str]  # any one of these raised while it lasts
    postgres_only: bool = False


HELD_OPEN_SECONDS = 30.0  # the station's default held-open limit

FAULT_KINDS: tuple[FaultKind, ...] = (
    FaultKind("camera_gone", (6, 12), frozenset({"camera_offline"})),
    FaultKind("camera_stall", (5, 10), frozenset({"camera_offline"})),
    FaultKind("station_unplugged", (4, 8), frozenset({"station_offline"})),
    FaultKind("station_reboot", (0, 0), frozenset()),
    FaultKind("fluid_empty", (5, 10), frozenset({"fluid_empty"})),
    FaultKind(
        "door_held", (HELD_OPEN_SECONDS + 2, HELD_OPEN_SECONDS + 4), frozenset({"door_held"})
    ),
    FaultKind("door_forced", (2, 4), frozenset({"door_forced"})),
    FaultKind("fire", (4, 8), frozenset({"emergency"})),
    FaultKind("disk_full", (8, 15), frozenset()),
    FaultKind("database_restart", (0, 0), frozenset(), postgres_only=True),
    FaultKind("clock_step", (10, 20), frozenset()),
    FaultKind("gate_killed", (0, 0), frozenset()),
    FaultKind("wrong_logins", (0, 0), frozenset()),
    FaultKind("event_crowd", (4, 6), frozenset()),
)
CALM_SECONDS = (3.0, 12.0)  # between one fault's recovery and the next fault


@dataclass(frozen=True)
class PlannedFault:
    kind: FaultKind
    calm_before: float
    hold: float
    clock_step: int  # seconds the wall clock jumps (clock_step only)


def schedule(seed: int, postgres: bool) -> Iterator[PlannedFault]:
    """An endless seeded plan: rounds of every kind in a shuffled order."""
    rng = random.Random(seed)
    kinds = [k for k in FAULT_KINDS if postgres or not k.postgres_only]
    while True:
        order = kinds[:]
        rng.shuffle(order)
        for kind in order:
            step = rng.choice((-1, 1)) * rng.randint(1800, 3 * 3600)
            yield PlannedFault(kind, rng.uniform(*CALM_SECONDS), rng.uniform(*kind.hold), step)
