"""Host end of the station link: sessions, retransmit, heartbeat, over a real serial port.

Two layers, as in Klipper's serialhdl: ``HostSession`` is the link state of one
session with no I/O (bytes in, frames out), so it can be fuzzed in-process;
``SerialLink`` adds pyserial, a reader thread and a heartbeat thread. Neither knows
what a door is: payloads are built and read by ``firmware_bridge.messages``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import serial

from firmware_bridge import messages, wire
from firmware_bridge.firmware import FIRMWARE_ID
from gate.errors import GateError

log = logging.getLogger(__name__)


class LinkError(GateError):
    """The link cannot carry a command right now."""


class LinkDown(LinkError):
    """The port went away or the session was dropped."""


class NoAck(LinkError):
    """A frame went unanswered after every retry."""


class VersionMismatch(LinkError):
    """The board runs firmware this host cannot talk to."""


@dataclass
class LinkMetrics:
    """Counters that survive reconnects; read them to judge the line's health."""

    frames_sent: int = 0
    frames_received: int = 0
    retransmits: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    duplicates: int = 0
    reconnects: int = 0
    rtt_ms_last: float = 0.0
    rtt_ms_avg: float = 0.0
    rtt_samples: int = 0

    def add_rtt(self, seconds: float) -> None:
        ms = seconds * 1000
        self.rtt_ms_last = ms
        self.rtt_samples += 1
        self.rtt_ms_avg += (ms - self.rtt_ms_avg) / self.rtt_samples


@dataclass(frozen=True)
class HelloInfo:
    protocol: int
    firmware_id: str
    version: tuple[int, int, int]
    boot_id: int

    @property
    def firmware(self) -> str:
        return f"{self.firmware_id} {'.'.join(map(str, self.version))}"


@dataclass
class EventFilter:
    """Drops an event the MCU sends again after a lost ack, even across sessions.

    Events carry a number that counts per MCU boot; a new boot id starts afresh.
    """

    boot_id: int | None = None
    last_evno: int | None = None

    def new_session(self, boot_id: int) -> None:
        if boot_id != self.boot_id:
            self.boot_id = boot_id
            self.last_evno = None

    def is_new(self, evno: int) -> bool:
        if self.last_evno is not None and not 0 < (evno - self.last_evno) & 0xFFFF < 0x8000:
            return False
        self.last_evno = evno
        return True


@dataclass(frozen=True)
class Incoming:
    """Something the session learned from the MCU that its owner must act on."""

    kind: str  # 'pong', 'ack', 'nak' or 'event'
    seq: int = 0
    payload: bytes = b""
    event: tuple[str, int, int] | None = None  # (name, value, ref) for 'event'


@dataclass
class HostSession:
    """Link state of one host session, without I/O."""

    nonce: int
    events: EventFilter = field(default_factory=EventFilter)
    hello: HelloInfo | None = None
    deframer: wire.Deframer = field(default_factory=wire.Deframer)
    tx_seq: int = 0
    rx_expected: int = 0
    duplicates: int = 0
    frames: int = 0
    out: bytearray = field(default_factory=bytearray)

    def hello_frame(self) -> bytes:
        return wire.encode_frame(
            wire.HELLO, 0, messages.encode_hello(wire.PROTOCOL_VERSION, self.nonce)
        )

    def ping_frame(self, nonce: int) -> bytes:
        return wire.encode_frame(wire.PING, 0, nonce.to_bytes(2, "big"))

    def command_frame(self, payload: bytes) -> tuple[int, bytes]:
        """Give the next command its seq; a retransmit resends these exact bytes."""
        seq = self.tx_seq
        self.tx_seq = wire.seq_next(seq)
        return seq, wire.encode_frame(wire.DATA, seq, payload)

    def feed(self, data: bytes) -> list[Incoming]:
        """Digest bytes from the MCU; link answers (acks, naks) collect in ``out``."""
        errors = self.deframer.errors
        incoming: list[Incoming] = []
        for kind, seq, payload in self.deframer.feed(data):
            self.frames += 1
            if kind == wire.HELLO_REPLY:
                self._on_hello_reply(payload)
            elif self.hello is None:
                continue  # left over from an earlier session
            elif kind == wire.DATA:
                incoming.extend(self._on_event(seq, payload))
            elif kind == wire.PONG and len(payload) == 3:
                incoming.append(Incoming("pong", int.from_bytes(payload[:2], "big"), payload[2:]))
            elif kind in (wire.ACK, wire.NAK):
                incoming.append(Incoming("ack" if kind == wire.ACK else "nak", seq, bytes(payload)))
        if self.hello is not None and self.deframer.errors != errors:
            self.out.extend(wire.encode_frame(wire.NAK, self.rx_expected))
        return incoming

    def _on_hello_reply(self, payload: bytes) -> None:
        reply = messages.decode_hello_reply(payload)
        if reply is None or self.hello is not None or reply[1] != self.nonce:
            return
        protocol, _, boot_id, version, firmware_id = reply
        self.hello = HelloInfo(protocol, firmware_id, version, boot_id)
        self.events.new_session(boot_id)

    def _on_event(self, seq: int, payload: bytes) -> list[Incoming]:
        if seq == wire.seq_prev(self.rx_expected):
            self.duplicates += 1
            self.out.extend(wire.encode_frame(wire.ACK, seq))
            return []
        if seq != self.rx_expected:
            self.out.extend(wire.encode_frame(wire.NAK, self.rx_expected))
            return []
        self.rx_expected = wire.seq_next(seq)
        self.out.extend(wire.encode_frame(wire.ACK, seq))
        event = messages.decode_event(payload)
        if event is None:
            return []
        name, evno, value, ref = event
        if not self.events.is_new(evno):
            self.duplicates += 1
            return []
        return [Incoming("event", seq, event=(name, value, ref))]


class _Pending:
    """The one command in flight: its bytes (for retransmit), retry clock and result."""

    def __init__(self, seq: int, frame: bytes, ack_timeout: float) -> None:
        self.seq = seq
        self.frame = frame
        self.sent_at = time.monotonic()
        self.deadline = self.sent_at + ack_timeout
        self.attempts = 1
        self.future: Future[bytes] = Future()


def check_hello(info: HelloInfo, port: str) -> None:
    """Raise VersionMismatch with one line a technician can act on."""
    if info.protocol != wire.PROTOCOL_VERSION or info.firmware_id != FIRMWARE_ID:
        raise VersionMismatch(
            f"station on {port} runs '{info.firmware}' speaking protocol {info.protocol}; "
            f"this gate needs '{FIRMWARE_ID}' with protocol {wire.PROTOCOL_VERSION}: "
            "flash firmware_bridge/ (see firmware_bridge/README.md)"
        )


class SerialLink:
    """One session over one open serial port; discard it once lost and make a new one."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        ack_timeout: float = 0.2,
        retries: int = 5,
        heartbeat: float = 0.5,
        metrics: LinkMetrics | None = None,
        events: EventFilter | None = None,
        on_event: Callable[[str, int, int], None] = lambda name, value, ref: None,
        on_lost: Callable[[str], None] = lambda reason: None,
        on_trouble: Callable[[], None] = lambda: None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.heartbeat = heartbeat
        # The MCU drops a silent host after 1.5 s; give up on it no later than that.
        self.dead_after = max(3 * heartbeat, 1.5)
        self.metrics = metrics or LinkMetrics()
        self._session = HostSession(int.from_bytes(os.urandom(4), "big"), events or EventFilter())
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_trouble = on_trouble
        self._serial: serial.Serial | None = None
        self._write_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._lose_lock = threading.Lock()
        self._hello_seen = threading.Event()
        self._closed = threading.Event()
        self._pending: _Pending | None = None
        self._ping_nonce = 0
        self._ping_sent = 0.0
        self._ping_answered = True
        self._last_pong = 0.0
        self.lost_reason: str | None = None
        self._threads: list[threading.Thread] = []

    @property
    def alive(self) -> bool:
        return self.lost_reason is None and not self._closed.is_set()

    def connect(self) -> HelloInfo:
        """Open the port and say hello; raise LinkError if nobody (right) answers."""
        try:
            self._serial = serial.Serial(
                self.port,
                self.baudrate,
                timeout=min(0.05, self.ack_timeout / 4),  # the retransmit clock's tick
                write_timeout=1.0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkDown(f"cannot open station port {self.port}: {exc}") from None
        self._spawn(self._read_loop, "station-reader")
        hello = self._session.hello_frame()
        for attempt in range(self.retries + 1):
            self._write(hello)
            if self._hello_seen.wait(self.ack_timeout * (attempt + 1)) or not self.alive:
                break
        info = self._session.hello
        if info is None:
            reason = self.lost_reason or f"no answer to hello after {self.retries + 1} tries"
            self.close()
            raise LinkDown(f"station on {self.port}: {reason}")
        try:
            check_hello(info, self.port)
        except VersionMismatch:
            self.close()
            raise
        self._last_pong = time.monotonic()
        self._spawn(self._heartbeat_loop, "station-heartbeat")
        return info

    def submit(self, payload: bytes) -> Future[bytes]:
        """Send one command now; the future gets the MCU's reply. The MCU runs it at most once.

        Stop-and-wait: one command at a time (LinkError otherwise). The reader thread
        retransmits the same bytes until the ack comes. Never replayed in a later
        session: if the link is lost first, the future fails and the caller decides
        (the command may or may not have run).
        """
        with self._pending_lock:
            if not self.alive:
                raise LinkDown(f"station link is down: {self.lost_reason or 'closed'}")
            if self._pending is not None:
                raise LinkError("a station command is already in flight")
            seq, frame = self._session.command_frame(payload)
            pending = _Pending(seq, frame, self.ack_timeout)
            self._pending = pending
        self._write(frame)
        return pending.future

    def _finish(self, pending: _Pending, reply: bytes | None, error: LinkError | None) -> None:
        """Settle the command in flight once, whoever gets there first."""
        with self._pending_lock:
            if self._pending is not pending:
                return
            self._pending = None
        with contextlib.suppress(InvalidStateError):  # the caller gave up waiting
            if error is None:
                pending.future.set_result(reply or b"")
            else:
                pending.future.set_exception(error)

    def _check_retransmit(self) -> None:
        pending = self._pending
        if pending is None or time.monotonic() < pending.deadline:
            return
        if pending.attempts > self.retries:
            reason = f"no ack after {pending.attempts} tries"
            self._finish(pending, None, NoAck(reason))
            # The MCU may hold this seq or not: only a new session is unambiguous.
            self._lose(reason)
            return
        pending.attempts += 1
        pending.deadline = time.monotonic() + self.ack_timeout
        self.metrics.retransmits += 1
        self._on_trouble()
        self._write(pending.frame)

    def close(self) -> None:
        """Stop both threads and release the port; safe to call more than once."""
        self._closed.set()
        pending = self._pending
        if pending is not None:
            self._finish(pending, None, LinkDown("link closed"))
        port = self._serial
        if port is not None:
            port.cancel_read()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        if port is not None:
            port.close()

    def lose(self, reason: str) -> None:
        """Declare this session dead (the owner reconnects with a new one)."""
        self._lose(reason)

    # -- threads ------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _read_loop(self) -> None:
        port = self._serial
        assert port is not None
        while not self._closed.is_set():
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, ValueError) as exc:
                if not self._closed.is_set():
                    self._lose(f"port {self.port} failed: {exc}")
                return
            if data:
                self._on_bytes(data)
            self._check_retransmit()

    def _on_bytes(self, data: bytes) -> None:
        session = self._session
        crc, framing = session.deframer.crc_errors, session.deframer.framing_errors
        had_hello = session.hello is not None
        incoming = session.feed(data)
        if not had_hello and session.hello is not None:
            self._hello_seen.set()
        self.metrics.crc_errors += session.deframer.crc_errors - crc
        self.metrics.framing_errors += session.deframer.framing_errors - framing
        self.metrics.duplicates += session.duplicates
        self.metrics.frames_received += session.frames
        session.duplicates = session.frames = 0
        if session.deframer.crc_errors != crc and had_hello:
            self._on_trouble()
        for item in incoming:
            self._dispatch(item)
        if session.out:
            out = bytes(session.out)
            session.out.clear()
            self._write(out)

    def _dispatch(self, item: Incoming) -> None:
        pending = self._pending
        if item.kind == "event":
            assert item.event is not None
            self._on_event(*item.event)
        elif item.kind == "pong":
            self._on_pong(item.seq, item.payload)
        elif pending is None or item.seq != pending.seq:
            return  # an ack or nak for nothing in flight: stale, ignore
        elif item.kind == "ack":
            if pending.attempts == 1:  # Karn: a retransmitted command's RTT is ambiguous
                self.metrics.add_rtt(time.monotonic() - pending.sent_at)
            self._finish(pending, item.payload, None)
        else:
            self.metrics.retransmits += 1
            self._on_trouble()
            self._write(pending.frame)

    def _on_pong(self, nonce: int, alive: bytes) -> None:
        if alive != b"\x01":
            self._lose("station dropped the session (it missed our heartbeat)")
            return
        if nonce != self._ping_nonce:
            return
        now = time.monotonic()
        rtt = now - self._ping_sent
        self._ping_answered = True
        self._last_pong = now
        self.metrics.add_rtt(rtt)
        if rtt > self.ack_timeout:
            self._on_trouble()

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self.heartbeat):
            now = time.monotonic()
            if now - self._last_pong > self.dead_after:
                self._lose(f"no heartbeat answer for {now - self._last_pong:.1f} s")
                return
            if not self._ping_answered:
                self._on_trouble()
            self._ping_nonce = (self._ping_nonce + 1) & 0xFFFF
            self._ping_answered = False
            self._ping_sent = now
            self._write(self._session.ping_frame(self._ping_nonce))

    def _write(self, data: bytes) -> None:
        port = self._serial
        if port is None or not self.alive:
            return
        try:
            with self._write_lock:
                port.write(data)
        except (serial.SerialException, OSError, TypeError, ValueError) as exc:
            self._lose(f"port {self.port} failed: {exc}")
            return
        self.metrics.frames_sent += data.count(0) // 2  # each frame is 0x00 COBS 0x00

    def _lose(self, reason: str) -> None:
        with self._lose_lock:
            if self.lost_reason is not None or self._closed.is_set():
                return
            self.lost_reason = reason
        log.warning("station link lost: %s", reason)
        pending = self._pending
        if pending is not None:
            self._finish(pending, None, LinkDown(reason))
        self._on_lost(reason)
