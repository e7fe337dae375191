"""`gate demo`: the whole gate on its embedded defaults, with a scripted queue of visitors.

The visitors are drawn by the simulated camera and judged by the real models.
Their behaviour at the dispenser is acted out on the emulated station's world:
a visitor who is told to sanitize puts their hands under the sensor, unless
the script says they never do.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from gate.assembly import Gate, assemble, serve_panel
from gate.camera.simulated import SimVisitor
from gate.camera.verdict import MaskLabel
from gate.config import Settings, masked_url
from gate.errors import GateError
from gate.server.users import create_user, generate_password, set_password
from gate.store.db import open_database, session
from gate.store.models import Gate as GateRow
from gate.store.models import Outcome, Role, User
from gate.store.records import ensure_gate, entries_since

DEMO_GATE_ID = "demo"
HANDS_DELAY_SECONDS = 0.4  # a visitor reads the prompt, then reaches for the dispenser
HANDS_HOLD_SECONDS = 1.0
DEMO_SANITIZER_TIMEOUT = 6.0


@dataclass(frozen=True)
class DemoVisitor:
    visitor: SimVisitor
    expected: Outcome
    sanitizes: bool = True


MASK, BARE, UNDER_NOSE = MaskLabel.MASK, MaskLabel.NO_MASK, MaskLabel.INCORRECT_MASK
GAP = (2.5, None)  # longer than leave_seconds: the next visitor is a new person
DEMO_VISITORS: tuple[DemoVisitor, ...] = (
    DemoVisitor(SimVisitor("masked", ((4.5, MASK), GAP)), Outcome.ADMITTED),
    DemoVisitor(SimVisitor("no-mask", ((3.0, BARE), GAP)), Outcome.DENIED_NO_MASK),
    DemoVisitor(SimVisitor("under-nose", ((3.0, UNDER_NOSE), GAP)), Outcome.DENIED_INCORRECT_MASK),
    DemoVisitor(SimVisitor("fixes-mask", ((3.0, BARE), (5.0, MASK), GAP)), Outcome.ADMITTED),
    DemoVisitor(
        SimVisitor("never-sanitizes", ((3.0, MASK), (DEMO_SANITIZER_TIMEOUT + 1.5, None))),
        Outcome.NOT_SANITIZED,
        sanitizes=False,
    ),
)
SCENARIO_SECONDS = sum(d for v in DEMO_VISITORS for d, _ in v.visitor.segments)


def demo_settings(settings: Settings) -> Settings:
    """The demo runs the simulated camera and the emulated station whatever the settings
    name: its scripted visitors must never move a real door, and real people must never
    be judged by a demo. It keeps the rest (data dir, database, panel address, policy),
    so `gate user` reaches the demo's panel, and shortens the sanitizer wait. Its entries
    carry the gate id "demo", by which `claim_database` knows a demo's database again."""
    policy = settings.policy.model_copy(
        update={"sanitizer_timeout_seconds": DEMO_SANITIZER_TIMEOUT}
    )
    return settings.model_copy(
        update={
            "gate_id": DEMO_GATE_ID,
            "policy": policy,
            "camera": settings.camera.model_copy(update={"source": "simulated"}),
            "station": settings.station.model_copy(update={"port": "emulated"}),
        }
    )


def own_database_hint(settings: Settings) -> str:
    """The command that runs the demo on a database of its own. A configured database_url
    would still win over a new data dir, so the command sets it too, in the environment,
    which outranks the config file."""
    demo_dir = "/tmp/gate-demo"
    database = f" GATE_DATABASE_URL=sqlite:///{demo_dir}/gate.db" if settings.database_url else ""
    return f"GATE_DATA_DIR={demo_dir}{database} gate demo"


def claim_database(settings: Settings, new_admin: bool = False) -> str | None:
    """The demo logs scripted visitors and resets `admin`'s password, so it runs only on
    an empty database or one an earlier demo claimed, never on an installed gate's log
    and staff. An empty database is claimed by recording the demo's gate in it. With
    `new_admin`, the demo's admin is created (or reset) with a fresh random password,
    which is returned."""
    url = settings.effective_database_url
    engine = open_database(url)
    try:
        with session(engine) as s:
            gates = set(s.scalars(select(GateRow.id)).all())
            has_staff = s.scalars(select(User.id)).first() is not None
        others = sorted(gates - {DEMO_GATE_ID})
        if others or (has_staff and DEMO_GATE_ID not in gates):
            owner = f"gate {others[0]}'s log" if others else "an installed gate's staff accounts"
            raise GateError(
                f"the database {masked_url(url)} holds {owner}; the demo would add scripted "
                "visitors and reset admin's password there, so give it a data dir of its own "
                f"({own_database_hint(settings)})"
            )
        ensure_gate(engine, DEMO_GATE_ID)
        if not new_admin:
            return None
        password = generate_password()
        try:
            create_user(engine, "admin", Role.ADMIN, password)
        except GateError:
            set_password(engine, "admin", password)
        return password
    finally:
        engine.dispose()


async def act_visitors(gate: Gate) -> None:
    """Play the visitors' part at the dispenser whenever the kiosk asks them to sanitize."""
    assert gate.emulator is not None, "the demo needs the emulated station"
    world = gate.emulator.world
    sanitizers = {d.visitor.key: d.sanitizes for d in DEMO_VISITORS}
    async for event in gate.runtime.bus.subscribe():
        if event.kind != "prompt" or event.data["prompt"] != "sanitize":
            continue
        key = gate.source.visitor_at(gate.runtime.clock())  # type: ignore[attr-defined]
        if key is None or not sanitizers.get(key.split("#")[0], True):
            continue
        await asyncio.sleep(HANDS_DELAY_SECONDS)
        world.hands(True)
        await asyncio.sleep(HANDS_HOLD_SECONDS)
        world.hands(False)


async def run_demo(
    settings: Settings,
    duration: float | None,
    listening: socket.socket | None,
    ready: Callable[[], None],
) -> dict[str, Any]:
    """Run the demo on `demo_settings`, with its panel on `listening` if given; with a
    duration, stop then and report entries against the scenario. `ready` is called once
    the gate is assembled."""
    started = datetime.now(UTC)
    async with assemble(settings, loop_visitors=duration is None) as gate:
        gate.runtime.stop_on_signals()
        ready()
        actor = asyncio.create_task(act_visitors(gate))
        runner = asyncio.create_task(gate.runtime.run())
        panel = asyncio.create_task(
            serve_panel(gate.runtime, listening) if listening else gate.runtime.stopping()
        )
        try:
            await asyncio.wait(
                [runner, panel], timeout=duration, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gate.runtime.stop()  # the panel follows the runtime and shuts down gracefully
            actor.cancel()
            results = await asyncio.gather(runner, panel, actor, return_exceptions=True)
        for result in results[:2]:
            if isinstance(result, BaseException):
                raise result
        rows = entries_since(gate.runtime.engine, settings.gate_id, started)
    return report(rows)


def report(rows: list) -> dict[str, Any]:
    """Compare the logged entries with what the scenario expects, in order."""
    entries = [row.outcome for row in rows]
    return {
        "scenario": [v.expected.value for v in DEMO_VISITORS],
        "entries": entries,
        "counts": dict(Counter(entries)),
    }
