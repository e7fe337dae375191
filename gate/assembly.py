"""Building a whole gate from settings: database, camera, vision, station, runtime.

Everything that can fail for a user reason (config, database, camera, model
files) is checked here before anything starts, so `gate run` fails fast with
one line instead of half-starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.emulator import Emulator
from gate.camera.pipeline import Vision
from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.sources import FrameSource, open_source
from gate.config import ServerSettings, Settings, check_data_dir
from gate.errors import GateError
from gate.runtime import GateRuntime
from gate.sanitizer.station import Station
from gate.store.db import open_database

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

GRACEFUL_SHUTDOWN_SECONDS = 5  # well inside systemd's stop timeout (90 s)


def check_no_ghosts_at_the_door(settings: Settings) -> None:
    """Refuse the simulated camera with a real serial line: its scripted visitors would
    open a real door, over and over. The camera's default is the simulated one, so a
    config that names the door's port but forgets the camera would do just that.
    Pseudo-terminals stay allowed: they lead to an emulator, never to a relay."""
    port = settings.station.port
    if settings.camera.source != "simulated" or port == "emulated":
        return
    if not os.path.realpath(port).startswith("/dev/pts/"):
        raise GateError(
            f"camera.source is 'simulated' but station.port is {port}: simulated visitors "
            "would open a real door; set camera.source to the gate's camera, or "
            "station.port to 'emulated'"
        )


@dataclass
class Gate:
    """A running gate's parts; `emulator` is set when the station is emulated."""

    runtime: GateRuntime
    source: FrameSource
    emulator: Emulator | None


def panel_server(app: FastAPI, settings: ServerSettings) -> uvicorn.Server:
    """The HTTP server for the panel and kiosk. Its graceful shutdown is bounded: the
    endless streams end when the runtime stops, and anything else still running then
    (an export, a stuck client) must not keep a stopping gate alive."""
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            # No logging set-up of uvicorn's own: its error log goes where the gate's
            # goes (gate.log), not to stderr alone.
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # Behind a trusted proxy the login rate limit and the audit see the visitor.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=[str(network) for network in settings.trusted_proxies],
        )
    )


def claim_panel_address(settings: ServerSettings) -> socket.socket:
    """Bind the panel's address before anything else starts: a port in use is then one
    line at once, not uvicorn's log and exit after the models have loaded."""
    try:
        family = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        return socket.create_server((settings.host, settings.port), family=family)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise GateError(
            f"cannot serve the panel on {settings.host}:{settings.port}: {reason}"
        ) from None


def panel_url(settings: ServerSettings, listening: socket.socket) -> str:
    return f"http://{settings.host}:{listening.getsockname()[1]}/"


async def serve_panel(runtime: GateRuntime, listening: socket.socket) -> None:
    """Serve the staff panel and kiosk until the runtime stops, then shut down gracefully."""
    from gate.server.app import create_app

    server = panel_server(create_app(runtime), runtime.settings.server)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    stopping = asyncio.create_task(runtime.stopping())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True  # finish open responses (for a bounded time) and the lifespan
    stopping.cancel()
    await serving


@contextlib.asynccontextmanager
async def assemble(
    settings: Settings,
    *,
    visitors: Sequence[SimVisitor] = (),
    loop_visitors: bool = True,
    source: FrameSource | None = None,
    clock: Callable[[], float] | None = None,
    realtime: bool = True,
    actuation_log: Path | None = None,
    auto_door: bool = True,
) -> AsyncIterator[Gate]:
    """Open everything the settings describe; stop the emulator on the way out."""
    check_data_dir(settings.data_dir)
    check_no_ghosts_at_the_door(settings)
    engine = open_database(settings.effective_database_url)
    extra = {"clock": clock} if clock else {}
    if source is not None:
        pass
    elif settings.camera.source == "simulated":
        if not visitors:
            from gate.demo import DEMO_VISITORS

            visitors = [v.visitor for v in DEMO_VISITORS]
        source = SimulatedCamera(
            visitors,
            fps=settings.camera.fps,
            size=(settings.camera.width, settings.camera.height),
            loop=loop_visitors,
            **extra,
        )
    else:
        source = open_source(settings.camera)
    vision = Vision(settings.camera, settings.data_dir)
    emulator = None
    port = settings.station.port
    if port == "emulated":
        emulator = Emulator(auto_door=auto_door, actuation_log=actuation_log)
        port = emulator.start()
    try:
        station = Station(port, settings.station)
        runtime = GateRuntime(settings, engine, source, vision, station, realtime=realtime, **extra)
        yield Gate(runtime, source, emulator)
    finally:
        if emulator is not None:
            emulator.stop()
        engine.dispose()
