"""Long-lived responses: server-sent events from the bus and the MJPEG live view.

SSE ids are the bus event ids, so a browser that reconnects (EventSource does
it by itself) sends Last-Event-ID and gets exactly what it missed from the
bus's replay buffer; if it was gone longer than the buffer reaches back, it is
told to ``resync`` (reload) instead of silently showing a gap.

Every endless response ends when the gate stops: an open tab must not keep a
stopping gate (systemd's stop, a runtime that failed) alive until it closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import cv2
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from gate import metrics
from gate.events import Event, EventBus

HEARTBEAT_SECONDS = 15.0
RETRY_MS = 2000
MJPEG_BOUNDARY = "frame"
MJPEG_KEEPALIVE_SECONDS = 2.0
JPEG_QUALITY = 75
# Every endless stream: never cached, and never held back by a buffering reverse proxy
# (nginx buffers a response unless told not to), or the guard's view lags the door.
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

Transform = Callable[[Event], dict[str, Any] | None]


async def until_stopping(
    stream: AsyncGenerator[bytes, None], stopping: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """``stream``'s chunks until ``stopping`` returns, then the end of the response.

    The clean-up is shielded: when the browser leaves, the server cancels this request
    again at every await, and an unshielded clean-up would close ``stream`` while its
    pending chunk still runs ("aclose(): asynchronous generator is already running",
    logged as a traceback for every closed tab).
    """
    stop = asyncio.ensure_future(stopping())
    try:
        while not stop.done():
            chunk = asyncio.ensure_future(anext(stream))
            try:
                await asyncio.wait([chunk, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the client left: the stream is never left running
                with anyio.CancelScope(shield=True):
                    chunk.cancel()
                    await asyncio.wait([chunk])
            if chunk.cancelled():
                return
            try:
                data = chunk.result()
            except StopAsyncIteration:
                return
            yield data
    finally:
        with anyio.CancelScope(shield=True):
            stop.cancel()
            await stream.aclose()


def endless_response(
    stream: AsyncGenerator[bytes, None], stopping: Callable[[], Awaitable[None]], media_type: str
) -> StreamingResponse:
    """A response that lasts while the client looks, or until the gate stops."""
    return StreamingResponse(
        until_stopping(stream, stopping), media_type=media_type, headers=STREAM_HEADERS
    )


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The header (sent by a reconnecting EventSource) wins over the page's ?after=."""
    for value in (header, query):
        if value is not None and value.isascii() and value.isdigit() and len(value) <= 18:
            return int(value)
    return None


def sse_message(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


async def sse_stream(
    bus: EventBus,
    after_id: int | None,
    transform: Transform,
    first: list[bytes] | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
    name: str | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield SSE messages for bus events that ``transform`` maps to data (None skips),
    each under its event's kind, or under ``name`` for a client that listens to one.

    A pump task reads the bus into a small local queue so the heartbeat can
    time out on the queue without cancelling the bus subscription itself.
    """
    queue: asyncio.Queue[Event] = asyncio.Queue(256)

    async def pump() -> None:
        async for event in bus.subscribe(after_id):
            await queue.put(event)

    task = asyncio.create_task(pump())
    metrics.SSE_CLIENTS.inc()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        recent = bus.recent()
        if after_id is not None and recent and after_id < recent[0].id - 1:
            yield sse_message(recent[-1].id, "resync", {})
        for message in first or []:
            yield message
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            data = transform(event)
            if data is not None:
                yield sse_message(event.id, name or event.kind, data)
    finally:
        task.cancel()
        metrics.SSE_CLIENTS.dec()


class FrameEncoder:
    """JPEG-encodes the latest frame once, however many guards are watching it."""

    def __init__(self) -> None:
        self._frame: np.ndarray | None = None
        self._jpeg = b""

    def encode(self, frame: np.ndarray) -> bytes:
        if frame is not self._frame:
            ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ValueError("frame could not be JPEG-encoded")
            self._frame, self._jpeg = frame, buffer.tobytes()
        return self._jpeg


def no_signal_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """Shown while the runtime has no frame, so the guard sees 'no signal', not a frozen image."""
    frame = np.full((height, width, 3), 48, dtype=np.uint8)
    cv2.putText(
        frame,
        "NO SIGNAL",
        (width // 2 - 150, height // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.6,
        (200, 200, 200),
        3,
        cv2.LINE_AA,
    )
    return frame


def _part(jpeg: bytes) -> bytes:
    return (
        (
            f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
        ).encode()
        + jpeg
        + b"\r\n"
    )


async def mjpeg_stream(
    watch: Callable[[], Any],
    latest: Callable[[], np.ndarray | None],
    encoder: FrameEncoder,
    fps: float,
) -> AsyncGenerator[bytes, None]:
    """Multipart JPEG parts at most ``fps`` (capped at 10) per second while held open.

    The runtime only keeps annotated frames while someone holds ``watch()``, so
    no CPU goes to drawing and encoding when nobody looks. An unchanged frame
    is re-sent every couple of seconds so a closed tab is noticed and the
    watch released.
    """
    interval = 1.0 / min(fps, 10.0)
    placeholder = no_signal_frame()
    loop = asyncio.get_running_loop()
    metrics.MJPEG_CLIENTS.inc()
    try:
        with watch():
            last: np.ndarray | None = None
            sent_at = 0.0
            while True:
                frame = latest()
                if frame is None:
                    frame = placeholder
                now = loop.time()
                if frame is not last or now - sent_at > MJPEG_KEEPALIVE_SECONDS:
                    yield _part(await run_in_threadpool(encoder.encode, frame))
                    last, sent_at = frame, now
                await asyncio.sleep(interval)
    finally:
        metrics.MJPEG_CLIENTS.dec()
