"""The station without a board: the unchanged firmware logic behind a pseudo-terminal.

A background thread owns the pty master and a simulated world (hands, fluid,
door, exit button, fire input, tamper switch). The host opens the pty slave with
pyserial exactly as it would open /dev/ttyACM0, so the host driver under test is
the real one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from firmware_bridge import wire
from firmware_bridge.firmware import FIRMWARE_ID, FIRMWARE_VERSION, Firmware

log = logging.getLogger(__name__)

POLL_SECONDS = 0.005
EXIT_PRESS_MS = 200
AUTO_DOOR_OPEN_MS = 300
AUTO_DOOR_CLOSE_MS = 1500


class World:
    """Physics of the entrance. Test code changes it from any thread; the emulator steps it."""

    def __init__(
        self,
        auto_door: bool = True,
        tank_ml: float = 500.0,
        pump_ml_per_second: float = 2.0,
        fluid_ml: float | None = None,
    ) -> None:
        self.auto_door = auto_door
        self.tank_ml = tank_ml
        self.pump_ml_per_second = pump_ml_per_second
        self.fluid_ml = tank_ml if fluid_ml is None else fluid_ml
        self.relay_unlocked = False
        self.pump_running = False
        self.dry_run_ms = 0  # pump time with an empty tank: must stay 0
        self.door_open = False
        self._hands = False
        self._fire = False
        self._tamper = False
        self._exit_until = -1
        self._door_plan: list[tuple[int, bool]] = []
        self._now_ms = 0
        self._lock = threading.Lock()

    # -- what a person (or a test) does -----------------------------------

    def hands(self, present: bool) -> None:
        self._hands = present

    def refill(self, ml: float | None = None) -> None:
        """Fill the tank to ``ml`` (default: full)."""
        with self._lock:
            self.fluid_ml = self.tank_ml if ml is None else min(ml, self.tank_ml)

    def open_door(self) -> None:
        self.door_open = True

    def close_door(self) -> None:
        self.door_open = False

    def press_exit(self) -> None:
        self._exit_until = self._now_ms + EXIT_PRESS_MS

    def fire(self, on: bool) -> None:
        self._fire = on

    def tamper(self, active: bool = True) -> None:
        self._tamper = active

    @property
    def fluid_percent(self) -> int:
        return max(0, min(100, int(self.fluid_ml * 100 / self.tank_ml)))

    def describe(self) -> str:
        """One line: what a guard standing at the door would see."""
        return (
            f"relay={'unlocked' if self.relay_unlocked else 'locked'} "
            f"pump={'on' if self.pump_running else 'off'} fluid={self.fluid_percent}% "
            f"door={'open' if self.door_open else 'closed'} fire={_onoff(self._fire)} "
            f"tamper={_onoff(self._tamper)} hands={_onoff(self._hands)}"
        )

    # -- what the firmware's HAL sees --------------------------------------

    def inputs(self) -> tuple[bool, bool, bool, bool, bool]:
        exit_pressed = self._now_ms < self._exit_until
        return self._hands, self.door_open, exit_pressed, self._fire, self._tamper

    def set_relay(self, unlocked: bool) -> None:
        if unlocked and not self.relay_unlocked and self.auto_door:
            self._door_plan = [
                (self._now_ms + AUTO_DOOR_OPEN_MS, True),
                (self._now_ms + AUTO_DOOR_CLOSE_MS, False),
            ]
        self.relay_unlocked = unlocked

    def set_pump(self, on: bool) -> None:
        self.pump_running = on

    def step(self, now_ms: int) -> None:
        """Advance the world to ``now_ms``: drain the tank, move the simulated visitor."""
        with self._lock:
            elapsed = max(0, now_ms - self._now_ms)
            self._now_ms = now_ms
            if self.pump_running:
                if self.fluid_ml <= 0:
                    self.dry_run_ms += elapsed
                drained = self.pump_ml_per_second * elapsed / 1000
                self.fluid_ml = max(0.0, self.fluid_ml - drained)
            while self._door_plan and self._door_plan[0][0] <= now_ms:
                self.door_open = self._door_plan.pop(0)[1]


def _onoff(value: bool) -> str:
    return "on" if value else "off"


@dataclass(frozen=True)
class Actuation:
    """One actuation the firmware executed, stamped with wall-clock time."""

    time: float
    kind: str  # 'unlock', 'dispense' or 'lock' (an unlock cut short)
    ms: int
    ref: int


class EmulatedHal:
    """The HAL of hal.py, backed by the World and a byte queue instead of pins and USB."""

    def __init__(self, world: World, on_actuation) -> None:
        self.world = world
        self.rx = bytearray()
        self.tx = bytearray()
        self._on_actuation = on_actuation

    def boot_id(self) -> int:
        return int.from_bytes(os.urandom(4), "big")

    def read_serial(self) -> bytes:
        data = bytes(self.rx)
        self.rx.clear()
        return data

    def write_serial(self, data: bytes) -> None:
        self.tx.extend(data)

    def read_inputs(self) -> tuple[bool, bool, bool, bool, bool]:
        return self.world.inputs()

    def fluid_percent(self) -> int:
        return self.world.fluid_percent

    def set_relay(self, unlocked: bool) -> None:
        self.world.set_relay(unlocked)

    def set_pump(self, on: bool) -> None:
        self.world.set_pump(on)

    def actuation(self, kind: str, ms: int, ref: int) -> None:
        self._on_actuation(kind, ms, ref)

    def fail_safe(self) -> None:
        """As PicoHal.fail_safe: the outputs off straight away, whatever the firmware's state."""
        self.world.set_relay(False)
        self.world.set_pump(False)


class Emulator:
    """Firmware + world in a background thread, reachable through a pty like a real board."""

    def __init__(
        self,
        auto_door: bool = True,
        actuation_log: Path | None = None,
        *,
        tank_ml: float = 500.0,
        pump_ml_per_second: float = 2.0,
        fluid_ml: float | None = None,
        firmware_id: str = FIRMWARE_ID,
        version: tuple[int, int, int] = FIRMWARE_VERSION,
        protocol: int = wire.PROTOCOL_VERSION,
    ) -> None:
        self.world = World(auto_door, tank_ml, pump_ml_per_second, fluid_ml)
        self.actuations: list[Actuation] = []
        self._log_path = actuation_log
        self._log: IO[str] | None = None
        self.hal = EmulatedHal(self.world, self._record)
        self._identity = (firmware_id, version, protocol)
        self.firmware = Firmware(self.hal, *self._identity)
        self._t0 = time.monotonic()
        self._master: int | None = None
        self._slave: int | None = None
        self.path: str | None = None
        self.link: Path | None = None
        self._requests: list[tuple[str, bytes | float, threading.Event]] = []
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self.crash: str | None = None  # set when the firmware raised: the board is dead

    def start(self, link: Path | None = None) -> str:
        """Open the pty and start the firmware; return the path a host should open.

        With ``link``, a symlink at that path points to the pty (kept pointing at the
        new pty after ``replug``), so a host can be given one stable port name.
        """
        if self._log_path is not None:
            self._log = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115
        self.link = link
        self._open_pty()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="station-emulator", daemon=True)
        self._thread.start()
        return str(link) if link is not None else self.path

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_pty()
        if self._log is not None:
            self._log.close()
            self._log = None

    def unplug(self) -> None:
        """Pull the cable: the pty goes away and the host's port with it."""
        self._request("unplug")

    def replug(self) -> str:
        """Plug back in: a new pty, the symlink (if any) moved onto it. Returns the pty path."""
        self._request("replug")
        assert self.path is not None
        return self.path

    def reboot(self) -> None:
        """Power-cycle the board: outputs off, then the firmware starts afresh with a
        new boot id and waits for a host's HELLO, as after a brown-out or a watchdog."""
        self._request("reboot")

    def inject(self, noise: bytes) -> None:
        """Send raw bytes to the host as if the line picked up noise."""
        self._request("inject", noise)

    def stall(self, seconds: float) -> None:
        """Freeze the MCU for a while (bytes wait in the pty), as a busy or glitching board."""
        self._request("stall", float(seconds))

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the background thread ------------------------------------------------

    def _request(self, what: str, arg: bytes | float = b"") -> None:
        """Have the emulator thread do ``what``, so the pty is only ever touched there."""
        done = threading.Event()
        with self._lock:
            self._requests.append((what, arg, done))
        if not done.wait(timeout=5):
            raise TimeoutError(f"emulator did not {what} in time")

    def _run(self) -> None:
        while self._running:
            master = self._master
            if master is None:
                time.sleep(POLL_SECONDS)
            else:
                try:
                    readable, _, _ = select.select([master], [], [], POLL_SECONDS)
                except (OSError, ValueError):
                    readable = []
                if readable:
                    self.hal.rx.extend(self._read_master())
            self._serve_requests()
            now_ms = int((time.monotonic() - self._t0) * 1000)
            self.world.step(now_ms)
            try:
                self.firmware.poll(now_ms)
            except BaseException as exc:
                self._crashed(exc)
                return
            self._write_master(bytes(self.hal.tx))
            self.hal.tx.clear()

    def _crashed(self, exc: BaseException) -> None:
        """What main.py does on the board: relay locked and pump off first, then go silent.

        The thread ends, so the pty stays open but nothing answers, as a board waiting
        for its watchdog; the host sees a dead station, not a live one that forgot.
        """
        self.hal.fail_safe()
        self.crash = f"{type(exc).__name__}: {exc}"
        log.error(
            "station emulator: firmware crashed (%s); relay locked, pump off, not answering",
            self.crash,
        )

    def _serve_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for what, arg, done in requests:
            if what == "unplug":
                self._close_pty()
            elif what == "replug":
                self._close_pty()
                self._open_pty()
            elif what == "reboot":
                self.hal.fail_safe()
                self.hal.rx.clear()
                self.hal.tx.clear()
                self.firmware = Firmware(self.hal, *self._identity)
            elif isinstance(arg, float):  # "stall": the caller need not wait it out
                done.set()
                time.sleep(arg)
            else:  # "inject"
                self._write_master(arg)
            done.set()

    def _read_master(self) -> bytes:
        try:
            return os.read(self._master, 4096) if self._master is not None else b""
        except OSError:  # EIO while no host holds the port, EAGAIN: nothing to read
            return b""

    def _write_master(self, data: bytes) -> None:
        """Write what fits; like a UART with nobody listening, the rest is lost."""
        if not data or self._master is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._master, data)

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        if self.link is not None:
            temporary = self.link.with_name(self.link.name + ".new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self.path)
            temporary.replace(self.link)

    def _close_pty(self) -> None:
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def _record(self, kind: str, ms: int, ref: int) -> None:
        entry = Actuation(time.time(), kind, ms, ref)
        self.actuations.append(entry)
        if self._log is not None:
            self._log.write(json.dumps({"t": entry.time, "kind": kind, "ms": ms, "ref": ref}))
            self._log.write("\n")
            self._log.flush()
