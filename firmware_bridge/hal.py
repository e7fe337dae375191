"""Hardware layer for the Raspberry Pi Pico (RP2040): the only file that touches ``machine``.

The firmware logic calls exactly these methods, so the emulator (emulator.py) and
the tests provide the same set on the host:

    read_serial() -> bytes          write_serial(data)
    read_inputs() -> (hands, door_open, exit_button, fire, tamper)   all bool
    fluid_percent() -> int 0..100   set_relay(unlocked)   set_pump(on)
    actuation(kind, ms, ref)        boot_id() -> int (u32, new each boot)

Pin map and wiring notes are in README.md. Inputs are wired so that a cut wire
reads as the safe state: the fire loop and the tamper loop are normally closed
(a break means alarm), the door contact reads open.
"""

# GPIO numbers (see README.md).
PIN_HANDS = 2  # IR proximity sensor, output pulls low when a hand is near
PIN_DOOR = 3  # reed contact to GND, closed while the door is shut
PIN_EXIT = 4  # request-to-exit button to GND
PIN_FIRE = 5  # fire panel relay, normally closed loop to GND
PIN_TAMPER = 6  # enclosure switch, normally closed loop to GND
PIN_RELAY = 15  # strike relay driver, high = unlocked (fail-secure strike)
PIN_PUMP = 16  # pump MOSFET gate, high = pumping
PIN_FLUID_ADC = 26  # ADC0, level sensor 0..3.3 V

# ADC readings (read_u16) for an empty and a full tank; calibrate per sensor.
FLUID_RAW_EMPTY = 6000
FLUID_RAW_FULL = 52000
ACTUATION_LOG_SIZE = 64
WATCHDOG_MS = 2000


class PicoHal:
    """Pins, USB serial and a RAM ring of recent actuations on a Pico running MicroPython."""

    def __init__(self):
        import select
        import sys
        import time

        import machine
        import micropython

        self._machine = machine
        self._time = time
        pull_up = machine.Pin.PULL_UP
        self._hands = machine.Pin(PIN_HANDS, machine.Pin.IN, pull_up)
        self._door = machine.Pin(PIN_DOOR, machine.Pin.IN, pull_up)
        self._exit = machine.Pin(PIN_EXIT, machine.Pin.IN, pull_up)
        self._fire = machine.Pin(PIN_FIRE, machine.Pin.IN, pull_up)
        self._tamper = machine.Pin(PIN_TAMPER, machine.Pin.IN, pull_up)
        self._relay = machine.Pin(PIN_RELAY, machine.Pin.OUT, value=0)
        self._pump = machine.Pin(PIN_PUMP, machine.Pin.OUT, value=0)
        self._adc = machine.ADC(PIN_FLUID_ADC)
        self._stdin = sys.stdin.buffer
        self._stdout = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._micropython = micropython
        self._wdt = None
        self.actuations = []

    def safe_mode_requested(self):
        """Exit button held at power-up: stay in the REPL so the board can be reflashed."""
        return self._exit.value() == 0

    def start(self):
        """Take over USB serial (Ctrl-C is a data byte from now on) and arm the watchdog."""
        self._micropython.kbd_intr(-1)
        self._wdt = self._machine.WDT(timeout=WATCHDOG_MS)

    def idle(self):
        self._wdt.feed()
        self._time.sleep_ms(1)

    def fail_safe(self):
        """Relay locked, pump off, straight at the pins: the firmware's state may be broken."""
        self._relay.value(0)
        self._pump.value(0)

    def halt(self):
        """Never return and never feed the watchdog: it resets the board within WATCHDOG_MS.

        Waiting here rather than returning keeps the REPL off the serial line, where
        the host's frames would be read as keystrokes until the reset.
        """
        while True:
            self._time.sleep_ms(100)

    def boot_id(self):
        import random

        return random.getrandbits(32)

    def read_serial(self):
        data = bytearray()
        while len(data) < 256 and self._poll.poll(0):
            data.extend(self._stdin.read(1))
        return data

    def write_serial(self, data):
        self._stdout.write(data)

    def read_inputs(self):
        return (
            self._hands.value() == 0,
            self._door.value() == 1,
            self._exit.value() == 0,
            self._fire.value() == 1,
            self._tamper.value() == 1,
        )

    def fluid_percent(self):
        raw = self._adc.read_u16()
        pct = (raw - FLUID_RAW_EMPTY) * 100 // (FLUID_RAW_FULL - FLUID_RAW_EMPTY)
        return max(0, min(100, pct))

    def set_relay(self, unlocked):
        self._relay.value(1 if unlocked else 0)

    def set_pump(self, on):
        self._pump.value(1 if on else 0)

    def actuation(self, kind, ms, ref):
        self.actuations.append((self._time.ticks_ms(), kind, ms, ref))
        if len(self.actuations) > ACTUATION_LOG_SIZE:
            self.actuations.pop(0)
