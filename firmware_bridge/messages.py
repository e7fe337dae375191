"""What the payloads mean: commands, replies and events, shared by the gate and the MCU.

Kept apart from ``wire.py`` (which only moves bytes) the way Klipper keeps msgproto
apart from serialhdl. MicroPython subset: struct and bytes only. Decoders return
None for anything malformed, never raise, so a bad frame can only be dropped.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython: const() is only a hint to the MicroPython compiler

    def const(value):
        return value


# Commands (host -> MCU, inside DATA frames): id byte + fixed arguments.
CMD_STATUS = const(0x10)
CMD_DISPENSE = const(0x11)  # ms:u16 ref:u32
CMD_UNLOCK = const(0x12)  # ms:u32 ref:u32
CMD_LOCK = const(0x13)
CMD_CONFIGURE = const(0x14)  # LIMITS_FMT

# Replies (MCU -> host, inside the ACK of the command).
RSP_OK = const(0x30)  # value:u32 (granted ms)
RSP_REFUSED = const(0x31)  # reason:u8
RSP_STATUS = const(0x32)  # STATUS_FMT
RSP_LIMITS = const(0x33)  # LIMITS_FMT, the limits now in force

REFUSED_NO_SESSION = const(1)
REFUSED_FLUID_EMPTY = const(2)
REFUSED_BUSY = const(3)
REFUSED_BAD_ARGS = const(4)
REFUSED_UNKNOWN = const(5)
REFUSAL_TEXT = {
    REFUSED_NO_SESSION: "no host session (heartbeat lost)",
    REFUSED_FLUID_EMPTY: "fluid empty",
    REFUSED_BUSY: "pump already running",
    REFUSED_BAD_ARGS: "bad arguments",
    REFUSED_UNKNOWN: "unknown command",
}

_ARGS = {
    CMD_STATUS: "",
    CMD_DISPENSE: ">HI",
    CMD_UNLOCK: ">II",
    CMD_LOCK: "",
    CMD_CONFIGURE: ">IHIHB",
}
# unlock_max_ms, dispense_max_ms, held_open_ms, heartbeat_ms, fluid_low_pct
LIMITS_FMT = ">IHIHB"
# flags, fluid %, unlock ref, unlock ms left
STATUS_FMT = ">BBII"
STATUS_RELAY = const(1)
STATUS_PUMP = const(2)
STATUS_DOOR_OPEN = const(4)
STATUS_FIRE = const(8)
STATUS_TAMPER = const(16)
STATUS_HANDS = const(32)

# Events (MCU -> host, inside DATA frames): id, event number, value, ref.
# The event number counts per MCU boot so the host drops an event it already
# had when a lost ack made the MCU send it again in a new session.
EVENT_FMT = ">BHII"
EVENT_NAMES = (
    "boot",
    "hands_present",
    "hands_absent",
    "dispensed",
    "fluid_level",
    "fluid_low",
    "fluid_empty",
    "door_opened",
    "door_closed",
    "door_forced",
    "door_held",
    "exit_request",
    "fire_on",
    "fire_off",
    "tamper",
    "fault",
)
EVENT_BASE = const(0x50)
EVENT_IDS = {name: EVENT_BASE + i for i, name in enumerate(EVENT_NAMES)}

FAULT_HEARTBEAT_LOST = const(1)
FAULT_EVENTS_DROPPED = const(2)


def encode_command(cmd, *args):
    return bytes((cmd,)) + struct.pack(_ARGS[cmd], *args)


def decode_command(payload):
    """(cmd, args) or None when the id is unknown or the length is wrong."""
    if not payload:
        return None
    fmt = _ARGS.get(payload[0])
    if fmt is None or len(payload) - 1 != struct.calcsize(fmt):
        return None
    return payload[0], struct.unpack(fmt, payload[1:]) if fmt else ()


def encode_reply(rsp, fmt, *values):
    return bytes((rsp,)) + struct.pack(fmt, *values)


def decode_reply(payload):
    """(rsp, values) or None when malformed."""
    if not payload:
        return None
    fmt = {RSP_OK: ">I", RSP_REFUSED: ">B", RSP_STATUS: STATUS_FMT, RSP_LIMITS: LIMITS_FMT}.get(
        payload[0]
    )
    if fmt is None or len(payload) - 1 != struct.calcsize(fmt):
        return None
    return payload[0], struct.unpack(fmt, payload[1:])


def encode_event(name, evno, value=0, ref=0):
    return struct.pack(EVENT_FMT, EVENT_IDS[name], evno & 0xFFFF, value, ref)


def decode_event(payload):
    """(name, evno, value, ref) or None when malformed."""
    if len(payload) != struct.calcsize(EVENT_FMT):
        return None
    event_id, evno, value, ref = struct.unpack(EVENT_FMT, payload)
    index = event_id - EVENT_BASE
    if index < 0 or index >= len(EVENT_NAMES):
        return None
    return EVENT_NAMES[index], evno, value, ref


# HELLO: protocol:u8 nonce:u32. HELLO_REPLY: protocol, nonce, boot id:u32,
# version major/minor/patch:u8 x3, then the firmware id as ASCII.
HELLO_FMT = ">BI"
HELLO_REPLY_FMT = ">BII3B"


def encode_hello(protocol, nonce):
    return struct.pack(HELLO_FMT, protocol, nonce)


def decode_hello(payload):
    if len(payload) != struct.calcsize(HELLO_FMT):
        return None
    return struct.unpack(HELLO_FMT, payload)


def encode_hello_reply(protocol, nonce, boot_id, version, firmware_id):
    return struct.pack(HELLO_REPLY_FMT, protocol, nonce, boot_id, *version) + firmware_id.encode()


def decode_hello_reply(payload):
    """(protocol, nonce, boot_id, (major, minor, patch), firmware_id) or None."""
    size = struct.calcsize(HELLO_REPLY_FMT)
    if len(payload) < size:
        return None
    protocol, nonce, boot_id, major, minor, patch = struct.unpack(HELLO_REPLY_FMT, payload[:size])
    try:
        firmware_id = payload[size:].decode()
    except UnicodeError:
        return None
    return protocol, nonce, boot_id, (major, minor, patch), firmware_id


# PING: nonce:u16. PONG: nonce:u16 alive:u8 (0 = the MCU has no session with us).
PING_FMT = ">H"
PONG_FMT = ">HB"
