"""The MCU end of the link: sessions, heartbeat watch, exactly-once commands, reliable events.

MicroPython subset. Knows frames and sequence numbers, not doors or pumps: it hands
each new command payload to ``handler.handle_command`` exactly once and tells the
handler when a host session starts or its heartbeat is lost.
"""

try:
    from firmware_bridge import messages, wire
except ImportError:  # on the board the files sit flat in the root folder
    import messages
    import wire

EVENT_QUEUE_MAX = 32
EVENT_RETRANSMIT_MS = 100


class McuLink:
    """Stop-and-wait in both directions; one session per host HELLO."""

    def __init__(self, handler, boot_id, version, firmware_id, protocol=wire.PROTOCOL_VERSION):
        self.handler = handler
        self.boot_id = boot_id
        self.version = version
        self.firmware_id = firmware_id
        self.protocol = protocol
        self.deframer = wire.Deframer()
        self.heartbeat_ms = 1500
        self.nonce = None
        self.alive = False
        self.last_host_ms = 0
        self.rx_expected = 0
        self.last_ack = None
        self.tx_seq = 0
        self.tx_sent_ms = None
        self.events = []
        self.evno = 0
        self.dropped_events = 0
        self.report_dropped = False
        self.out = bytearray()

    def queue_event(self, name, value=0, ref=0):
        """Queue an event for reliable delivery; the oldest not in flight goes when full."""
        self.evno = (self.evno + 1) & 0xFFFF
        self.events.append(messages.encode_event(name, self.evno, value, ref))
        if len(self.events) > EVENT_QUEUE_MAX:
            # Never drop the frame in flight: its seq would be reused for another event.
            del self.events[1 if self.tx_sent_ms is not None else 0]
            # Saturates: the count goes out as a u32, and struct raises beyond it.
            self.dropped_events = min(self.dropped_events + 1, 0xFFFFFFFF)
            self.report_dropped = True

    def receive(self, data, now_ms):
        """Handle bytes from the host; answers collect in ``self.out``."""
        errors = self.deframer.errors
        for kind, seq, payload in self.deframer.feed(data):
            self._on_frame(kind, seq, payload, now_ms)
        if self.alive and self.deframer.errors != errors:
            # Something was lost: tell the host which seq we still expect.
            self._send(wire.NAK, self.rx_expected)

    def poll(self, now_ms):
        """Watch the heartbeat and (re)send the oldest unacked event."""
        if self.alive and now_ms - self.last_host_ms > self.heartbeat_ms:
            self.alive = False
            self.tx_sent_ms = None
            self.handler.on_session_lost(now_ms)
        if self.report_dropped and len(self.events) < EVENT_QUEUE_MAX:
            self.report_dropped = False
            self.queue_event("fault", messages.FAULT_EVENTS_DROPPED, self.dropped_events)
        if not self.alive or not self.events:
            return
        if self.tx_sent_ms is None or now_ms - self.tx_sent_ms >= EVENT_RETRANSMIT_MS:
            self._send(wire.DATA, self.tx_seq, self.events[0])
            self.tx_sent_ms = now_ms

    def take_output(self):
        out = self.out
        self.out = bytearray()
        return out

    def _send(self, kind, seq, payload=b""):
        self.out.extend(wire.encode_frame(kind, seq, payload))

    def _on_frame(self, kind, seq, payload, now_ms):
        if kind == wire.HELLO:
            self._on_hello(payload, now_ms)
        elif kind == wire.PING:
            self._on_ping(payload, now_ms)
        elif kind == wire.DATA:
            self._on_data(seq, payload, now_ms)
        elif self.alive and kind == wire.ACK:
            self.last_host_ms = now_ms
            if self.tx_sent_ms is not None and seq == self.tx_seq and self.events:
                self.events.pop(0)
                self.tx_seq = wire.seq_next(self.tx_seq)
                self.tx_sent_ms = None
        elif self.alive and kind == wire.NAK:
            self.last_host_ms = now_ms
            if self.tx_sent_ms is not None and seq == self.tx_seq:
                self.tx_sent_ms = now_ms - EVENT_RETRANSMIT_MS

    def _on_hello(self, payload, now_ms):
        hello = messages.decode_hello(payload)
        if hello is None:
            return
        protocol, nonce = hello
        reply = messages.encode_hello_reply(
            self.protocol, nonce, self.boot_id, self.version, self.firmware_id
        )
        if protocol == self.protocol:
            if not (self.alive and nonce == self.nonce):
                # A repeated HELLO of the live session only gets its reply again.
                self.nonce = nonce
                self.alive = True
                self.rx_expected = 0
                self.last_ack = None
                self.tx_seq = 0
                self.tx_sent_ms = None
                self.handler.on_session_start(now_ms)
            # Only a HELLO we accept is host liveness: a refused one must not hold an unlock.
            self.last_host_ms = now_ms
        self._send(wire.HELLO_REPLY, 0, reply)

    def _on_ping(self, payload, now_ms):
        if len(payload) != 2:
            return
        if self.alive:
            self.last_host_ms = now_ms
        self._send(wire.PONG, 0, payload + (b"\x01" if self.alive else b"\x00"))

    def _on_data(self, seq, payload, now_ms):
        if not self.alive:
            refused = messages.encode_reply(messages.RSP_REFUSED, ">B", messages.REFUSED_NO_SESSION)
            self._send(wire.ACK, seq, refused)
            return
        self.last_host_ms = now_ms
        if seq == self.rx_expected:
            reply = self.handler.handle_command(payload, now_ms)
            self.last_ack = wire.encode_frame(wire.ACK, seq, reply)
            self.rx_expected = wire.seq_next(seq)
            self.out.extend(self.last_ack)
        elif seq == wire.seq_prev(self.rx_expected) and self.last_ack is not None:
            self.out.extend(self.last_ack)  # a retransmit: answer again, never run again
        else:
            self._send(wire.NAK, self.rx_expected)
