"""Fuzzing both ends of the link: noise, truncation, bit flips, replays, reordering.

Most cases run in-process (firmware + host session on a hand-driven clock) so
thousands stay fast; a few hundred go over a real pty through pyserial.
Every property: no exception, no actuation from a bad or replayed frame, and a
valid frame after the garbage is accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge import wire
from firmware_bridge.emulator import Emulator
from gate.config import StationSettings
from gate.sanitizer.link import HostSession, Incoming
from gate.sanitizer.station import Station
from tests.test_link_rig import Rig, frame

FAST = {"derandomize": True, "deadline": None}
UNLOCK = m.encode_command(m.CMD_UNLOCK, 1000, 77)
noise = st.binary(max_size=200)


def connected_rig() -> Rig:
    rig = Rig()
    rig.hello()
    return rig


def status_works(rig: Rig) -> bool:
    return rig.command(m.CMD_STATUS)[0] == m.RSP_STATUS


@settings(max_examples=2000, **FAST)
@given(noise, st.integers(1, 16))
def test_deframer_takes_any_bytes_and_resyncs(garbage: bytes, chunk: int) -> None:
    deframer = wire.Deframer()
    valid = frame(wire.DATA, 5, UNLOCK)
    stream = garbage + valid
    frames = []
    for i in range(0, len(stream), chunk):
        frames += deframer.feed(stream[i : i + chunk])
    assert frames[-1] == (wire.DATA, 5, UNLOCK)


@settings(max_examples=2000, **FAST)
@given(noise)
def test_firmware_survives_noise_without_actuating(garbage: bytes) -> None:
    rig = connected_rig()
    rig.hal.rx.extend(garbage)
    rig.advance(10)
    assert rig.actuations == []
    assert status_works(rig)  # resynchronised: the next valid frame is taken


@settings(max_examples=2000, **FAST)
@given(st.data())
def test_bit_flipped_or_truncated_command_never_actuates(data: st.DataObject) -> None:
    rig = connected_rig()
    seq, raw = rig.host.command_frame(UNLOCK)
    damaged = bytearray(raw)
    if data.draw(st.booleans(), "truncate"):
        damaged = damaged[: data.draw(st.integers(1, len(raw) - 2), "keep")]
    else:
        bits = data.draw(st.sets(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=3))
        for bit in bits:
            damaged[bit // 8] ^= 1 << (bit % 8)
    # A flip can leave the content intact (e.g. the closing 0x00 turned into COBS's
    # no-op code 0x01): that frame is the original and may run. Anything else must not.
    intact = (wire.DATA, seq, UNLOCK) in wire.Deframer().feed(bytes(damaged) + b"\x00")
    rig.hal.rx.extend(damaged + b"\x00")
    rig.advance(10)
    assert len(rig.actuations) == intact
    if not intact:
        rig.host.tx_seq = seq  # the MCU never took it: the next command reuses the seq
    assert status_works(rig)


@settings(max_examples=1500, **FAST)
@given(st.lists(st.integers(0, 11), max_size=40))
def test_replayed_and_reordered_commands_run_exactly_once_in_order(order: list[int]) -> None:
    rig = connected_rig()
    frames = [
        rig.host.command_frame(m.encode_command(m.CMD_UNLOCK, 1000, ref))[1] for ref in range(12)
    ]
    expected, should_run = 0, []
    for index in order:
        if index == expected:  # the model: only the next seq runs, everything else is dropped
            should_run.append(index)
            expected += 1
        rig.hal.rx.extend(frames[index])
        rig.tick()
    assert [ref for _, _, ref in rig.executed("unlock")] == should_run


@settings(max_examples=1500, **FAST)
@given(st.lists(st.integers(0, 11), max_size=40), noise)
def test_host_delivers_each_event_once_whatever_the_order(order: list[int], garbage: bytes) -> None:
    host = HostSession(9)
    host.feed(frame(wire.HELLO_REPLY, 0, m.encode_hello_reply(1, 9, 3, (1, 0, 0), "x")))
    events = [frame(wire.DATA, i, m.encode_event("door_opened", i + 1, 0, i)) for i in range(12)]
    delivered, expected, should = [], 0, []
    for index in order:
        if index == expected:
            should.append(index)
            expected += 1
        delivered += [i.event[2] for i in host.feed(events[index]) if i.event is not None]
    delivered += [i.event[2] for i in host.feed(garbage + events[expected % 12]) if i.event]
    if expected < 12:
        should.append(expected)
    assert delivered == should


@settings(max_examples=1000, **FAST)
@given(noise)
def test_host_session_drops_noise_and_stale_frames_before_hello(garbage: bytes) -> None:
    host = HostSession(9)
    stale_event = frame(wire.DATA, 0, m.encode_event("door_forced", 1))
    assert host.feed(garbage + stale_event) == []  # nothing counts before our hello reply
    host.feed(frame(wire.HELLO_REPLY, 0, m.encode_hello_reply(1, 9, 3, (1, 0, 0), "x")))
    assert host.hello is not None
    items = host.feed(garbage + frame(wire.ACK, 4, b"r"))
    assert [(i.kind, i.seq, i.payload) for i in items][-1] == ("ack", 4, b"r")


# -- over a real pty ------------------------------------------------------------------


def test_noise_over_the_pty_never_actuates_and_the_mcu_resyncs() -> None:
    with Emulator(auto_door=False) as emulator:
        port = serial.Serial(emulator.start(), timeout=0.05)
        host = HostSession(7)
        port.write(host.hello_frame())
        _exchange(port, host, lambda items: host.hello is not None)
        acked = []

        @settings(max_examples=200, **FAST)
        @given(noise)
        def one_case(garbage: bytes) -> None:
            seq, raw = host.command_frame(m.encode_command(m.CMD_STATUS))
            port.write(garbage + raw)
            items = _exchange(port, host, lambda items: ("ack", seq) in _kinds(items))
            ack = next(item for item in items if (item.kind, item.seq) == ("ack", seq))
            assert m.decode_reply(ack.payload)[0] == m.RSP_STATUS
            acked.append(seq)

        one_case()
        port.close()
        assert len(acked) == 200
        assert emulator.actuations == []
        assert emulator.firmware.link.deframer.errors > 0


def _kinds(items: list[Incoming]) -> list[tuple[str, int]]:
    return [(item.kind, item.seq) for item in items]


def _exchange(
    port: serial.Serial, host: HostSession, until: Callable[[list[Incoming]], bool]
) -> list[Incoming]:
    """Act as a bare host: read, answer link frames, until ``until(items)``; fail after 5 s."""
    deadline = time.monotonic() + 5
    items: list[Incoming] = []
    while time.monotonic() < deadline:
        items += host.feed(port.read(port.in_waiting or 1))
        if host.out:
            port.write(bytes(host.out))
            host.out.clear()
        if until(items):
            return items
    raise AssertionError("no answer from the emulator")


def test_noise_towards_the_host_is_counted_and_the_station_keeps_working() -> None:
    async def scenario() -> None:
        with Emulator(auto_door=False) as emulator:
            station = Station(emulator.start(), StationSettings())
            events = station.subscribe()
            await station.start()
            loop = asyncio.get_running_loop()

            @settings(max_examples=200, **FAST)
            @given(noise)
            def one_case(garbage: bytes) -> None:
                emulator.inject(garbage)
                asyncio.run_coroutine_threadsafe(station.status(), loop).result(timeout=10)

            await asyncio.to_thread(one_case)
            metrics = station.metrics
            await station.close()
        kinds = set()
        while not events.empty():
            kinds.add(events.get_nowait().kind)
        assert kinds <= {"link_connected", "link_degraded", "boot", "fluid_level", "link_offline"}
        assert metrics.crc_errors + metrics.framing_errors > 0
        assert metrics.reconnects == 0

    asyncio.run(scenario())
