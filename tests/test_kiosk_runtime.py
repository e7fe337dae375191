"""The kiosk's mirror over the real gate: simulated camera, real models, emulated station.

The picture is shown while a visitor is in view and withdrawn when they leave or the
camera stalls (an old picture of someone is never shown as live)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import httpx2
import numpy as np
import pytest

from gate.camera.simulated import SimulatedCamera
from gate.server.app import create_app
from tests.test_runtime import MASKED_FOREVER, NOBODY, gate_running, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def kiosk_client(app: object) -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=app, client=("127.0.0.1", 50000))  # type: ignore[arg-type]
    return httpx2.AsyncClient(transport=transport, base_url="http://gate")


async def test_the_mirror_shows_the_visitor_and_nothing_once_they_left(data_dir: Path) -> None:
    async with gate_running(data_dir, MASKED_FOREVER) as gate:
        runtime = gate.runtime
        async with kiosk_client(create_app(runtime)) as kiosk:
            await until(lambda: (s := runtime.sight()) is not None and bool(s[1].faces), 30)
            response = await kiosk.get("/kiosk/frame")
            assert response.status_code == 200
            (face,) = json.loads(response.headers["x-faces"])
            frame, analysis = runtime.sight() or (None, None)
            assert frame is not None and analysis is not None
            picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == frame.shape
            # Mirrored: the box's right edge on the screen is the face's left edge in the frame.
            x, _y, w, _h = analysis.faces[0].box
            assert face["x"] == pytest.approx(1 - (x + w) / frame.shape[1], abs=0.1)
            # The visitor walks away; the camera goes on showing the empty hall.
            hall = SimulatedCamera(NOBODY)
            gate.source.read = lambda: (time.monotonic(), hall.render(1.0))  # type: ignore[method-assign]
            await until(lambda: not (runtime.sight() or (None, analysis))[1].faces, 30)
            left = await kiosk.get("/kiosk/frame")
            assert left.status_code == 204 and left.content == b""


async def test_a_stalled_camera_withdraws_the_picture(data_dir: Path) -> None:
    async with gate_running(data_dir, MASKED_FOREVER) as gate:
        runtime = gate.runtime
        async with kiosk_client(create_app(runtime)) as kiosk:
            await until(lambda: (s := runtime.sight()) is not None and bool(s[1].faces), 30)
            assert (await kiosk.get("/kiosk/frame")).status_code == 200
            gate.source.read = lambda: None  # type: ignore[method-assign]
            await until(lambda: runtime.controller.mode.value == "degraded", 10)
            stalled = await kiosk.get("/kiosk/frame")
            assert stalled.status_code == 204 and stalled.content == b""
