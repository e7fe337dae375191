"""Both ends of the link in one process on a hand-driven clock (no pty, no threads).

The real firmware with the emulator's world and HAL on one side, the host's real
``HostSession`` on the other, bytes passed between them by hand. Firmware and fuzz
tests use it to run thousands of cases deterministically and fast.
"""

from __future__ import annotations

from firmware_bridge import messages as m
from firmware_bridge import wire
from firmware_bridge.emulator import EmulatedHal, World
from firmware_bridge.firmware import Firmware
from gate.sanitizer.link import EventFilter, HostSession

STEP_MS = 5
HEARTBEAT_MS = 500


class Rig:
    def __init__(self, heartbeat: bool = True, **world: float | bool) -> None:
        self.world = World(**{"auto_door": False, **world})
        self.actuations: list[tuple[str, int, int]] = []
        self.hal = EmulatedHal(self.world, lambda *a: self.actuations.append(a))
        self.firmware = Firmware(self.hal)
        self.heartbeat = heartbeat
        self.now = 0
        self.events: list[tuple[str, int, int]] = []
        self.acks: list[tuple[int, bytes]] = []
        self.filter = EventFilter()
        self.host = HostSession(1, self.filter)
        self._next_ping = 0
        self._nonce = 1

    def advance(self, ms: int, deliver: bool = True, answer: bool = True) -> None:
        """Let ``ms`` pass; ``deliver``/``answer`` False lose the MCU's/the host's frames."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + STEP_MS)
            if self.heartbeat and self.host.hello is not None and self.now >= self._next_ping:
                self._next_ping = self.now + HEARTBEAT_MS
                self.hal.rx.extend(self.host.ping_frame(1))
            self.tick(deliver, answer)

    def tick(self, deliver: bool = True, answer: bool = True) -> None:
        self.world.step(self.now)
        self.firmware.poll(self.now)
        out = bytes(self.hal.tx)
        self.hal.tx.clear()
        if deliver:
            self.from_mcu(out, answer)

    def from_mcu(self, data: bytes, answer: bool = True) -> None:
        for item in self.host.feed(data):
            if item.kind == "event":
                assert item.event is not None
                self.events.append(item.event)
            elif item.kind == "ack":
                self.acks.append((item.seq, item.payload))
        if answer:
            self.hal.rx.extend(self.host.out)
        self.host.out.clear()

    def hello(self) -> None:
        """A host (re)starts: new session, as after a host process restart."""
        self._nonce += 1
        self.host = HostSession(self._nonce, self.filter)
        self.hal.rx.extend(self.host.hello_frame())
        self.advance(STEP_MS)
        assert self.host.hello is not None

    def send(self, payload: bytes) -> bytes:
        """Send one command frame and return its raw frame (for replays)."""
        _, frame = self.host.command_frame(payload)
        self.hal.rx.extend(frame)
        return frame

    def command(self, cmd: int, *args: int) -> tuple[int, tuple[int, ...]]:
        before = len(self.acks)
        self.send(m.encode_command(cmd, *args))
        self.advance(STEP_MS)
        assert len(self.acks) == before + 1, "no ack"
        reply = m.decode_reply(self.acks[-1][1])
        assert reply is not None
        return reply

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]

    def executed(self, kind: str) -> list[tuple[str, int, int]]:
        return [a for a in self.actuations if a[0] == kind]


def frame(kind: int, seq: int, payload: bytes = b"") -> bytes:
    return wire.encode_frame(kind, seq, payload)
