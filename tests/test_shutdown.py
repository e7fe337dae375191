"""Stopping the real gate while browsers hold its endless streams open.

A guard's live page (events and video) and the kiosk never close their
responses; systemd's stop (SIGTERM) must still end the gate within seconds,
or every stop would wait for SIGKILL.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.panel_support import csrf_of, free_port, start_demo

STREAMS = ("/live/events", "/live/stream.mjpg", "/kiosk/events")
STOP_SECONDS = 10  # the runtime's own stop (station, camera, vision) takes a few


def hold(client: httpx2.Client, path: str, opened: threading.Event, ended: list[str]) -> None:
    """Read ``path`` as a browser does, until the server ends it."""
    with client.stream("GET", path) as response:
        assert response.status_code == 200, path
        for _chunk in response.iter_bytes():
            opened.set()
    ended.append(path)


@pytest.mark.slow
def test_sigterm_stops_the_gate_while_live_and_kiosk_streams_are_open(data_dir: Path) -> None:
    process, env = start_demo(data_dir, free_port())
    try:
        client = httpx2.Client(base_url=env["url"], timeout=STOP_SECONDS * 6)
        token = csrf_of(client.get("/login").text)
        client.post(
            "/login", data={"username": "admin", "password": env["admin"], "csrf_token": token}
        )
        ended: list[str] = []
        readers = []
        for path in STREAMS:
            opened = threading.Event()
            reader = threading.Thread(target=hold, args=(client, path, opened, ended), daemon=True)
            reader.start()
            assert opened.wait(30), f"{path} sent nothing"
            readers.append(reader)

        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(STOP_SECONDS * 6)
        took = time.monotonic() - stopped_at
        for reader in readers:
            reader.join(5)
        assert returncode == 0, process.stderr.read() if process.stderr else ""
        assert took < STOP_SECONDS, f"the gate took {took:.1f} s to stop"
        assert sorted(ended) == sorted(STREAMS)  # each ended, none was cut off by a timeout
    finally:
        process.kill()
        process.wait(10)
