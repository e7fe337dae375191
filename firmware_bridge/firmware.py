"""Station firmware logic: dispenser and door, defending itself against a bad or dead host.

MicroPython subset. Never touches ``machine``: all I/O goes through a HAL object
(see hal.py) and time comes in as ``poll(now_ms)``, so the same class runs on the
Pico, in the host emulator and in tests with a hand-driven clock.

Rules it keeps whatever the host says:
- every actuation has its own duration, capped by UNLOCK_MAX_MS / DISPENSE_MAX_MS;
- no host frame for ``heartbeat_ms``: relock, stop the pump, refuse until a new HELLO;
- the fire input unlocks; when it clears the relay follows the host unlock, if any;
- the pump never runs at or below the empty level.
"""

try:
    from firmware_bridge import messages as m
    from firmware_bridge import wire
    from firmware_bridge.mcu_link import McuLink
except ImportError:  # on the board the files sit flat in the root folder
    import messages as m
    import wire
    from mcu_link import McuLink

FIRMWARE_ID = "entry-gate-station"
FIRMWARE_VERSION = (1, 0, 0)

# Hard limits: configure() may lower them, never raise them.
UNLOCK_MAX_MS = 30000
DISPENSE_MAX_MS = 3000
HEARTBEAT_MAX_MS = 1500
HEARTBEAT_MIN_MS = 200
HELD_OPEN_MAX_MS = 600000
HELD_OPEN_MIN_MS = 1000

FLUID_EMPTY_PCT = 2  # at or below: the pump must not run (keeps it off air)
FLUID_STEP_PCT = 5  # report the level when it moved this much
DEBOUNCE_MS = 20
EXIT_WINDOW_MS = 10000  # after an exit request the door may open without alarm
U32_MAX = 0xFFFFFFFF


class Debounced:
    """A digital input that changes only after it has read the same for DEBOUNCE_MS."""

    def __init__(self, value):
        self.value = value
        self._raw = value
        self._since = 0

    def update(self, raw, now_ms):
        """Return True when the stable value changed."""
        raw = bool(raw)
        if raw != self._raw:
            self._raw = raw
            self._since = now_ms
        if raw != self.value and now_ms - self._since >= DEBOUNCE_MS:
            self.value = raw
            return True
        return False


class Firmware:
    def __init__(
        self,
        hal,
        firmware_id=FIRMWARE_ID,
        version=FIRMWARE_VERSION,
        protocol=wire.PROTOCOL_VERSION,
    ):
        self.hal = hal
        self.link = McuLink(self, hal.boot_id(), version, firmware_id, protocol)
        self.unlock_max_ms = UNLOCK_MAX_MS
        self.dispense_max_ms = DISPENSE_MAX_MS
        self.held_open_ms = 30000
        self.fluid_low_pct = 15
        hands, door_open, exit_button, fire, tamper = hal.read_inputs()
        self.hands = Debounced(hands)
        self.door = Debounced(door_open)
        self.exit_button = Debounced(exit_button)
        self.fire = Debounced(fire)
        self.tamper = Debounced(tamper)
        self.fluid = hal.fluid_percent()
        self.fluid_reported = self.fluid
        self.unlock_until = None
        self.unlock_ref = 0
        self.pump_until = None
        self.pump_started = 0
        self.pump_ref = 0
        self.exit_until = None
        self.door_ref = 0
        self.door_since = 0
        self.door_held_sent = False
        self.relay = False
        self.pump = False
        hal.set_relay(False)
        hal.set_pump(False)
        self.link.queue_event("boot")
        if fire:
            self.link.queue_event("fire_on")
        if tamper:
            self.link.queue_event("tamper")
        self._fluid_events(self.fluid, True)

    # -- the main loop ------------------------------------------------------

    def poll(self, now_ms):
        """Run one pass: inputs, timers, outputs, then serial in and out.

        The state is brought up to ``now_ms`` before any command runs, so a command
        never sees an actuation that has already ended (a status just as an unlock
        ended once computed a negative time left, and a lock logged an ended unlock).
        """
        self._inputs(now_ms)
        self._timers(now_ms)
        self._outputs()
        self.link.receive(self.hal.read_serial(), now_ms)
        self.link.poll(now_ms)
        out = self.link.take_output()
        if out:
            self.hal.write_serial(out)

    def _inputs(self, now_ms):
        hands, door_open, exit_button, fire, tamper = self.hal.read_inputs()
        if self.hands.update(hands, now_ms):
            self.link.queue_event("hands_present" if self.hands.value else "hands_absent")
        if self.exit_button.update(exit_button, now_ms) and self.exit_button.value:
            self.exit_until = now_ms + EXIT_WINDOW_MS
            self.link.queue_event("exit_request")
        if self.fire.update(fire, now_ms):
            self.link.queue_event("fire_on" if self.fire.value else "fire_off")
        if self.tamper.update(tamper, now_ms) and self.tamper.value:
            self.link.queue_event("tamper")
        if self.door.update(door_open, now_ms):
            self._door_changed(now_ms)
        fluid = self.hal.fluid_percent()
        if fluid != self.fluid:
            self._fluid_events(fluid, False)

    def _door_changed(self, now_ms):
        if self.door.value:
            self.door_ref = self.unlock_ref if self.unlock_until is not None else 0
            self.door_since = now_ms
            self.door_held_sent = False
            self.link.queue_event("door_opened", 0, self.door_ref)
            exit_ok = self.exit_until is not None and now_ms < self.exit_until
            if not (self.relay or exit_ok):
                self.link.queue_event("door_forced", 0, self.door_ref)
        else:
            self.link.queue_event("door_closed", _u32(now_ms - self.door_since), self.door_ref)

    def _fluid_events(self, fluid, at_boot):
        was = self.fluid
        self.fluid = fluid
        if fluid <= FLUID_EMPTY_PCT and (at_boot or was > FLUID_EMPTY_PCT):
            self.link.queue_event("fluid_empty", fluid)
        elif fluid <= self.fluid_low_pct and (at_boot or was > self.fluid_low_pct):
            self.link.queue_event("fluid_low", fluid)
        if not at_boot and abs(fluid - self.fluid_reported) >= FLUID_STEP_PCT:
            self.fluid_reported = fluid
            self.link.queue_event("fluid_level", fluid)

    def _timers(self, now_ms):
        if self.unlock_until is not None and now_ms >= self.unlock_until:
            self.unlock_until = None
        if self.pump_until is not None and (
            now_ms >= self.pump_until or self.fluid <= FLUID_EMPTY_PCT
        ):
            self._stop_pump(now_ms)
        if (
            self.door.value
            and not self.door_held_sent
            and now_ms - self.door_since >= self.held_open_ms
        ):
            self.door_held_sent = True
            self.link.queue_event("door_held", _u32(now_ms - self.door_since), self.door_ref)

    def _outputs(self):
        relay = self.fire.value or self.unlock_until is not None
        if relay != self.relay:
            self.relay = relay
            self.hal.set_relay(relay)
        pump = self.pump_until is not None and self.fluid > FLUID_EMPTY_PCT
        if pump != self.pump:
            self.pump = pump
            self.hal.set_pump(pump)

    def _stop_pump(self, now_ms):
        ran = min(now_ms - self.pump_started, self.pump_until - self.pump_started)
        self.pump_until = None
        self._outputs()
        self.link.queue_event("dispensed", ran, self.pump_ref)

    # -- called by the link ---------------------------------------------------

    def on_session_start(self, now_ms):
        self.fluid_reported = self.fluid
        self.link.queue_event("fluid_level", self.fluid)

    def on_session_lost(self, now_ms):
        """Fail secure: the host may be dead, so nothing it started keeps running."""
        if self.unlock_until is not None:
            self.unlock_until = None
            self.hal.actuation("lock", 0, self.unlock_ref)
        if self.pump_until is not None:
            self._stop_pump(now_ms)
        self._outputs()
        self.link.queue_event("fault", m.FAULT_HEARTBEAT_LOST)

    def handle_command(self, payload, now_ms):
        """Run one new command (the link guarantees: once) and return the reply payload."""
        command = m.decode_command(payload)
        if command is None:
            return _refused(m.REFUSED_UNKNOWN)
        cmd, args = command
        if cmd == m.CMD_STATUS:
            return self._status(now_ms)
        if cmd == m.CMD_UNLOCK:
            return self._unlock(args[0], args[1], now_ms)
        if cmd == m.CMD_LOCK:
            if self.unlock_until is not None:
                self.unlock_until = None
                self.hal.actuation("lock", 0, self.unlock_ref)
            self._outputs()
            return _ok(0)
        if cmd == m.CMD_DISPENSE:
            return self._dispense(args[0], args[1], now_ms)
        return self._configure(*args)

    def _unlock(self, ms, ref, now_ms):
        ms = min(ms, self.unlock_max_ms)
        if ms <= 0:
            return _refused(m.REFUSED_BAD_ARGS)
        self.unlock_until = now_ms + ms
        self.unlock_ref = ref
        self.hal.actuation("unlock", ms, ref)
        self._outputs()
        return _ok(ms)

    def _dispense(self, ms, ref, now_ms):
        ms = min(ms, self.dispense_max_ms)
        if ms <= 0:
            return _refused(m.REFUSED_BAD_ARGS)
        if self.fluid <= FLUID_EMPTY_PCT:
            return _refused(m.REFUSED_FLUID_EMPTY)
        if self.pump_until is not None:
            return _refused(m.REFUSED_BUSY)
        self.pump_until = now_ms + ms
        self.pump_started = now_ms
        self.pump_ref = ref
        self.hal.actuation("dispense", ms, ref)
        self._outputs()
        return _ok(ms)

    def _configure(self, unlock_max_ms, dispense_max_ms, held_open_ms, heartbeat_ms, low_pct):
        self.unlock_max_ms = max(1, min(unlock_max_ms, UNLOCK_MAX_MS))
        self.dispense_max_ms = max(1, min(dispense_max_ms, DISPENSE_MAX_MS))
        self.held_open_ms = max(HELD_OPEN_MIN_MS, min(held_open_ms, HELD_OPEN_MAX_MS))
        self.link.heartbeat_ms = max(HEARTBEAT_MIN_MS, min(heartbeat_ms, HEARTBEAT_MAX_MS))
        self.fluid_low_pct = max(FLUID_EMPTY_PCT + 1, min(low_pct, 100))
        return m.encode_reply(
            m.RSP_LIMITS,
            m.LIMITS_FMT,
            self.unlock_max_ms,
            self.dispense_max_ms,
            self.held_open_ms,
            self.link.heartbeat_ms,
            self.fluid_low_pct,
        )

    def _status(self, now_ms):
        flags = 0
        for bit, on in (
            (m.STATUS_RELAY, self.relay),
            (m.STATUS_PUMP, self.pump),
            (m.STATUS_DOOR_OPEN, self.door.value),
            (m.STATUS_FIRE, self.fire.value),
            (m.STATUS_TAMPER, self.tamper.value),
            (m.STATUS_HANDS, self.hands.value),
        ):
            if on:
                flags |= bit
        left = 0 if self.unlock_until is None else _u32(self.unlock_until - now_ms)
        return m.encode_reply(m.RSP_STATUS, m.STATUS_FMT, flags, self.fluid, self.unlock_ref, left)


def _u32(value):
    """A time or count clamped into its unsigned 32-bit field: struct raises on anything
    outside it, and an exception here would leave the loop with the relay as it was."""
    return max(0, min(value, U32_MAX))


def _ok(value):
    return m.encode_reply(m.RSP_OK, ">I", value)


def _refused(reason):
    return m.encode_reply(m.RSP_REFUSED, ">B", reason)
