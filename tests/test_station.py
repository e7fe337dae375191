"""The host driver against the emulator over a real pty: real pyserial, real threads.

Waits poll for an outcome with generous deadlines; the only tight bound is the
2 s fail-secure limit that the issue sets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge import firmware as fw
from firmware_bridge.emulator import Emulator
from gate.config import StationSettings
from gate.sanitizer.bench import run_station_bench
from gate.sanitizer.station import LinkState, Station, StationError, StationEvent, StationLimits

REPO = Path(__file__).resolve().parents[1]
SETTINGS = StationSettings()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def next_event(queue: asyncio.Queue[StationEvent], kind: str) -> StationEvent:
    while True:
        event = await asyncio.wait_for(queue.get(), 5)
        if event.kind == kind:
            return event


async def connected(emulator: Emulator, **kwargs: Any) -> Station:
    station = Station(emulator.start(**kwargs), SETTINGS)
    await station.start()
    assert station.state is LinkState.CONNECTED
    return station


def test_status_and_door_events_carry_the_entry_ref() -> None:
    async def scenario() -> None:
        with Emulator(auto_door=True) as emulator:
            station = await connected(emulator)
            events = station.subscribe()
            status = await station.status()
            assert status.firmware == "entry-gate-station 1.0.0"
            assert not status.relay_unlocked and status.fluid_percent == 100
            await station.unlock(2.0, ref=4242)
            assert (await station.status()).relay_unlocked
            assert (await next_event(events, "door_opened")).ref == 4242
            assert (await next_event(events, "door_closed")).ref == 4242
            assert "door_forced" not in [e.kind for e in _drain(events)]
            await station.close()
            assert not emulator.world.relay_unlocked  # close() locks on the way out

    run(scenario())


def test_dispense_returns_the_ms_the_pump_ran() -> None:
    async def scenario() -> None:
        with Emulator() as emulator:
            station = await connected(emulator)
            assert await station.dispense(250) == 250
            assert await station.dispense() == SETTINGS.dose_ms
            assert [a.kind for a in emulator.actuations] == ["dispense", "dispense"]
            await station.close()

    run(scenario())


def test_pump_never_runs_at_empty_and_dispense_is_refused() -> None:
    async def scenario() -> None:
        with Emulator(tank_ml=4.0, pump_ml_per_second=5.0) as emulator:
            station = await connected(emulator)
            with pytest.raises(StationError, match="fluid empty"):
                for _ in range(10):
                    await station.dispense(3000)
            assert emulator.world.dry_run_ms == 0 and not emulator.world.pump_running
            assert emulator.world.fluid_ml > 0
            emulator.world.refill()
            await eventually(lambda: emulator.firmware.fluid == 100)
            assert await station.dispense(100) == 100
            await station.close()

    run(scenario())


def test_wait_for_hands() -> None:
    async def scenario() -> None:
        with Emulator() as emulator:
            station = await connected(emulator)
            assert not await station.wait_for_hands(0.1)
            asyncio.get_running_loop().call_later(0.1, emulator.world.hands, True)
            assert await station.wait_for_hands(5)
            assert await station.wait_for_hands(0)  # already there
            await station.close()

    run(scenario())


def test_unlock_for_an_hour_is_cut_by_the_firmware() -> None:
    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = await connected(emulator)
            await station.unlock(3600, ref=1)
            assert emulator.actuations[-1].ms == fw.UNLOCK_MAX_MS
            # Lower the cap so the cut can be watched end to end in under a second.
            limits = await station.configure(StationLimits(unlock_max_ms=600))
            assert limits.unlock_max_ms == 600
            await station.unlock(3600, ref=2)
            started = time.monotonic()
            await eventually(lambda: not emulator.world.relay_unlocked)
            assert time.monotonic() - started >= 0.5
            await station.close()

    run(scenario())


@pytest.mark.parametrize(
    ("identity", "message"),
    [({"protocol": 2}, "protocol 2"), ({"firmware_id": "other-board"}, "'other-board 1.0.0'")],
)
def test_wrong_firmware_is_one_clear_line(identity: dict[str, Any], message: str) -> None:
    async def scenario() -> None:
        with Emulator(**identity) as emulator:
            station = Station(emulator.start(), SETTINGS)
            with pytest.raises(StationError, match=message) as caught:
                await station.start()
            assert "\n" not in str(caught.value)
            assert "firmware_bridge/README.md" in str(caught.value)
            assert station.state is LinkState.OFFLINE
            await station.close()

    run(scenario())


def test_missing_port_is_offline_then_connects_by_itself(tmp_path: Path) -> None:
    async def scenario() -> None:
        port = tmp_path / "station"
        station = Station(str(port), SETTINGS, backoff_max_seconds=0.5)
        events = station.subscribe()
        await station.start()  # no raise
        assert station.state is LinkState.OFFLINE
        with pytest.raises(StationError, match="offline"):
            await station.unlock(1, ref=1)
        with Emulator() as emulator:
            emulator.start(link=port)
            await next_event(events, "link_connected")
            assert (await station.status()).firmware.startswith("entry-gate-station")
            await station.close()

    run(scenario())


def test_retransmitted_command_runs_once_and_the_link_is_degraded_for_a_while() -> None:
    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = Station(emulator.start(), SETTINGS, degraded_hold_seconds=0.5)
            events = station.subscribe()
            await station.start()
            emulator.stall(0.5)  # the board stops answering for longer than the ack timeout
            await station.unlock(5, ref=77)
            assert [a.ref for a in emulator.actuations] == [77]
            assert station.metrics.retransmits >= 1
            await next_event(events, "link_degraded")
            await next_event(events, "link_connected")  # quiet again for the hold time
            await station.close()

    run(scenario())


def test_caller_giving_up_does_not_desync_the_link() -> None:
    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = await connected(emulator)
            emulator.stall(0.6)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(station.unlock(5, ref=8), 0.05)
            assert not emulator.actuations  # the board is still stalled
            await station.lock()  # waits for the abandoned unlock's ack, then runs
            assert [(a.kind, a.ref) for a in emulator.actuations] == [("unlock", 8), ("lock", 8)]
            assert station.state is not LinkState.OFFLINE
            await station.close()

    run(scenario())


def test_unplug_mid_stream_reconnects_and_runs_nothing_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = await connected(emulator, link=tmp_path / "station")
            events = station.subscribe()
            acked, failed = [], []

            async def stream(refs: range) -> None:
                for ref in refs:
                    try:
                        await station.unlock(1, ref=ref)
                        acked.append(ref)
                    except StationError:
                        failed.append(ref)
                    await asyncio.sleep(0.005)

            unlocks = asyncio.create_task(stream(range(1, 400)))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(emulator.unplug)
            await next_event(events, "link_offline")
            await asyncio.sleep(0.3)
            await asyncio.to_thread(emulator.replug)
            await next_event(events, "link_connected")
            await unlocks
            executed = [a.ref for a in emulator.actuations if a.kind == "unlock"]
            assert len(executed) == len(set(executed)), "an unlock ran twice"
            assert set(acked) <= set(executed)
            assert set(executed) - set(acked) <= set(failed)  # ran, but the ack was lost
            assert failed and acked[-1] == 399
            assert station.metrics.reconnects == 1
            await station.close()

    run(scenario())


async def kinds_until_connected(events: asyncio.Queue[StationEvent]) -> list[str]:
    """The kinds of event the station reports up to and including ``link_connected``."""
    kinds: list[str] = []
    while not kinds or kinds[-1] != "link_connected":
        kinds.append((await asyncio.wait_for(events.get(), 10)).kind)
    return kinds


def test_a_fire_alarm_that_cleared_while_unplugged_is_reported_before_connected(
    tmp_path: Path,
) -> None:
    """The station keeps 32 events while unplugged. A cleared fire alarm buried under
    more than that must still reach the gate, ahead of "connected", or the gate would
    keep the door released for as long as the link then lasts."""

    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = await connected(emulator, link=tmp_path / "station")
            events = station.subscribe()
            emulator.world.fire(True)
            await next_event(events, "fire_on")
            await asyncio.to_thread(emulator.unplug)
            await next_event(events, "link_offline")
            emulator.world.fire(False)
            await asyncio.sleep(0.1)
            for _ in range(25):  # 50 events: the oldest, fire_off among them, are dropped
                for present in (True, False):
                    emulator.world.hands(present)
                    await asyncio.sleep(0.03)
            await asyncio.to_thread(emulator.replug)
            kinds = await kinds_until_connected(events)
            assert "fire_off" in kinds, kinds
            assert not emulator.world.relay_unlocked
            await station.close()

    run(scenario())


def test_a_gate_that_starts_during_a_fire_alarm_learns_of_it() -> None:
    """Its predecessor got the fire_on event; the station's status still says so."""

    async def start(port: str) -> tuple[Station, list[str]]:
        station = Station(port, SETTINGS)
        events = station.subscribe()
        await station.start()
        return station, await kinds_until_connected(events)

    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            port = emulator.start()
            first = Station(port, SETTINGS)
            await first.start()
            events = first.subscribe()
            emulator.world.fire(True)
            await next_event(events, "fire_on")  # the event goes to this gate only
            await first.close()
            second, kinds = await start(port)
            assert "fire_on" in kinds, kinds
            events = second.subscribe()
            emulator.world.fire(False)
            await next_event(events, "fire_off")
            await second.close()
            _wait(lambda: not emulator.world.relay_unlocked)
            # Without a fire, a start says nothing about it.
            third, kinds = await start(port)
            assert "fire_on" not in kinds and "fire_off" not in kinds, kinds
            await third.close()

    run(scenario())


HOST = """
import asyncio, sys
from gate.config import StationSettings
from gate.sanitizer.station import Station

async def main():
    station = Station(sys.argv[1], StationSettings())
    await station.start()
    await station.unlock(30, ref=99)
    print("unlocked", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_killed_host_leaves_the_door_locked_and_fire_still_unlocks() -> None:
    with Emulator(auto_door=False) as emulator:
        host = subprocess.Popen(
            [sys.executable, "-c", HOST, emulator.start()],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert host.stdout is not None and host.stdout.readline().strip() == "unlocked"
            time.sleep(2.0)  # longer than the MCU heartbeat timeout: the host's heartbeat works
            assert emulator.world.relay_unlocked
            os.kill(host.pid, signal.SIGKILL)
            host.wait()
            killed = time.monotonic()
            while emulator.world.relay_unlocked and time.monotonic() - killed < 5:
                time.sleep(0.01)
            relocked_after = time.monotonic() - killed
        finally:
            host.kill()
            host.wait()
        assert not emulator.world.relay_unlocked
        print(f"relay off {relocked_after:.2f} s after SIGKILL")
        assert relocked_after <= 2.0, f"relay still on {relocked_after:.2f} s after the kill"
        assert [(a.kind, a.ref) for a in emulator.actuations] == [("unlock", 99), ("lock", 99)]
        emulator.world.fire(True)  # nobody is driving the station now
        _wait(lambda: emulator.world.relay_unlocked)
        emulator.world.fire(False)
        _wait(lambda: not emulator.world.relay_unlocked)


def station_emulator(*options: str) -> subprocess.Popen[str]:
    """`gate station emulate` with its stdin (world commands) and stdout (the link's path,
    then answers) piped, as an operator's terminal would hold them."""
    return subprocess.Popen(
        [sys.executable, "-m", "gate", "station", "emulate", *options],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_emulate_command_answers_world_commands_one_line_each(tmp_path: Path) -> None:
    log = tmp_path / "actuations.jsonl"
    options = ["--link", str(tmp_path / "tty"), "--actuation-log", str(log), "--no-auto-door"]
    process = station_emulator(*options)
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline().strip() == str(tmp_path / "tty")
        answers = []
        for line in ["hands on", "door open", "fire on", "status", "dance", "quit"]:
            process.stdin.write(line + "\n")
            process.stdin.flush()
            answers.append(process.stdout.readline().strip())
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert answers[:3] == ["ok hands on", "ok door open", "ok fire on"]
    assert "door=open" in answers[3] and "fire=on" in answers[3] and "hands=on" in answers[3]
    assert answers[4].startswith("error: unknown command 'dance'")
    assert answers[5] == "ok quit"
    assert log.exists()


def test_actuation_log_is_one_json_line_per_actuation(tmp_path: Path) -> None:
    log = tmp_path / "actuations.jsonl"

    async def scenario() -> None:
        with Emulator(auto_door=False, actuation_log=log) as emulator:
            station = await connected(emulator)
            await station.unlock(1, ref=5)
            await station.lock()
            await station.dispense(100)
            await station.close()

    run(scenario())
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["kind"], e["ms"], e["ref"]) for e in entries[:2]] == [
        ("unlock", 1000, 5),
        ("lock", 0, 5),
    ]
    assert entries[2]["kind"] == "dispense" and entries[2]["ms"] == 100
    assert all(isinstance(e["t"], float) for e in entries)


def test_help_on_every_command() -> None:
    for args in (["station", "--help"], ["station", "emulate", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "gate", *args], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0 and "Usage" in result.stdout


def test_bench_reports_its_figures() -> None:
    figures = run_station_bench(50)
    assert figures["n"] == 50
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["retransmits"] >= 0


def _drain(queue: asyncio.Queue[StationEvent]) -> list[StationEvent]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
