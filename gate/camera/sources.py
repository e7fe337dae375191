"""Frame sources: a USB camera, an RTSP/HTTP stream, a video file, or the simulation.

A capture runs on its own thread and keeps only the newest frame, so a slow
analysis step never works through a backlog of stale frames (what the visitor
did two seconds ago is no use to the door). A source that stops delivering is
reopened with exponential backoff; `healthy` turns False after
`stall_seconds` without a frame, which the controller treats as camera down.
A camera or stream that is not there at start (an RTSP camera that boots slower
than the gate after a power cut) is the same case: the gate starts DEGRADED and
picks the camera up when it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from gate.config import CameraSettings
from gate.errors import GateError

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    """What the rest of the gate needs from a camera (it judges stalls from frame times)."""

    def read(self) -> tuple[float, np.ndarray] | None:
        """(monotonic capture time, BGR frame), or None if no new frame arrived."""
        ...

    def close(self) -> None: ...


@dataclass
class SourceMetrics:
    frames: int = 0
    fps: float = 0.0  # smoothed rate at which frames arrive
    reconnects: int = 0
    stalls: int = 0  # times the source went unhealthy
    last_frame_at: float | None = None


def describe_target(source: str) -> str | int:
    """A camera index for digits, otherwise the URL or path as given."""
    digits = source.strip()
    return int(digits) if digits.isascii() and digits.isdigit() else source


class CaptureSource:
    """OpenCV capture on a background thread with latest-frame semantics."""

    def __init__(
        self,
        target: str | int,
        settings: CameraSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[[str | int], cv2.VideoCapture] | None = None,
        backoff: tuple[float, float] = (0.5, 8.0),
        loop_file: bool = True,
    ) -> None:
        self.target = target
        self.settings = settings
        self.metrics = SourceMetrics()
        self._clock = clock
        self._opener = opener or self._open_capture
        self._backoff = backoff
        # A path under /dev names a camera (/dev/video0, /dev/v4l/by-id/...), not a file.
        self._is_file = (
            isinstance(target, str) and "://" not in target and not target.startswith("/dev/")
        )
        self._loop_file = loop_file
        self._lock = threading.Lock()
        self._latest: tuple[float, np.ndarray] | None = None
        self._seq = 0
        self._delivered = 0
        self._stop = threading.Event()
        self._was_healthy = True
        first = self._open_file() if self._is_file else None
        self._thread = threading.Thread(
            target=self._run, args=(first,), name=f"camera-{target}", daemon=True
        )
        self._thread.start()

    def _open_file(self) -> cv2.VideoCapture:
        """A video file is checked at once: one that is missing or unreadable is a
        mistake in the config (a file does not boot later), so it is a one-line error."""
        if not Path(str(self.target)).is_file():
            raise GateError(f"video file not found: {self.target}")
        capture = self._opener(self.target)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            capture.release()
            raise GateError(f"cannot read video file {self.target}: no frame (unsupported format)")
        self._publish(frame)
        return capture

    def _reopen(self) -> cv2.VideoCapture:
        """The capture, opened or not: an unopened one reads no frame, and is retried."""
        try:
            return self._opener(self.target)
        except cv2.error as exc:
            log.debug("opening camera %s failed: %s", self.target, exc)
            return cv2.VideoCapture()

    def _open_capture(self, target: str | int) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(target)
        if isinstance(target, int) and capture.isOpened():
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
            capture.set(cv2.CAP_PROP_FPS, self.settings.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _publish(self, frame: np.ndarray) -> None:
        now = self._clock()
        with self._lock:
            last = self.metrics.last_frame_at
            if last is not None and now > last:
                rate = 1.0 / (now - last)
                self.metrics.fps = (
                    rate if self.metrics.fps == 0 else 0.9 * self.metrics.fps + 0.1 * rate
                )
            self._latest = (now, frame)
            self._seq += 1
            self.metrics.frames += 1
            self.metrics.last_frame_at = now

    def _run(self, capture: cv2.VideoCapture | None) -> None:
        """Read until closed. A camera is first opened here, not in the constructor, so
        one that is absent never holds up or ends the gate's start.

        The log says when the camera stops and when it is back; the retries between are
        debug lines, or a camera unplugged over a weekend would write one every 8 s.
        """
        delay = self._backoff[0]
        failures = 0
        # A file plays back at the configured rate instead of as fast as it decodes.
        period = 1.0 / self.settings.fps if self._is_file else 0.0
        if capture is None:
            capture = self._reopen()
        while not self._stop.is_set():
            ok, frame = capture.read()
            if ok and frame is not None:
                self._publish(frame)
                if failures:
                    log.warning("camera %s delivers frames again", self.target)
                    failures = 0
                delay = self._backoff[0]
                if period:
                    self._stop.wait(period)
                continue
            if self._is_file and self._loop_file and capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                ok, frame = capture.read()
                if ok and frame is not None:
                    self._publish(frame)
                    continue
            capture.release()
            failures += 1
            (log.warning if failures == 1 else log.debug)(
                "camera %s delivered no frame; reopening in %.1f s", self.target, delay
            )
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._backoff[1])
            self.metrics.reconnects += 1
            capture = self._reopen()
        capture.release()

    def read(self) -> tuple[float, np.ndarray] | None:
        with self._lock:
            if self._latest is None or self._seq == self._delivered:
                return None
            self._delivered = self._seq
            return self._latest

    @property
    def healthy(self) -> bool:
        last = self.metrics.last_frame_at
        ok = (
            not self._stop.is_set()
            and last is not None
            and self._clock() - last <= self.settings.stall_seconds
        )
        if self._was_healthy and not ok:
            self.metrics.stalls += 1
        self._was_healthy = ok
        return ok

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


def open_source(
    settings: CameraSettings, *, clock: Callable[[], float] = time.monotonic
) -> FrameSource:
    """The frame source CameraSettings.source names; GateError (one line) for a video
    file that is missing or unreadable. A camera or stream that is absent is no error:
    it is retried in the background while the gate runs DEGRADED."""
    if settings.source == "simulated":
        from gate.camera.simulated import SimulatedCamera, demo_visitors

        size = (settings.width, settings.height)
        return SimulatedCamera(demo_visitors(), fps=settings.fps, size=size, clock=clock, loop=True)
    return CaptureSource(describe_target(settings.source), settings, clock=clock)
