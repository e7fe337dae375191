"""Frame in, verdicts out: detection, mask classification and tracking for the gate.

`Vision.analyze` is called for every camera frame, so it must never raise on
what a camera or a bad driver can hand it: bad frames are skipped and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gate.camera.blazeface import DOOR_THRESHOLD, BlazeFaceOnnx
from gate.camera.classifier import LABELS, MODEL_PATH, MaskClassifier
from gate.camera.detector import Detection, TiledSearch
from gate.camera.models import facemesh_path
from gate.camera.tracker import Tracker
from gate.camera.verdict import FaceVerdict, FrameAnalysis, MaskLabel
from gate.config import CameraSettings

log = logging.getLogger(__name__)

# Frames above this are refused outright (more than 8K UHD); frames above the
# working size are shrunk for detection only, crops come from full resolution.
MAX_FRAME_PIXELS = 7680 * 4320
WORK_SIDE = 960
COLOURS = {
    MaskLabel.MASK: (60, 180, 60),
    MaskLabel.INCORRECT_MASK: (0, 160, 255),
    MaskLabel.NO_MASK: (40, 40, 230),
}


@dataclass
class VisionMetrics:
    frames: int = 0
    skipped: int = 0  # frames refused as unusable (empty, wrong type, too large)
    converted: int = 0  # grey or BGRA frames turned into BGR and analysed
    faces: int = 0
    last_ms: float = 0.0
    total_ms: float = 0.0
    detector_ms: float = 0.0  # last frame
    classifier_ms: float = 0.0  # last frame

    @property
    def mean_ms(self) -> float:
        analysed = self.frames - self.skipped
        return self.total_ms / analysed if analysed else 0.0


class Vision:
    """The camera room's brain: one instance per camera, used from one thread."""

    def __init__(
        self,
        settings: CameraSettings,
        data_dir: Path,
        *,
        classifier_path: Path = MODEL_PATH,
        detector: TiledSearch | None = None,
        min_confidence: float = DOOR_THRESHOLD,
        tracker: Tracker | None = None,
    ) -> None:
        """`detector` defaults to the project's fine-tuned BlazeFace; a benchmark may pass
        another (Google's original) to compare in one run."""
        self.settings = settings
        self.classifier = MaskClassifier(
            classifier_path, threads=1, facemesh_model=facemesh_path(data_dir)
        )
        self.detector = detector or BlazeFaceOnnx(min_confidence=min_confidence)
        self.tracker = tracker or Tracker()
        self.metrics = VisionMetrics()

    def analyze(self, frame: np.ndarray, at: float) -> FrameAnalysis:
        """Detect, classify and track the faces in one BGR frame."""
        self.metrics.frames += 1
        start = time.perf_counter()
        bgr = self._usable(frame)
        if bgr is None:
            self.metrics.skipped += 1
            return FrameAnalysis(at=at)
        try:
            faces = self._faces(bgr, at)
        except (cv2.error, RuntimeError, ValueError) as exc:  # a frame must never stop the gate
            log.warning("frame skipped: %s", exc)
            self.metrics.skipped += 1
            return FrameAnalysis(at=at)
        ms = (time.perf_counter() - start) * 1000
        self.metrics.last_ms = ms
        self.metrics.total_ms += ms
        self.metrics.faces += len(faces)
        return FrameAnalysis(at=at, faces=faces, ms=ms)

    def _usable(self, frame: object) -> np.ndarray | None:
        """The frame as contiguous uint8 BGR, or None if it cannot be analysed."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
            return None
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            self.metrics.converted += 1
            return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            return None
        if frame.shape[0] * frame.shape[1] > MAX_FRAME_PIXELS or min(frame.shape[:2]) < 16:
            return None
        if frame.shape[2] == 4:
            self.metrics.converted += 1
            return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        return np.ascontiguousarray(frame)

    def _faces(self, bgr: np.ndarray, at: float) -> list[FaceVerdict]:
        detections = self._detect(bgr)
        t0 = time.perf_counter()
        boxes = [d.box for d in detections]
        probs = self.classifier.classify(bgr, boxes)
        self.metrics.classifier_ms = (time.perf_counter() - t0) * 1000
        tracks = self.tracker.update(boxes, probs, at)
        return [
            FaceVerdict(
                track_key=t.key,
                box=t.box,
                label=LABELS[t.label],
                score=float(t.probs[t.label]),
                settled=t.settled,
                frames=t.frames,
            )
            for t in tracks
        ]

    def _detect(self, bgr: np.ndarray) -> list[Detection]:
        """Faces inside the ROI and at least min_face_px wide, in frame pixels."""
        t0 = time.perf_counter()
        h, w = bgr.shape[:2]
        x0, y0, x1, y1 = self.settings.roi
        ox, oy = int(x0 * w), int(y0 * h)
        region = bgr[oy : int(y1 * h), ox : int(x1 * w)]
        k = min(1.0, WORK_SIDE / max(region.shape[:2]))
        if k < 1.0:
            region = cv2.resize(region, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        found = self.detector.detect(cv2.cvtColor(region, cv2.COLOR_BGR2RGB))
        self.metrics.detector_ms = (time.perf_counter() - t0) * 1000
        out = []
        for d in found:
            bx, by, bw, bh = (round(v / k) for v in d.box)
            if bw >= self.settings.min_face_px:
                out.append(Detection((bx + ox, by + oy, bw, bh), d.score, d.keypoints))
        return out

    def annotate(self, frame: np.ndarray, analysis: FrameAnalysis) -> np.ndarray:
        """A copy of the frame with each face's box, label and score, for the live view."""
        out = self._usable(frame)
        if out is None:
            return frame.copy() if isinstance(frame, np.ndarray) else np.zeros((1, 1, 3), np.uint8)
        out = out.copy()
        for face in analysis.faces:
            x, y, w, h = face.box
            colour = COLOURS[face.label]
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, 3 if face.settled else 1)
            text = f"{face.label.value} {face.score:.2f}{'' if face.settled else ' ...'}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            ty = max(y - 6, th + 4)
            cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty + 2), colour, -1)
            cv2.putText(
                out, text, (x + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1
            )
        return out

    def close(self) -> None:
        self.detector.close()
