"""``gate station …``: run the station emulator and drive its simulated world from stdin."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from firmware_bridge.emulator import Emulator
from gate.errors import GateError

station_app = typer.Typer(
    help="The dispenser/door station: emulate it on this machine.", no_args_is_help=True
)


def _world_commands(emulator: Emulator) -> dict[str, Callable[[], object]]:
    world = emulator.world
    return {
        "hands on": lambda: world.hands(True),
        "hands off": lambda: world.hands(False),
        "refill": world.refill,
        "empty": lambda: world.refill(0),
        "door open": world.open_door,
        "door close": world.close_door,
        "exit": world.press_exit,
        "fire on": lambda: world.fire(True),
        "fire off": lambda: world.fire(False),
        "tamper": world.tamper,
        "unplug": emulator.unplug,
        "plug": emulator.replug,
        "reboot": emulator.reboot,
    }


def answer(line: str, emulator: Emulator) -> str:
    """The one-line answer to one stdin command (``quit`` is handled by the caller)."""
    world = emulator.world
    command = " ".join(line.split()).lower()
    if command == "status":
        if emulator.crash is not None:
            return f"{world.describe()} firmware=crashed ({emulator.crash})"
        host = "connected" if emulator.firmware.link.alive else "none"
        return f"{world.describe()} host={host}"
    action = _world_commands(emulator).get(command)
    if action is None:
        known = ", ".join([*_world_commands(emulator), "status", "quit"])
        return f"error: unknown command '{command}' (known: {known})"
    action()
    return f"ok {command}"


@station_app.callback()
def _station() -> None:
    """The dispenser/door station: emulate it on this machine."""


@station_app.command()
def emulate(
    link: Annotated[
        Path | None, typer.Option(help="Also make this path a symlink to the pty (stable name).")
    ] = None,
    actuation_log: Annotated[
        Path | None, typer.Option(help="Append each executed actuation here as a JSON line.")
    ] = None,
    auto_door: Annotated[
        bool, typer.Option(help="After an unlock a simulated visitor opens and closes the door.")
    ] = True,
) -> None:
    """Run the station firmware behind a pty and print the port to open.

    Then reads world commands on stdin, one per line, answering each with one line:
    hands on|off, refill, empty, door open|close, exit, fire on|off, tamper, unplug, plug,
    reboot, status, quit.
    """
    emulator = Emulator(auto_door=auto_door, actuation_log=actuation_log)
    try:
        port = emulator.start(link=link)
    except OSError as exc:  # the link's or the log's folder is missing or not writable
        emulator.stop()
        raise GateError(
            f"cannot start the emulator: {exc.strerror}: {exc.filename2 or exc.filename}"
        ) from None
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    reader = threading.Thread(target=_read_commands, args=(emulator, stop), daemon=True)
    reader.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


def _read_commands(emulator: Emulator, stop: threading.Event) -> None:
    """Answer stdin lines until ``quit``; at end of input keep emulating until a signal."""
    for line in sys.stdin:
        if not line.strip():
            continue
        if line.strip().lower() == "quit":
            print("ok quit", flush=True)
            stop.set()
            return
        print(answer(line, emulator), flush=True)
