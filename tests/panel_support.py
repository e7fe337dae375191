"""Shared pieces of the panel tests: a stand-in runtime, app builders and a login helper.

The stand-in follows gate.runtime.GateRuntime's interface (and, like it,
writes the audit row of each override itself); browser tests use the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx2
import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gate.assembly import panel_server
from gate.camera.verdict import FrameAnalysis
from gate.config import ServerSettings, Settings, load_settings
from gate.errors import GateError
from gate.events import EventBus
from gate.server.app import create_app
from gate.server.users import audit, create_user
from gate.store.db import open_database, session
from gate.store.models import Gate, Role

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')


class FakeRuntime:
    """Records what the panel asks for; publishes on a real EventBus."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.bus = EventBus()
        self.calls: list[tuple[str, str, Any, str]] = []
        self.watchers = 0
        self.frame: np.ndarray | None = np.zeros((48, 64, 3), dtype=np.uint8)
        self.analysis: FrameAnalysis | None = None  # what the camera saw in `frame`
        self.refuse: GateError | None = None  # set to make overrides raise it
        self.state: dict[str, Any] = {
            "gate_id": settings.gate_id,
            "state": "idle",
            "mode": "normal",
            "prompt": "idle",
            "occupancy": 3,
            "capacity": 40,
            "camera": {"healthy": True, "fps": 14.8},
            "station": {"link": "up", "fluid_percent": 72, "door_open": False},
        }

    def snapshot(self) -> dict[str, Any]:
        return dict(self.state)

    async def _act(self, action: str, actor: str, value: Any, reason: str) -> None:
        if self.refuse:
            raise self.refuse
        self.calls.append((action, actor, value, reason))
        audit(self.engine, actor, action, reason, "" if value is None else str(value))
        self.bus.publish("override", {"actor": actor, "action": action, "reason": reason})

    async def override_unlock(self, actor: str, reason: str) -> None:
        await self._act("override_unlock", actor, None, reason)

    async def set_lockdown(self, actor: str, on: bool, reason: str) -> None:
        await self._act("lockdown", actor, on, reason)

    async def set_emergency(self, actor: str, on: bool, reason: str) -> None:
        await self._act("emergency", actor, on, reason)

    async def reset_occupancy(self, actor: str, reason: str) -> None:
        await self._act("reset_occupancy", actor, None, reason)

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        self.watchers += 1
        try:
            yield
        finally:
            self.watchers -= 1

    def latest_frame(self) -> np.ndarray | None:
        return self.frame if self.watchers else None

    def sight(self) -> tuple[np.ndarray, FrameAnalysis] | None:
        if self.frame is None or self.analysis is None:
            return None
        return self.frame, self.analysis

    async def stopping(self) -> None:
        """Never: these tests stop the server, not a runtime."""
        await asyncio.Event().wait()


def make_runtime(tmp_path: Path, database_url: str | None = None, **server: Any) -> FakeRuntime:
    settings = load_settings(
        data_dir=tmp_path,
        database_url=database_url,
        server={"kiosk_addresses": ["127.0.0.1"], **server},
    )
    engine = open_database(settings.effective_database_url)
    with session(engine) as db:
        if db.get(Gate, settings.gate_id) is None:
            db.add(Gate(id=settings.gate_id))
            db.commit()
    return FakeRuntime(settings, engine)


def make_app(
    tmp_path: Path, database_url: str | None = None, **server: Any
) -> tuple[FastAPI, FakeRuntime]:
    """A panel over a fresh database (SQLite in tmp_path unless ``database_url`` names
    another), with one user per role."""
    runtime = make_runtime(tmp_path, database_url, **server)
    add_users(runtime.engine)
    return create_app(runtime), runtime


def add_users(engine: Engine) -> None:
    """One account per role, named after the role."""
    for role in Role:
        create_user(engine, role.value, role, PASSWORD)


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page carries no CSRF token"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/login").text)


def client_for(app: FastAPI, role: str | None = None, host: str = "10.0.0.5") -> TestClient:
    client = TestClient(app, client=(host, 50000))
    if role is not None:
        client.headers["x-csrf-token"] = login(client, role)
    return client


class LiveServer:
    """The app under the gate's own uvicorn set-up (its server settings, a free port) in a
    thread, with its event loop reachable."""

    def __init__(self, app: Any, server: ServerSettings | None = None) -> None:
        self.port = free_port()
        server = server or app.state.panel.settings.server
        settings = server.model_copy(update={"port": self.port})
        self.server = panel_server(app, settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def call(self, function: Any, *args: Any) -> None:
        """Run a plain function on the server's loop (the bus is not thread-safe)."""
        self.loop.call_soon_threadsafe(function, *args)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_clip(path: Path, frames: int = 20) -> Path:
    """A short MJPG video (frames of changing grey) for camera sources to read."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (160, 120))
    for i in range(frames):
        writer.write(np.full((120, 160, 3), i * 10 % 255, np.uint8))
    writer.release()
    return path


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        """No line per request in the test output."""


@contextlib.contextmanager
def serve_files(folder: Path, port: int) -> Iterator[None]:
    """An HTTP server for ``folder`` on 127.0.0.1:``port``: a network camera coming up."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            thread.join(5)


def start_demo(data: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`gate demo` serving on ``port``, once it answers; its environment for `gate`
    commands holds the panel's url and the one-time admin password too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env |= {"GATE_DATA_DIR": str(data), "GATE_SERVER__PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gate", "demo"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    admin_password = ""
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.search(r"one-time admin login: admin / (\S+)", line):
            admin_password = match.group(1)
            break
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            time.sleep(0.1)
    return process, env | {"url": url, "admin": admin_password}
