"""Link layer shared by the gate and the station MCU: COBS framing, CRC-16, frame kinds.

Written in the subset of Python that MicroPython runs (bytes, bytearray, struct,
no dataclasses/enum/typing) because the same file is copied onto the board.
What a payload means lives in ``messages.py``; this file only moves bytes.
See PROTOCOL.md for the byte layout.
"""

try:
    from micropython import const
except ImportError:  # CPython: const() is only a hint to the MicroPython compiler

    def const(value):
        return value


PROTOCOL_VERSION = const(1)

# Frame kinds (first byte of a decoded frame).
HELLO = const(1)  # host -> MCU: start a session
HELLO_REPLY = const(2)  # MCU -> host: who I am
PING = const(3)  # host -> MCU: heartbeat
PONG = const(4)  # MCU -> host: heartbeat answer, carries "session alive"
DATA = const(5)  # either way: a sequenced message that must be acked
ACK = const(6)  # either way: seq received; MCU acks carry the command's reply
NAK = const(7)  # either way: "I still expect seq N": resend it now

# Decoded frame = kind(1) seq(1) length(1) payload(length) crc(2). The length byte
# is not redundant: a CRC without final XOR also "matches" a valid frame with a
# 0x00 appended, which a single flipped delimiter produces.
HEADER = const(3)
MAX_FRAME = const(53)  # header + payload of at most 48 + crc
# COBS adds one byte per 254 plus one; anything longer than this is noise.
MAX_ENCODED = const(55)


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout)."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data):
    """Encode so the result holds no 0x00; the caller appends the 0x00 delimiter."""
    out = bytearray(1)
    code_at = 0
    code = 1
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte:
            out.append(byte)
            code += 1
        if not byte or code == 0xFF:
            out[code_at] = code
            if not byte or i < last:
                code_at = len(out)
                out.append(0)
                code = 1
            else:
                return bytes(out)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (no delimiter); None if it is not valid COBS."""
    if b"\x00" in data:
        return None
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            return None
        out.extend(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(kind, seq, payload=b""):
    """One frame ready for the wire: a leading and a trailing 0x00 around COBS(body + CRC).

    The leading 0x00 ends whatever garbage the receiver may be holding, so a valid
    frame after noise is never glued to it.
    """
    size = HEADER + len(payload)
    body = bytearray(size + 2)
    body[0] = kind
    body[1] = seq & 0xFF
    body[2] = len(payload)
    body[HEADER:size] = payload
    crc = crc16(memoryview(body)[:size])
    body[-2] = crc >> 8
    body[-1] = crc & 0xFF
    return b"\x00" + cobs_encode(body) + b"\x00"


class Deframer:
    """Turns a byte stream into (kind, seq, payload) frames; bad bytes are counted and dropped."""

    def __init__(self):
        self._buf = bytearray()
        self._overflow = False
        self.crc_errors = 0
        self.framing_errors = 0

    def feed(self, data):
        """Return the list of valid frames completed by ``data``."""
        frames = []
        for byte in data:
            if byte:
                if len(self._buf) < MAX_ENCODED:
                    self._buf.append(byte)
                else:
                    self._overflow = True
                continue
            if self._overflow:
                self.framing_errors += 1
            elif self._buf:
                frame = self._parse(self._buf)
                if frame is not None:
                    frames.append(frame)
            self._buf = bytearray()
            self._overflow = False
        return frames

    def _parse(self, encoded):
        body = cobs_decode(encoded)
        if body is None or len(body) < HEADER + 2 or len(body) > MAX_FRAME:
            self.framing_errors += 1
            return None
        if crc16(body[:-2]) != (body[-2] << 8) | body[-1]:
            self.crc_errors += 1
            return None
        if body[2] != len(body) - HEADER - 2:
            self.framing_errors += 1
            return None
        return body[0], body[1], body[HEADER:-2]

    @property
    def errors(self):
        return self.crc_errors + self.framing_errors


def seq_next(seq):
    return (seq + 1) & 0xFF


def seq_prev(seq):
    return (seq - 1) & 0xFF
