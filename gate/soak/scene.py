"""The soak's camera: a seeded, endless queue of simulated visitors served as MJPEG over HTTP.

The gate opens it as it would an IP camera (`camera.source = "http://…"`), so a
camera that goes away or stalls is a real broken stream to its capture thread.
Every visitor's kind and time in view is kept, as the ground truth the store is
checked against.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import MaskLabel

MASK, BARE, UNDER_NOSE = MaskLabel.MASK, MaskLabel.NO_MASK, MaskLabel.INCORRECT_MASK
BOUNDARY = "soakframe"
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Kind:
    """One kind of visitor: what the face shows, whether they sanitize, what the gate
    may log for them. `safe` outcomes are those a deny policy allows at all."""

    name: str
    weight: float
    segments: tuple[tuple[float, MaskLabel | None], ...]
    sanitizes: bool
    may_be_admitted: bool


def kinds(sanitizer_timeout: float, leave_seconds: float) -> tuple[Kind, ...]:
    """The mix of visitors, timed against the gate's own waits (a gap longer than
    `leave_seconds` makes the next face a new person)."""
    gap = (leave_seconds + 0.8, None)
    wait_out = (sanitizer_timeout + leave_seconds + 0.5, None)
    return (
        Kind("masked", 0.34, ((4.0, MASK), gap), True, True),
        Kind("bare", 0.14, ((2.5, BARE), gap), True, False),
        Kind("under-nose", 0.10, ((2.5, UNDER_NOSE), gap), True, False),
        Kind("fixes-mask", 0.14, ((2.5, BARE), (4.0, MASK), gap), True, True),
        Kind("never-sanitizes", 0.10, ((2.5, MASK), wait_out), False, True),
        Kind("leaves", 0.10, ((1.2, MASK), wait_out), False, True),
        Kind("exit", 0.08, ((1.5, None),), False, False),  # someone inside presses exit
    )


@dataclass(frozen=True)
class Visit:
    """One visitor in the stream, at `start`..`end` seconds after the stream began."""

    index: int
    kind: Kind
    start: float
    end: float

    @property
    def key(self) -> str:
        return f"{self.kind.name}#{self.index}"


def visitor_stream(
    seed: int, seconds: float, sanitizer_timeout: float, leave_seconds: float
) -> list[Visit]:
    """Visitors enough to fill `seconds`, drawn from the mix with a seeded generator."""
    rng = random.Random(seed)
    mix = kinds(sanitizer_timeout, leave_seconds)
    visits: list[Visit] = []
    t = 0.0
    while t < seconds + 60:
        kind = rng.choices(mix, weights=[k.weight for k in mix])[0]
        duration = sum(d for d, _ in kind.segments)
        visits.append(Visit(len(visits), kind, t, t + duration))
        t += duration
    return visits


class SceneCamera:
    """Renders the stream on the wall clock and serves it to any number of viewers.

    `gone` refuses and drops connections (a camera unplugged); `stalled` keeps
    them open and sends nothing (a frozen encoder)."""

    def __init__(self, visits: list[Visit], fps: float, size: tuple[int, int], seed: int) -> None:
        self.visits = visits
        self.fps = fps
        self._sim = SimulatedCamera(
            [SimVisitor(v.key, v.kind.segments) for v in visits],
            fps=fps,
            size=size,
            seed=seed,
        )
        self.started_at: float | None = None  # wall clock (time.time) of second 0
        self.gone = False
        self.stalled = False
        self._frame: bytes | None = None
        self._frame_no = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.frames_served = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def start(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # no access log on stderr
                pass

            def do_GET(self) -> None:
                camera._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="soak-camera").start()
        threading.Thread(target=self._render_loop, daemon=True, name="soak-render").start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._changed:
            self._changed.notify_all()

    def visit_at(self, wall: float) -> Visit | None:
        """The visitor in view (or walking off) at wall-clock time `wall`."""
        if self.started_at is None:
            return None
        rel = wall - self.started_at
        lo, hi = 0, len(self.visits)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.visits[mid].end <= rel:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.visits) and self.visits[lo].start <= rel:
            return self.visits[lo]
        return None

    def shown(self, until: float) -> list[Visit]:
        """Visitors whose visit ended before wall time `until`."""
        if self.started_at is None:
            return []
        rel = until - self.started_at
        return [v for v in self.visits if v.end <= rel]

    def _render_loop(self) -> None:
        period = 1.0 / self.fps
        next_at = time.time()
        while not self._stop.is_set():
            now = time.time()
            if self.started_at is None:
                self.started_at = now
            if not self.stalled and not self.gone:
                frame = self._sim.render(now - self.started_at)
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if ok:
                    with self._changed:
                        self._frame = jpeg.tobytes()
                        self._frame_no += 1
                        self._changed.notify_all()
            next_at += period
            self._stop.wait(max(0.0, next_at - time.time()))
            if next_at < time.time() - 1:  # fell far behind (a busy machine): skip, not race
                next_at = time.time()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        if self.gone:
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        request.send_header("Cache-Control", "no-store")
        request.end_headers()
        seen = 0
        try:
            while not self._stop.is_set() and not self.gone:
                with self._changed:
                    self._changed.wait(timeout=1.0)
                    frame, number = self._frame, self._frame_no
                if frame is None or number == seen or self.gone:
                    continue
                seen = number
                request.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(frame)}\r\n\r\n".encode()
                )
                request.wfile.write(frame + b"\r\n")
                self.frames_served += 1
        except OSError:  # the gate dropped the stream (a restart, its own reconnect)
            return
