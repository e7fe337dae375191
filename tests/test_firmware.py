"""Firmware logic on a hand-driven clock: the MCU defends the door and the pump by itself."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from firmware_bridge import firmware as fw
from firmware_bridge import messages as m
from firmware_bridge import wire
from firmware_bridge.emulator import Emulator
from gate.sanitizer.cli import answer
from gate.sanitizer.link import HostSession, Incoming
from tests.test_link_fuzz import _exchange
from tests.test_link_rig import HEARTBEAT_MS, Rig, frame
from tests.test_station import station_emulator

REPO = Path(__file__).resolve().parents[1]

OK, REFUSED = m.RSP_OK, m.RSP_REFUSED
U32_MAX = 2**32 - 1


def connected(**world: float | bool) -> Rig:
    rig = Rig(**world)
    rig.hello()
    rig.advance(50)
    return rig


def test_boot_is_fail_secure_and_reported() -> None:
    rig = connected()
    assert not rig.world.relay_unlocked and not rig.world.pump_running
    assert rig.names()[:2] == ["boot", "fluid_level"]


def test_unlock_for_an_hour_is_cut_to_the_firmware_maximum() -> None:
    rig = connected()
    assert rig.command(m.CMD_UNLOCK, 3_600_000, 7) == (OK, (fw.UNLOCK_MAX_MS,))
    assert rig.executed("unlock") == [("unlock", fw.UNLOCK_MAX_MS, 7)]
    rig.advance(fw.UNLOCK_MAX_MS - 50)
    assert rig.world.relay_unlocked
    rig.advance(60)
    assert not rig.world.relay_unlocked


def test_dispense_is_capped_and_reports_what_ran() -> None:
    rig = connected()
    assert rig.command(m.CMD_DISPENSE, 60000, 5) == (OK, (fw.DISPENSE_MAX_MS,))
    assert rig.command(m.CMD_DISPENSE, 100, 6) == (REFUSED, (m.REFUSED_BUSY,))
    rig.advance(fw.DISPENSE_MAX_MS + 20)
    assert not rig.world.pump_running
    assert ("dispensed", fw.DISPENSE_MAX_MS, 5) in rig.events


def test_heartbeat_loss_relocks_stops_pump_and_refuses_until_hello() -> None:
    rig = connected()
    rig.command(m.CMD_UNLOCK, 20000, 1)
    rig.command(m.CMD_DISPENSE, 3000, 2)
    rig.heartbeat = False
    silent_since = rig.now
    while rig.world.relay_unlocked:
        rig.advance(5)
    assert rig.now - silent_since <= fw.HEARTBEAT_MAX_MS + 10
    assert not rig.world.pump_running
    assert rig.executed("lock") == [("lock", 0, 1)]
    assert rig.command(m.CMD_UNLOCK, 5000, 3) == (REFUSED, (m.REFUSED_NO_SESSION,))
    assert not rig.world.relay_unlocked
    rig.hello()  # the host comes back
    rig.heartbeat = True
    assert rig.command(m.CMD_UNLOCK, 5000, 4) == (OK, (5000,))
    assert rig.world.relay_unlocked
    assert ("fault", m.FAULT_HEARTBEAT_LOST, 0) in rig.events


def test_heartbeat_keeps_a_long_unlock_alive() -> None:
    rig = connected()
    rig.command(m.CMD_UNLOCK, 10000, 1)
    rig.advance(9000)
    assert rig.world.relay_unlocked


def test_pump_never_runs_at_empty_and_refuses_until_refilled() -> None:
    rig = connected(tank_ml=10.0, pump_ml_per_second=4.0)
    doses = 0
    while rig.command(m.CMD_DISPENSE, 3000, doses)[0] == OK:
        doses += 1
        rig.advance(3100)
        assert doses < 10
    assert rig.command(m.CMD_DISPENSE, 500, 99) == (REFUSED, (m.REFUSED_FLUID_EMPTY,))
    assert not rig.world.pump_running
    assert rig.world.dry_run_ms == 0
    assert rig.world.fluid_ml > 0
    assert "fluid_low" in rig.names() and "fluid_empty" in rig.names()
    rig.world.refill()
    rig.advance(20)
    assert rig.command(m.CMD_DISPENSE, 500, 100) == (OK, (500,))


def test_pump_stops_mid_dose_when_the_tank_runs_dry() -> None:
    rig = connected(tank_ml=10.0, pump_ml_per_second=4.0, fluid_ml=2.0)
    rig.command(m.CMD_DISPENSE, 3000, 1)
    rig.advance(3100)
    ran = [value for name, value, ref in rig.events if name == "dispensed" and ref == 1]
    assert ran and ran[0] < 3000
    assert rig.world.dry_run_ms == 0


def test_fire_unlocks_with_no_host_at_all() -> None:
    rig = Rig()  # no hello ever
    rig.world.fire(True)
    rig.advance(50)
    assert rig.world.relay_unlocked
    rig.world.fire(False)
    rig.advance(50)
    assert not rig.world.relay_unlocked


def test_fire_clearing_keeps_an_active_host_unlock() -> None:
    rig = connected()
    rig.world.fire(True)
    rig.advance(50)
    rig.command(m.CMD_LOCK)
    assert rig.world.relay_unlocked  # lock cannot override the fire input
    rig.command(m.CMD_UNLOCK, 2000, 9)
    rig.world.fire(False)
    rig.advance(50)
    assert rig.world.relay_unlocked
    rig.advance(2000)
    assert not rig.world.relay_unlocked
    assert {"fire_on", "fire_off"} <= set(rig.names())


def test_door_opened_while_locked_is_forced() -> None:
    rig = connected()
    rig.world.open_door()
    rig.advance(50)
    assert "door_forced" in rig.names()


def test_door_opened_after_exit_request_or_unlock_is_not_forced() -> None:
    rig = connected()
    rig.world.press_exit()
    rig.advance(50)
    rig.world.open_door()
    rig.advance(50)
    rig.world.close_door()
    rig.advance(50)
    rig.command(m.CMD_UNLOCK, 3000, 11)
    rig.world.open_door()
    rig.advance(50)
    assert "exit_request" in rig.names()
    assert "door_forced" not in rig.names()
    assert ("door_opened", 0, 11) in rig.events


def test_door_held_open_is_reported_once_with_the_ref() -> None:
    rig = connected()
    reply = rig.command(m.CMD_CONFIGURE, 30000, 3000, 1000, 1500, 15)
    assert reply == (m.RSP_LIMITS, (30000, 3000, 1000, 1500, 15))
    rig.command(m.CMD_UNLOCK, 500, 21)
    rig.world.open_door()
    rig.advance(2500)
    assert [e for e in rig.events if e[0] == "door_held"] == [("door_held", 1000, 21)]
    rig.world.close_door()
    rig.advance(50)
    assert rig.events[-1][0] == "door_closed" and rig.events[-1][2] == 21


def test_configure_cannot_raise_hard_limits() -> None:
    rig = connected()
    reply = rig.command(m.CMD_CONFIGURE, 0xFFFFFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFF, 255)
    assert reply == (
        m.RSP_LIMITS,
        (fw.UNLOCK_MAX_MS, fw.DISPENSE_MAX_MS, fw.HELD_OPEN_MAX_MS, fw.HEARTBEAT_MAX_MS, 100),
    )


def test_lock_ends_an_unlock_and_is_logged() -> None:
    rig = connected()
    rig.command(m.CMD_UNLOCK, 20000, 31)
    rig.command(m.CMD_LOCK)
    assert not rig.world.relay_unlocked
    assert rig.executed("lock") == [("lock", 0, 31)]


def test_retransmitted_command_runs_once_and_gets_the_same_ack() -> None:
    rig = connected()
    raw = rig.send(m.encode_command(m.CMD_UNLOCK, 1000, 5))
    rig.advance(5)
    rig.hal.rx.extend(raw)  # the host never saw the ack and sends the same frame again
    rig.advance(5)
    assert rig.executed("unlock") == [("unlock", 1000, 5)]
    assert rig.acks[-1] == rig.acks[-2]


def test_out_of_order_command_is_naked_not_run() -> None:
    rig = connected()
    rig.hal.rx.extend(frame(wire.DATA, 9, m.encode_command(m.CMD_UNLOCK, 1000, 5)))
    rig.tick()
    assert rig.actuations == []
    assert not rig.world.relay_unlocked


def test_events_are_retransmitted_until_acked_and_delivered_once() -> None:
    rig = connected()
    rig.world.hands(True)
    rig.advance(300, deliver=False)  # the MCU's frames are lost on the way
    rig.advance(300)
    assert rig.names().count("hands_present") == 1


def test_event_resent_in_a_new_session_is_not_delivered_twice() -> None:
    rig = connected()
    rig.world.tamper()
    rig.advance(300, answer=False)  # the host gets the event, the MCU never gets the ack
    assert rig.names().count("tamper") == 1
    assert rig.host.duplicates > 0  # retransmits arrived and were dropped by seq
    rig.hello()  # new session: the MCU sends the unacked event again, under a new seq
    rig.advance(300)
    assert rig.names().count("tamper") == 1
    assert rig.host.duplicates == 1  # this time dropped by its event number


def test_protocol_mismatch_gets_no_session() -> None:
    rig = Rig()
    rig.hal.rx.extend(frame(wire.HELLO, 0, m.encode_hello(wire.PROTOCOL_VERSION + 1, 5)))
    rig.advance(HEARTBEAT_MS)
    assert not rig.firmware.link.alive
    rig.hal.rx.extend(frame(wire.DATA, 0, m.encode_command(m.CMD_UNLOCK, 1000, 1)))
    rig.advance(10)
    assert rig.actuations == []


def test_refused_hellos_do_not_keep_an_unlock_alive() -> None:
    rig = connected()
    rig.command(m.CMD_UNLOCK, 20000, 1)
    rig.heartbeat = False
    wrong = frame(wire.HELLO, 0, m.encode_hello(wire.PROTOCOL_VERSION + 1, rig._nonce))
    for _ in range(20):
        rig.hal.rx.extend(wrong)
        rig.advance(100)
    assert not rig.world.relay_unlocked
    assert rig.executed("lock") == [("lock", 0, 1)]


def pile_up_events(rig: Rig, hand_waves: int) -> None:
    """Wave a hand under the sensor with no host to hear it, then let one connect and
    take what the queue kept."""
    for _ in range(hand_waves):
        rig.world.hands(True)
        rig.advance(30)
        rig.world.hands(False)
        rig.advance(30)
    rig.hello()
    rig.advance(2000)


def test_event_queue_overflow_keeps_the_newest_and_reports_a_fault() -> None:
    rig = Rig()  # no host yet: events pile up
    pile_up_events(rig, 25)
    hands = [name for name in rig.names() if name.startswith("hands")]
    assert hands[-1] == "hands_absent"  # the newest survived
    fault = rig.events[-1]
    assert fault[0] == "fault" and fault[1] == m.FAULT_EVENTS_DROPPED and fault[2] > 0
    assert "boot" not in rig.names()  # the oldest went first


def test_status_just_as_an_unlock_ends_reports_it_ended_and_the_relay_locked() -> None:
    """QA's crash: the status landed in the pass after the unlock's end, before its timer ran."""
    rig = connected()
    rig.command(m.CMD_UNLOCK, 1, 100)
    assert rig.command(m.CMD_STATUS) == (m.RSP_STATUS, (0, 100, 100, 0))
    assert not rig.world.relay_unlocked
    rig.command(m.CMD_LOCK)
    assert rig.executed("lock") == []  # the unlock had ended: nothing was cut short


def test_a_door_open_longer_than_a_u32_of_ms_is_reported_not_crashed_on() -> None:
    rig = connected()
    rig.world.open_door()
    rig.advance(50)
    rig.now += 50 * 24 * 3600 * 1000  # 50 days (a u32 of ms is 49.7) on the fire release
    rig.world.close_door()
    rig.advance(50)
    assert not rig.world.relay_unlocked
    rig.hello()  # the heartbeat lapsed over the jump
    rig.advance(200)
    closed = [e for e in rig.events if e[0] == "door_closed"]
    assert closed and closed[0][1] == U32_MAX


def test_dropped_event_count_saturates_at_its_u32_field() -> None:
    rig = Rig()
    rig.firmware.link.dropped_events = U32_MAX
    pile_up_events(rig, 20)
    assert rig.events[-1] == ("fault", m.FAULT_EVENTS_DROPPED, U32_MAX)


# -- over a real pty, and the board's own loop ------------------------------------


def _acked(seq: int) -> object:
    return lambda items: any((i.kind, i.seq) == ("ack", seq) for i in items)


def _reply(items: list[Incoming], seq: int) -> tuple[int, tuple[int, ...]] | None:
    return next(m.decode_reply(i.payload) for i in items if (i.kind, i.seq) == ("ack", seq))


def test_qa_repro_status_as_an_unlock_ends_is_answered_and_the_relay_relocks(
    tmp_path: Path,
) -> None:
    """QA's exact steps: gate station emulate, HELLO, unlock 1 ms, 3 ms later a status."""
    options = ["--no-auto-door", "--actuation-log", str(tmp_path / "a.log")]
    process = station_emulator(*options)
    assert process.stdin is not None and process.stdout is not None
    try:
        port = serial.Serial(process.stdout.readline().strip(), timeout=0.05)
        host = HostSession(7)
        port.write(host.hello_frame())
        _exchange(port, host, lambda items: host.hello is not None)
        _, unlock = host.command_frame(m.encode_command(m.CMD_UNLOCK, 1, 100))
        port.write(unlock)
        time.sleep(0.003)
        seq, status = host.command_frame(m.encode_command(m.CMD_STATUS))
        port.write(status)
        items = _exchange(port, host, _acked(seq))
        process.stdin.write("status\n")
        process.stdin.flush()
        line = process.stdout.readline()
        port.close()
        process.stdin.write("quit\n")
        process.stdin.flush()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    flags, _, ref, left = _reply(items, seq)[1]
    assert (flags & m.STATUS_RELAY, ref, left) == (0, 100, 0)
    assert "relay=locked" in line and "host=connected" in line


def test_a_fault_in_the_emulated_firmware_locks_the_relay_and_silences_the_board(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Emulator(auto_door=False) as emulator:
        port = serial.Serial(emulator.start(), timeout=0.05)
        host = HostSession(7)
        port.write(host.hello_frame())
        _exchange(port, host, lambda items: host.hello is not None)
        for command in (
            m.encode_command(m.CMD_UNLOCK, 20000, 1),
            m.encode_command(m.CMD_DISPENSE, 3000, 2),
        ):
            seq, raw = host.command_frame(command)
            port.write(raw)
            assert _reply(_exchange(port, host, _acked(seq)), seq)[0] == m.RSP_OK
        assert emulator.world.relay_unlocked and emulator.world.pump_running

        def broken(payload: bytes, now_ms: int) -> bytes:
            raise RuntimeError("injected fault")

        emulator.firmware.handle_command = broken
        _, raw = host.command_frame(m.encode_command(m.CMD_STATUS))
        port.write(raw)
        deadline = time.monotonic() + 2
        while emulator.world.relay_unlocked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not emulator.world.relay_unlocked and not emulator.world.pump_running
        assert emulator.crash == "RuntimeError: injected fault"
        port.reset_input_buffer()
        port.write(host.ping_frame(3))
        time.sleep(0.3)
        assert port.read(4096) == b""  # a dead board says nothing, not even "alive=0"
        assert "firmware=crashed" in answer("status", emulator)
        port.close()
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 1 and "injected fault" in crashes[0].getMessage()


FAKE_MACHINE = """
import sys
PINS = {}
FAULTED = []

class Pin:
    IN, OUT, PULL_UP = 0, 1, 2

    def __init__(self, pin, mode=0, pull=None, value=None):
        self.pin = pin
        PINS.setdefault(pin, 0 if pin in (3, 5, 6) else 1)  # door shut, no fire or tamper
        if value is not None:
            self.value(value)

    def value(self, value=None):
        if value is None:
            return PINS[self.pin]
        PINS[self.pin] = value
        sys.stderr.write("pin %d %d\\n" % (self.pin, value))

class ADC:
    def __init__(self, pin):
        pass

    def read_u16(self):
        if PINS[15]:  # the injected fault: the level sensor fails while the door is unlocked
            FAULTED.append(1)
            raise OSError(5)
        return 40000

class WDT:
    def __init__(self, timeout):
        sys.stderr.write("wdt armed\\n")

    def feed(self):
        if FAULTED:
            sys.stderr.write("wdt fed after the fault\\n")
"""


def test_a_fault_in_the_board_loop_locks_the_relay_and_leaves_the_watchdog_unfed(
    tmp_path: Path,
) -> None:
    """main.py itself under MicroPython's unix port, ``machine`` faked at the pins."""
    micropython = Path(sys.executable).with_name("micropython")
    (tmp_path / "fake_machine.py").write_text(FAKE_MACHINE)
    runner = tmp_path / "boot.py"
    runner.write_text(
        "import sys\nimport fake_machine\nsys.modules['machine'] = fake_machine\n"
        f"sys.path.append({str(REPO / 'firmware_bridge')!r})\nimport main\n"
    )
    process = subprocess.Popen(
        [str(micropython), str(runner)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )
    assert process.stdin is not None and process.stderr is not None
    try:
        assert process.stderr.readline() == b"pin 15 0\n"  # the HAL drives the outputs low
        host = HostSession(7)
        _, unlock = host.command_frame(m.encode_command(m.CMD_UNLOCK, 20000, 1))
        process.stdin.write(host.hello_frame() + unlock)
        process.stdin.flush()
        lines = []
        while b"pin 15 1\n" not in lines or lines[-1] != b"pin 16 0\n":
            line = process.stderr.readline()
            assert line, b"".join(lines)  # the board exited instead of failing safe
            lines.append(line)
        time.sleep(0.3)
        halted = process.poll() is None
    finally:
        process.kill()
        process.wait()
    events = [line.decode().strip() for line in lines]
    assert events[events.index("pin 15 1") + 1 :] == ["pin 15 0", "pin 16 0"]
    assert halted  # waiting for the watchdog, not back at a REPL reading the host's bytes
    assert b"wdt fed after the fault" not in process.stderr.read()
