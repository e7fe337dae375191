"""`gate eval --visits`: each labelled face of a VOC set as a visit to the door.

A visit is one second of 30 fps frames built from the face's door frame
(`gate.camera.doorframe`) with seeded variation from frame to frame (`VisitFilm`).
The frames go through the real `Vision` (detector, classifier, tracker and its
voting) and the real `Controller`, fed in process on the frames' own clock, as
`gate replay` feeds it: mask policy deny, the sanitizer step skipped. This lives
outside the camera room because it drives the controller.

A visit's decision is the controller's first: an unlock, or a refusal (an entry
saved as denied, which shows the visitor a prompt and raises an alert). A refused
visitor whom the gate lets in later in the same second is counted as both refused
and, under `masked_refused_then_admitted`, admitted; a non-compliant visitor let in at any
moment counts as admitted.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from gate.camera.classifier import LABELS, MODEL_PATH
from gate.camera.doorframe import (
    FACE_HEIGHT,
    FACE_SHARE,
    FRAME_SIZE,
    door_source,
    door_window,
    warp,
)
from gate.camera.evaluate import DoorFace, band_name, door_faces, percentile, ratio, size_bands
from gate.camera.pipeline import Vision
from gate.camera.tracker import Tracker
from gate.camera.verdict import MaskLabel
from gate.config import CameraSettings, MaskPolicy, PolicySettings
from gate.controller import Controller, SaveEntry, Unlock

FPS = 30.0
VISIT_FRAMES = 30  # about 1 s
APPROACH_FRAMES = 10  # the first third of a second: the visitor steps up to the door
APPROACH_FROM = 0.8  # face size at the first frame, as a share of its door-frame size
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# As `gate replay` judges (config.off_the_record): mask policy deny, no sanitizer step.
POLICY = PolicySettings(mask_policy=MaskPolicy.DENY, sanitizer_required=False, unlock_seconds=1)


@dataclass
class _Walk:
    """One bounded random walk: starts somewhere in [-start, start] around `centre`,
    moves by N(0, step) a frame, never leaves [centre - bound, centre + bound]."""

    value: float
    centre: float
    step: float
    bound: float

    @classmethod
    def begin(
        cls, rng: np.random.Generator, start: float, step: float, bound: float, centre: float = 0.0
    ) -> _Walk:
        return cls(centre + rng.uniform(-start, start), centre, step, bound)

    def next(self, rng: np.random.Generator) -> float:
        moved = self.value + rng.normal(0.0, self.step)
        self.value = float(np.clip(moved, self.centre - self.bound, self.centre + self.bound))
        return self.value


class VisitFilm:
    """The frames of one visit, from a photo and one labelled face in it.

    Frame to frame, each a bounded random walk (README, "Simulated visits"): the face's
    place (±4 px), size (±5 %), in-plane rotation (±5°), head turn (±6°), and the
    camera's gain (0.75-1.25) and offset (±25 grey levels). Per frame: motion blur
    (8 % of frames) or focus blur (5 %), sensor noise, JPEG at quality 60-90. In the
    first 10 frames the face grows from 80 % of its size: the visitor steps up.
    """

    def __init__(self, photo: np.ndarray, door: DoorFace, rng: np.random.Generator) -> None:
        self.source, self.to_frame = door_source(photo, door_window(door.face.box))
        self.rng = rng
        self.dx = _Walk.begin(rng, 2.0, 0.8, 4.0)
        self.dy = _Walk.begin(rng, 2.0, 0.8, 4.0)
        self.scale = _Walk.begin(rng, 0.03, 0.006, 0.05, centre=1.0)
        self.roll = _Walk.begin(rng, 3.0, 0.5, 5.0)
        self.yaw = _Walk.begin(rng, 4.0, 0.8, 6.0)
        self.gain = _Walk.begin(rng, 0.2, 0.01, 0.25, centre=1.0)
        self.offset = _Walk.begin(rng, 15.0, 1.0, 25.0)
        self.noise = rng.uniform(1.5, 4.0)  # sensor noise, grey levels (one camera per visit)

    def frames(self, n: int = VISIT_FRAMES) -> Iterator[np.ndarray]:
        for i in range(n):
            yield self._frame(i)

    def _frame(self, i: int) -> np.ndarray:
        rng = self.rng
        grow = _approach(i)
        moved = self._pose(grow * self.scale.next(rng)) @ self.to_frame
        frame = warp(self.source, moved).astype(np.float32)
        frame = frame * self.gain.next(rng) + self.offset.next(rng)
        frame = self._blur(frame)
        frame += rng.normal(0.0, self.noise, frame.shape).astype(np.float32)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        quality = int(rng.integers(60, 91))
        _, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)

    def _pose(self, scale: float) -> np.ndarray:
        """Shift, zoom, roll and head turn, about the face centre, in frame pixels."""
        rng = self.rng
        cx, cy = FRAME_SIZE[0] / 2, FACE_HEIGHT * FRAME_SIZE[1]
        roll = np.radians(self.roll.next(rng))
        yaw = np.radians(self.yaw.next(rng))
        c, s = np.cos(roll) * scale, np.sin(roll) * scale
        turn = _head_turn(yaw, FACE_SHARE * FRAME_SIZE[0] / 2)
        around = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
        back = np.array(
            [[1, 0, cx + self.dx.next(rng)], [0, 1, cy + self.dy.next(rng)], [0, 0, 1]], np.float64
        )
        spin = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
        return back @ spin @ turn @ around

    def _blur(self, frame: np.ndarray) -> np.ndarray:
        rng = self.rng
        pick = rng.random()
        if pick < 0.08:  # the visitor moves during the exposure
            length = int(rng.integers(5, 10))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2, :] = 1.0 / length
            turn = cv2.getRotationMatrix2D(
                (length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1
            )
            kernel = cv2.warpAffine(kernel, turn, (length, length))
            return cv2.filter2D(frame, -1, kernel / max(kernel.sum(), 1e-6))
        if pick < 0.13:  # autofocus hunting
            return cv2.GaussianBlur(frame, (0, 0), rng.uniform(1.0, 2.0))
        return frame


def _approach(i: int) -> float:
    """Face size at frame i as a share of its door size: 80 % growing to 100 %, easing in."""
    if i >= APPROACH_FRAMES:
        return 1.0
    left = 1 - i / APPROACH_FRAMES
    return 1.0 - (1.0 - APPROACH_FROM) * left * left


def _head_turn(yaw: float, half_width: float) -> np.ndarray:
    """A flat face of half width `half_width` turned by `yaw` radians about its vertical
    axis, seen from about three face widths away: foreshortened by cos(yaw), and the far
    side smaller than the near side by the perspective of its depth. It misses what a
    photo cannot show (the nose moving across the cheeks), so it is a mild turn."""
    depth = 6 * half_width  # camera distance, in the same pixels
    return np.array([[np.cos(yaw), 0, 0], [0, 1, 0], [np.sin(yaw) / depth, 0, 1]], np.float64)


@dataclass(frozen=True)
class VisitResult:
    truth: MaskLabel
    width: int  # the face's width in the photo
    first: str | None  # "admitted", "refused", or None: undecided
    seconds: float | None  # from the first frame to the first decision, frame time
    admitted: bool  # let in at any moment of the visit
    frames_ms: list[float]


def run_visit(
    vision: Vision, truth: MaskLabel, width: int, frames: Iterator[np.ndarray]
) -> VisitResult:
    """One visit through a fresh tracker and controller; stops once the door unlocks."""
    vision.tracker = Tracker()
    controller = Controller(POLICY, wall=lambda t: EPOCH + timedelta(seconds=t))
    first, seconds, admitted, ms = None, None, False, []
    for i, frame in enumerate(frames):
        at = i / FPS
        analysis = vision.analyze(frame, at)
        ms.append(analysis.ms)
        for action in controller.frame(at, analysis.faces) + controller.tick(at):
            refused = isinstance(action, SaveEntry) and action.entry.outcome.denied
            admitted = admitted or isinstance(action, Unlock)
            if first is None and (refused or admitted):
                first, seconds = ("admitted" if admitted else "refused"), at
        if admitted:
            break
    return VisitResult(truth, width, first, seconds, admitted, ms)


def evaluate_visits(
    path: Path,
    data_dir: Path,
    *,
    min_face: int,
    split: str = "all",
    limit: int | None = None,
    per_face: int = 1,
    seed: int = 7,
    classifier_path: Path = MODEL_PATH,
) -> dict:
    """`per_face` simulated visits of every labelled face; the JSON report.

    Each visit's variation is seeded by `seed`, the face's image and its place in it,
    so a face's visits are the same whatever `split` or `limit` picked it.
    """
    faces = door_faces(path, split, min_face, limit)
    results: list[VisitResult] = []
    unreadable: set[str] = set()
    vision = Vision(CameraSettings(), data_dir, classifier_path=classifier_path)
    try:
        photo, photo_path = None, None
        for door in faces:
            if door.item.image != photo_path:
                photo_path, photo = door.item.image, cv2.imread(str(door.item.image))
            if photo is None:
                unreadable.add(door.item.image.name)
                continue
            for k in range(per_face):
                film = VisitFilm(photo, door, np.random.default_rng(_visit_seed(seed, door, k)))
                results.append(run_visit(vision, door.face.label, door.face.box[2], film.frames()))
    finally:
        vision.close()
    report = {"kind": "visits", **_summary(results)}
    report.update(
        by_label={
            label.value: _brief([r for r in results if r.truth is label]) for label in LABELS
        },
        by_size={
            band_name(band): _brief([r for r in results if band[0] <= r.width < band[1]])
            for band in size_bands(min_face)
        },
        n_faces=len(faces) - sum(door.item.image.name in unreadable for door in faces),
        visits_per_face=per_face,
        seed=seed,
        frames_per_visit=VISIT_FRAMES,
        fps=FPS,
        unreadable=sorted(unreadable),
        split=split,
        min_face=min_face,
        model=str(classifier_path),
    )
    return report


def _visit_seed(seed: int, door: DoorFace, k: int) -> list[int]:
    return [seed, zlib.crc32(door.key.encode()), k]


def _summary(results: list[VisitResult]) -> dict:
    masked = [r for r in results if r.truth is MaskLabel.MASK]
    improper = [r for r in results if r.truth is not MaskLabel.MASK]
    masked_refused = sum(r.first == "refused" for r in masked)
    improper_admitted = sum(r.admitted for r in improper)
    return {
        "masked_visits": len(masked),
        "masked_refused": masked_refused,
        "masked_refused_share": ratio(masked_refused, len(masked)),
        "masked_refused_then_admitted": sum(r.first == "refused" and r.admitted for r in masked),
        "masked_undecided": sum(r.first is None for r in masked),
        "improper_visits": len(improper),
        "improper_admitted": improper_admitted,
        "improper_admitted_share": ratio(improper_admitted, len(improper)),
        "improper_undecided": sum(r.first is None for r in improper),
        **_brief(results),
        "ms_per_frame_p50": percentile([m for r in results for m in r.frames_ms], 50),
    }


def _brief(results: list[VisitResult]) -> dict:
    """Figures that read for any group of visits (one label, one size band)."""
    decided = [r.seconds for r in results if r.seconds is not None]
    return {
        "n_visits": len(results),
        "first_admitted": sum(r.first == "admitted" for r in results),
        "first_refused": sum(r.first == "refused" for r in results),
        "admitted_at_any_moment": sum(r.admitted for r in results),
        "undecided": sum(r.first is None for r in results),
        "decision_seconds_p50": percentile(decided, 50, places=3),
        "decision_seconds_p95": percentile(decided, 95, places=3),
    }
