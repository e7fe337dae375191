"""`gate replay`: judge a recorded video with the real camera pipeline and controller.

Frames are read one by one, none dropped, and the controller runs on the
video's own clock, so a minute of video takes only as long as it decodes.
The sanitizer step is skipped (a recording has no hands to sense) and the
door pulse is the shortest one, 1 s of video time: nobody walks through the
emulated door, which runs in real time. Unlocks still go to the emulated
station over a real pty. Decisions go to a throwaway database, never to the
gate's own entry log, and no snapshot is taken (`config.off_the_record`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gate.assembly import assemble
from gate.config import Settings, off_the_record
from gate.errors import GateError


class VideoFrames:
    """Every frame of a file, stamped with its time in the video."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise GateError(f"video not found: {path}")
        self._capture = cv2.VideoCapture(str(path))
        # OpenCV "opens" any file it can guess a reader for, so only a first frame proves
        # it is a video; it is kept for read().
        ok, self._first = self._capture.read()
        if not ok:
            self._capture.release()
            raise GateError(f"cannot decode video {path}")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 25.0
        self.index = 0
        self.done = False

    @property
    def now(self) -> float:
        return self.index / self.fps

    def read(self) -> tuple[float, np.ndarray] | None:
        if self.done:
            return None
        frame, self._first = self._first, None
        if frame is None:
            ok, frame = self._capture.read()
            if not ok:
                self.done = True
                return None
        self.index += 1
        return self.now, frame

    def close(self) -> None:
        self._capture.release()


async def replay_video(settings: Settings, video: Path) -> list[dict[str, Any]]:
    frames = VideoFrames(video)
    with tempfile.TemporaryDirectory(prefix="gate-replay-") as scratch:
        settings = off_the_record(settings, Path(scratch))
        async with assemble(
            settings, source=frames, clock=lambda: frames.now, realtime=False, auto_door=False
        ) as gate:
            await gate.runtime.run()
            return gate.runtime.decisions
