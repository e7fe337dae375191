"""The running gate with its real parts: simulated camera + real models, emulated
firmware over a real pty, SQLite. Each test acts on the world and checks what
the door did and what the log says."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest
from sqlalchemy import select

import gate.runtime as runtime_module
from gate.assembly import Gate, assemble
from gate.camera.simulated import SimVisitor
from gate.camera.verdict import MaskLabel
from gate.config import Settings, load_settings
from gate.errors import CommandRefused, GateError
from gate.soak.rig import Postgres
from gate.store.db import OUTAGE_SECONDS, session
from gate.store.models import Alert, AuditEvent, Entry, StationLog

pytestmark = pytest.mark.anyio
MASKED_FOREVER = [SimVisitor("masked", ((3600.0, MaskLabel.MASK),))]
MASKED_LATER = [SimVisitor("masked-later", ((5.0, None), (3600.0, MaskLabel.MASK)))]
NOBODY = [SimVisitor("nobody", ((3600.0, None),))]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def gate_settings(data_dir: Path, **policy: object) -> Settings:
    return load_settings(
        data_dir=data_dir,
        policy={"sanitizer_required": False, "unlock_seconds": 2, **policy},
    )


@asynccontextmanager
async def gate_running(
    data_dir: Path, visitors: list[SimVisitor], **policy: object
) -> AsyncIterator[Gate]:
    """A gate at work on this data dir, with its station connected; stopped on leaving."""
    async with assemble(gate_settings(data_dir, **policy), visitors=visitors) as gate:
        task = asyncio.create_task(gate.runtime.run())
        try:
            await asyncio.wait_for(gate.runtime.started.wait(), 15)
            await until(lambda: gate.runtime.station.state.value == "connected", 15)
            yield gate
        finally:
            gate.runtime.stop()
            await task


@pytest.fixture
async def running(data_dir: Path) -> AsyncIterator[Callable[..., object]]:
    """Start a gate with given visitors and policy; stop it after the test."""
    async with AsyncExitStack() as stack:

        async def start(visitors: list[SimVisitor], **policy: object) -> Gate:
            return await stack.enter_async_context(gate_running(data_dir, visitors, **policy))

        yield start


async def until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def rows(gate: Gate, model: type) -> list:
    with session(gate.runtime.engine) as s:
        return list(s.scalars(select(model)))


def unlocks(gate: Gate) -> list:
    assert gate.emulator is not None
    return [a for a in gate.emulator.actuations if a.kind == "unlock"]


async def test_masked_visitor_unlocks_the_real_relay_after_the_entry_is_saved(running) -> None:
    gate = await running(MASKED_FOREVER)
    await until(lambda: unlocks(gate), 20)
    (entry,) = rows(gate, Entry)
    assert entry.outcome == "admitted" and entry.mask_label == "mask"
    assert unlocks(gate)[0].ref == entry.unlock_ref
    await until(lambda: rows(gate, Entry)[0].door_opened, 5)  # the emulated visitor walked in
    assert len(unlocks(gate)) == 1  # one person, one unlock, however long in view


async def test_entries_follow_the_wall_clock_when_ntp_sets_it_while_running(
    running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box that booted with its clock 400 days behind: once NTP sets it right, the
    next visitor is logged today, not 400 days ago (where retention would delete it)."""
    gate = await running(MASKED_LATER)
    step = timedelta(days=400)

    class SetRight(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + step

    monkeypatch.setattr(runtime_module, "datetime", SetRight)
    await until(lambda: rows(gate, Entry), 20)
    seen = rows(gate, Entry)[0].seen_at.replace(tzinfo=UTC)
    assert abs(seen - (datetime.now(UTC) + step)) < timedelta(minutes=1), seen


async def test_the_count_of_people_inside_starts_again_at_midnight(
    running, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = await running(NOBODY, capacity=1)
    await gate.runtime.override_unlock("guard", "courier")
    assert gate.runtime.snapshot()["occupancy"] == 1
    assert gate.runtime.controller.mode.value == "full"

    class Tomorrow(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + timedelta(days=1)

    monkeypatch.setattr(runtime_module, "datetime", Tomorrow)
    await until(lambda: gate.runtime.snapshot()["occupancy"] == 0, 5)
    assert gate.runtime.controller.mode.value == "normal"


async def test_lockdown_keeps_a_masked_visitor_out(running) -> None:
    gate = await running(MASKED_LATER)
    await gate.runtime.set_lockdown("guard", True, "drill")
    assert not rows(gate, Entry)  # the visitor has not arrived yet
    await until(lambda: any(e.outcome == "denied_lockdown" for e in rows(gate, Entry)), 20)
    assert not unlocks(gate)
    assert not gate.emulator.world.relay_unlocked
    actions = [a.action for a in rows(gate, AuditEvent)]
    assert actions == ["lockdown_on"]


async def test_a_lockdown_outlives_a_restart(data_dir: Path) -> None:
    async with gate_running(data_dir, NOBODY) as gate:
        await gate.runtime.set_lockdown("guard", True, "drill")
    async with gate_running(data_dir, MASKED_FOREVER) as gate:
        assert gate.runtime.controller.mode.value == "lockdown"
        await until(lambda: any(e.outcome == "denied_lockdown" for e in rows(gate, Entry)), 20)
        assert not unlocks(gate) and not gate.emulator.world.relay_unlocked
        await gate.runtime.set_lockdown("guard", False, "drill over")
    async with gate_running(data_dir, NOBODY) as gate:
        assert gate.runtime.controller.mode.value == "normal"


async def test_a_staff_emergency_release_outlives_a_restart(data_dir: Path) -> None:
    async with gate_running(data_dir, NOBODY) as gate:
        await gate.runtime.set_lockdown("guard", True, "drill")
        await gate.runtime.set_emergency("guard", True, "smoke on floor 2")
    async with gate_running(data_dir, NOBODY) as gate:
        assert gate.runtime.controller.mode.value == "emergency"
        await until(lambda: gate.emulator.world.relay_unlocked, 5)
        await gate.runtime.set_emergency("guard", False, "all clear")
    async with gate_running(data_dir, NOBODY) as gate:
        assert gate.runtime.controller.mode.value == "lockdown"  # the lockdown still stands


async def test_unlock_once_during_an_emergency_is_refused_not_counted(data_dir: Path) -> None:
    """The door is free already; an "unlock once" that did nothing must not be audited as
    done, nor counted as a person in after the next restart."""
    async with gate_running(data_dir, NOBODY) as gate:
        await gate.runtime.set_emergency("guard", True, "smoke on floor 2")
        with pytest.raises(CommandRefused, match="door_released"):
            await gate.runtime.override_unlock("guard", "courier")
        await gate.runtime.set_emergency("guard", False, "all clear")
        assert [a.action for a in rows(gate, AuditEvent)] == ["emergency_on", "emergency_off"]
    async with gate_running(data_dir, NOBODY) as gate:
        assert gate.runtime.snapshot()["occupancy"] == 0


async def test_an_unlock_the_station_cannot_carry_out_is_refused(running) -> None:
    gate = await running(NOBODY)
    gate.emulator.unplug()
    await until(lambda: gate.runtime.controller.mode.value == "degraded", 10)
    with pytest.raises(CommandRefused, match="station_offline"):
        await gate.runtime.override_unlock("guard1", "courier with a parcel")
    assert gate.runtime.snapshot()["occupancy"] == 0
    assert not rows(gate, AuditEvent)  # nothing was done, so nothing is audited
    await gate.runtime.set_emergency("guard1", True, "smoke")
    await until(lambda: "unlock_failed" in [a.kind for a in rows(gate, Alert)], 5)
    failed = next(a for a in rows(gate, Alert) if a.kind == "unlock_failed")
    assert failed.message == "check_station_link"  # a key the panel translates
    assert gate.runtime.snapshot()["prompt"] == "out_of_service"
    gate.emulator.replug()
    await until(lambda: gate.emulator.world.relay_unlocked, 10)
    assert gate.runtime.snapshot()["prompt"] == "emergency"


async def test_station_offline_degrades_alerts_and_the_door_stays_locked(running) -> None:
    gate = await running(MASKED_FOREVER, sanitizer_required=True)
    await until(lambda: gate.runtime.controller.state.value == "sanitizing", 20)
    await until(lambda: gate.runtime.snapshot()["station"]["fluid_percent"] is not None, 5)
    gate.emulator.unplug()
    await until(lambda: gate.runtime.controller.mode.value == "degraded", 10)
    assert gate.runtime.snapshot()["station"]["fluid_percent"] is None  # no stale level
    gate.emulator.world.hands(True)
    await asyncio.sleep(1.5)
    assert not unlocks(gate) and not gate.emulator.world.relay_unlocked
    assert "station_offline" in [a.kind for a in rows(gate, Alert)]
    assert gate.runtime.snapshot()["prompt"] == "out_of_service"
    assert rows(gate, Entry)[0].outcome == "interrupted"
    gate.emulator.replug()
    await until(lambda: gate.runtime.controller.mode.value == "normal", 15)


async def test_a_stalled_camera_shows_no_signal_rather_than_a_frozen_picture(running) -> None:
    gate = await running(MASKED_FOREVER)
    with gate.runtime.watch():
        await until(lambda: gate.runtime.latest_frame() is not None, 10)
        gate.source.read = lambda: None  # the camera stops delivering frames
        await until(lambda: gate.runtime.controller.mode.value == "degraded", 10)
        assert gate.runtime.latest_frame() is None
        assert gate.runtime.snapshot()["camera"] == {"healthy": False, "fps": None}


async def test_fire_input_releases_the_door_and_is_logged(running) -> None:
    gate = await running(NOBODY)
    gate.emulator.world.fire(True)
    await until(lambda: gate.runtime.controller.mode.value == "emergency", 10)
    assert gate.emulator.world.relay_unlocked
    await until(lambda: [a.kind for a in rows(gate, Alert)] == ["emergency"], 5)
    assert "fire_on" in [r.kind for r in rows(gate, StationLog)]
    gate.emulator.world.fire(False)
    await until(lambda: gate.runtime.controller.mode.value == "normal", 10)
    await until(lambda: not gate.emulator.world.relay_unlocked, 5)


async def test_override_unlock_is_audited_and_reaches_the_relay(running) -> None:
    gate = await running(NOBODY)
    await gate.runtime.override_unlock("guard1", "courier with a parcel")
    await until(lambda: unlocks(gate), 5)
    assert unlocks(gate)[0].ref == 0
    (audit,) = rows(gate, AuditEvent)
    assert (audit.actor, audit.action, audit.reason) == (
        "guard1",
        "override_unlock",
        "courier with a parcel",
    )
    assert gate.runtime.snapshot()["occupancy"] == 1
    gate.emulator.world.press_exit()
    await until(lambda: gate.runtime.snapshot()["occupancy"] == 0, 5)


async def test_denied_visitor_snapshot_is_kept_and_blurred_on_request(
    data_dir: Path,
) -> None:
    settings = gate_settings(data_dir).model_copy(
        update={"snapshots": load_settings(snapshots={"blur_faces": True}).snapshots}
    )
    visitors = [SimVisitor("bare", ((3600.0, MaskLabel.NO_MASK),))]
    async with assemble(settings, visitors=visitors) as gate:
        task = asyncio.create_task(gate.runtime.run())
        await until(lambda: any(e.snapshot_path for e in rows(gate, Entry)), 20)
        gate.runtime.stop()
        await task
    (entry,) = rows(gate, Entry)
    assert entry.outcome == "denied_no_mask"
    assert Path(entry.snapshot_path).stat().st_size > 1000
    assert Path(entry.snapshot_path).is_relative_to(data_dir)


@pytest.mark.slow
async def test_a_database_server_restart_is_waited_out_and_the_run_goes_on(data_dir: Path) -> None:
    """Found by the soak: a PostgreSQL restart (under a second) ended the run whenever
    the gate wrote during it, and the door was shut for the minute a restarted gate
    takes to load its models. Now the write waits for the server and goes through."""
    server = Postgres(Path(tempfile.mkdtemp(prefix="gate-pg-")) / "server")
    server.start()
    try:
        settings = gate_settings(data_dir).model_copy(update={"database_url": server.url})
        async with assemble(settings, visitors=NOBODY) as gate:
            task = asyncio.create_task(gate.runtime.run())
            await until(lambda: gate.runtime.station.state.value == "connected", 15)
            await asyncio.to_thread(server.stop)
            gate.emulator.world.press_exit()  # logged by the station loop, into no server
            await asyncio.sleep(2)
            await asyncio.to_thread(server.resume)
            with session(gate.runtime.engine) as s:
                await until(lambda: bool(s.scalars(select(StationLog.id)).all()), 15)
            assert not task.done()
            gate.runtime.stop()
            await task
    finally:
        server.stop()
        shutil.rmtree(server.folder.parent, ignore_errors=True)


async def test_a_database_that_goes_away_ends_the_run_in_one_line_and_the_door_stays_locked(
    data_dir: Path,
) -> None:
    """The station loop writes the exit button to the log. When the database is gone
    (here the SQLite file replaced by a folder), the run ends with one clear error
    instead of that loop dying unheard, and the firmware keeps the door locked."""
    async with assemble(gate_settings(data_dir), visitors=NOBODY) as gate:
        task = asyncio.create_task(gate.runtime.run())
        await until(lambda: gate.runtime.station.state.value == "connected", 15)
        gate.runtime.engine.dispose()
        for path in data_dir.glob("gate.db*"):
            path.unlink()
        (data_dir / "gate.db").mkdir()
        gate.emulator.world.press_exit()
        with pytest.raises(GateError, match=r"^database unavailable: .*unable to open database"):
            await asyncio.wait_for(task, 15 + OUTAGE_SECONDS)
        await asyncio.sleep(2)  # past the firmware's heartbeat timeout
        assert not gate.emulator.world.relay_unlocked
