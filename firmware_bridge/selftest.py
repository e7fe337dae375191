"""Checks the shared wire code and the firmware logic under MicroPython itself.

Run on the board (``mpremote run firmware_bridge/selftest.py`` after copying the
files) or with the unix port (``micropython firmware_bridge/selftest.py``); the
host test suite runs it that way. Prints one line per check and ``selftest ok``.
"""

try:
    from firmware_bridge import firmware, messages, wire
except ImportError:  # MicroPython: the files sit next to this one
    import firmware
    import messages
    import wire


def check(name, ok):
    if not ok:
        raise AssertionError(name)
    print("ok", name)


class FakeHal:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()
        self.inputs = [False, False, False, False, False]
        self.fluid = 80
        self.relay = None
        self.pump = None
        self.actuations = []

    def boot_id(self):
        return 7

    def read_serial(self):
        data = bytes(self.rx)
        self.rx = bytearray()
        return data

    def write_serial(self, data):
        self.tx.extend(data)

    def read_inputs(self):
        return tuple(self.inputs)

    def fluid_percent(self):
        return self.fluid

    def set_relay(self, unlocked):
        self.relay = unlocked

    def set_pump(self, on):
        self.pump = on

    def actuation(self, kind, ms, ref):
        self.actuations.append((kind, ms, ref))


def frames_from(hal, deframer):
    frames = deframer.feed(bytes(hal.tx))
    hal.tx = bytearray()
    return frames


def wire_checks():
    check("crc16 check value", wire.crc16(b"123456789") == 0x29B1)
    check("cobs zero", wire.cobs_encode(b"\x00") == b"\x01\x01")
    check("cobs mixed", wire.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33")
    long_block = bytes(range(1, 255))
    check("cobs 254 block", wire.cobs_encode(long_block) == b"\xff" + long_block)
    for data in (b"", b"\x00\x00", long_block + b"\x00", bytes(range(256)) * 2):
        check("cobs round trip " + str(len(data)), wire.cobs_decode(wire.cobs_encode(data)) == data)
    check("cobs rejects zero", wire.cobs_decode(b"\x02\x00") is None)
    frame = wire.encode_frame(wire.DATA, 9, b"\x00abc")
    deframer = wire.Deframer()
    got = deframer.feed(b"\x13\x37garbage\x00\xff" + frame)
    check("deframer resyncs after garbage", got == [(wire.DATA, 9, b"\x00abc")])
    errors = deframer.errors
    flipped = bytearray(frame)
    flipped[3] ^= 0x10
    check("bit flip dropped", deframer.feed(bytes(flipped)) == [])
    check("bit flip counted", deframer.errors == errors + 1)
    event = messages.decode_event(messages.encode_event("door_opened", 3, 0, 77))
    check("event round trip", event == ("door_opened", 3, 0, 77))
    command = messages.decode_command(messages.encode_command(messages.CMD_UNLOCK, 5000, 77))
    check("command round trip", command == (messages.CMD_UNLOCK, (5000, 77)))


def firmware_checks():
    hal = FakeHal()
    fw = firmware.Firmware(hal)
    deframer = wire.Deframer()
    now = 0
    hal.rx.extend(wire.encode_frame(wire.HELLO, 0, messages.encode_hello(wire.PROTOCOL_VERSION, 1)))
    fw.poll(now)
    check("hello answered", frames_from(hal, deframer)[0][0] == wire.HELLO_REPLY)
    unlock = messages.encode_command(messages.CMD_UNLOCK, 3600000, 42)
    hal.rx.extend(wire.encode_frame(wire.DATA, 0, unlock))
    fw.poll(now)
    acks = [f for f in frames_from(hal, deframer) if f[0] == wire.ACK]
    reply = messages.decode_reply(acks[0][2])
    check("unlock capped", reply == (messages.RSP_OK, (firmware.UNLOCK_MAX_MS,)))
    check("relay on", hal.relay is True)
    hal.rx.extend(wire.encode_frame(wire.DATA, 0, unlock))
    fw.poll(now)
    check("retransmit not run twice", len(hal.actuations) == 1)
    while hal.relay and now < 5000:
        now += 10
        fw.poll(now)
    check("heartbeat loss relocks", hal.relay is False and now <= 1510)
    hal.inputs[3] = True  # fire, with no host at all
    fw.poll(now + 10)
    fw.poll(now + 40)
    check("fire unlocks without host", hal.relay is True)


wire_checks()
firmware_checks()
print("selftest ok")
