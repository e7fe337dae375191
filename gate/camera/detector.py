"""Face detection: what every detector shares, and Google's BlazeFace through MediaPipe Tasks.

The gate itself runs the project's fine-tuned BlazeFace (`blazeface.py`);
Google's original, run here through the MediaPipe Tasks `FaceDetector`, is the
teacher it was trained from and boxes the classifier's training faces.
BlazeFace short range sees faces from about an eighth of its input up to the
whole of it. That suits the gate camera (a face 80-300 px wide in 640x480), so
`detect` is one pass. Scene photos hold much smaller faces, so evaluation uses
`detect_tiled`, which runs the same model on overlapping tiles at several
scales and merges the results.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from gate.camera.classifier import CROP_SCALE
from gate.camera.verdict import Box
from gate.errors import GateError

# The smallest face BlazeFace short range finds reliably, as a share of tile side.
MIN_FACE_SHARE = 0.16
# A tiled find that a second look does not confirm is kept only if this sure.
KEEP_UNCONFIRMED = 0.55


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """LiteRT prints INFO lines from C++ straight to fd 2 while it loads; hide only those.

    The gate's own errors must stay one line. Python-level errors raised
    inside still propagate normally.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class Detection:
    """One face the detector found, in frame pixels."""

    box: Box
    score: float
    # right eye, left eye, nose tip, mouth, right ear, left ear (x, y) in pixels
    keypoints: tuple[tuple[float, float], ...] = ()


class TiledSearch:
    """Scene-photo search for any one-pass detector: tiles at halving scales, then NMS and
    a second look. Subclasses provide `detect(rgb)`."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model; nothing to do where the garbage collector frees it all."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect_tiled(self, rgb: np.ndarray, min_face: int = 24) -> list[Detection]:
        """Find faces down to `min_face` px wide: overlapping tiles at halving scales, then NMS."""
        h, w = rgb.shape[:2]
        found = self.detect(rgb)
        side = min(h, w)
        smallest = max(64, int(min_face / MIN_FACE_SHARE))
        while side >= smallest:
            stride = max(1, side // 2)
            for y in _starts(h, side, stride):
                for x in _starts(w, side, stride):
                    for d in self.detect(rgb[y : y + side, x : x + side]):
                        bx, by, bw, bh = d.box
                        kps = tuple((kx + x, ky + y) for kx, ky in d.keypoints)
                        found.append(Detection((bx + x, by + y, bw, bh), d.score, kps))
            side = int(side / 1.6)
        kept = nms(found, 0.4)
        return [v for d in kept if (v := self._confirm(rgb, d)) is not None]

    def _confirm(self, rgb: np.ndarray, d: Detection, context: float = 2.5) -> Detection | None:
        """Look again at a tile's find with the face at BlazeFace's favourite scale.

        Small tiles make BlazeFace see faces in fabric and shelves; a real face
        is found again, and better boxed, in a window `context` times its size.
        """
        x, y, w, h = d.box
        side = int(max(w, h) * context)
        x0, y0 = int(x + w / 2 - side / 2), int(y + h / 2 - side / 2)
        window = np.zeros((side, side, 3), np.uint8)
        H, W = rgb.shape[:2]
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + side), min(H, y0 + side)
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        again = [
            Detection((bx + x0, by + y0, bw, bh), s, tuple((kx + x0, ky + y0) for kx, ky in k))
            for (bx, by, bw, bh), s, k in (
                (a.box, a.score, a.keypoints) for a in self.detect(window)
            )
        ]
        best = max(again, key=lambda a: iou(a.box, d.box), default=None)
        if best is None or iou(best.box, d.box) < 0.3:
            return d if d.score >= KEEP_UNCONFIRMED else None
        return best


class FaceDetector(TiledSearch):
    """Google's BlazeFace through the MediaPipe Tasks API: the teacher `gate train-detector`
    starts from. Not thread safe; one per analysing thread."""

    def __init__(self, model_path: Path, min_confidence: float = 0.5) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            min_detection_confidence=min_confidence,
        )
        with _native_stderr_silenced():
            try:
                self._task = vision.FaceDetector.create_from_options(options)
            except (RuntimeError, ValueError) as exc:
                raise GateError(f"cannot load face detector {model_path}: {exc}") from None
            # Warm-up, so LiteRT's once-only notices come out here, silenced: its first
            # run, and an input frame whose memory is not aligned as it likes (it copies
            # then). Its own buffers can still be misaligned later, so the alignment
            # notice may yet appear once, but no longer for every camera's frames.
            self.detect(np.zeros((128, 128, 3), np.uint8))
            self.detect(np.zeros(128 * 128 * 3 + 1, np.uint8)[1:].reshape(128, 128, 3))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """One pass over an RGB uint8 image."""
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._task.detect(image)
        h, w = rgb.shape[:2]
        found = []
        for d in result.detections:
            b = d.bounding_box
            x0, y0 = max(0, b.origin_x), max(0, b.origin_y)
            x1, y1 = min(w, b.origin_x + b.width), min(h, b.origin_y + b.height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kps = tuple((k.x * w, k.y * h) for k in d.keypoints or ())
            found.append(Detection((x0, y0, x1 - x0, y1 - y0), d.categories[0].score, kps))
        return found

    def close(self) -> None:
        with _native_stderr_silenced(), contextlib.suppress(Exception):
            self._task.close()


def _starts(length: int, side: int, stride: int) -> list[int]:
    """Tile origins that cover [0, length) with the last tile flush to the end."""
    if length <= side:
        return [0]
    starts = list(range(0, length - side, stride))
    starts.append(length - side)
    return starts


def _intersection(a: Box, b: Box) -> int:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy


def iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def greedy_match(
    left: list[Box], right: list[Box], score: Callable[[Box, Box], float], threshold: float
) -> dict[int, int]:
    """Pair boxes best score first, each at most once; {left index: right index}."""
    pairs = sorted(
        ((score(a, b), li, ri) for li, a in enumerate(left) for ri, b in enumerate(right)),
        reverse=True,
    )
    match: dict[int, int] = {}
    used: set[int] = set()
    for value, li, ri in pairs:
        if value < threshold:
            break
        if li not in match and ri not in used:
            match[li] = ri
            used.add(ri)
    return match


def nms(dets: list[Detection], threshold: float) -> list[Detection]:
    """Greedy non-maximum suppression, best score first.

    A box mostly inside a kept one (a tile that saw half a face) is dropped too.
    """
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(iou(d.box, k.box) < threshold and _inside(d.box, k.box) < 0.7 for k in kept):
            kept.append(d)
    return kept


def _inside(a: Box, b: Box) -> float:
    """Share of box a that lies inside box b."""
    return _intersection(a, b) / max(1, a[2] * a[3])


def box_in_face_image(
    detector: TiledSearch, bgr: np.ndarray, pad: float = 0.25
) -> tuple[Box, bool]:
    """The face box in an image that is itself a loose face crop, and whether it was detected.

    The crop is padded first, because BlazeFace misses faces that fill the
    whole input. With no detection the whole image is taken as the crop
    window, so every image still yields one face.
    """
    h, w = bgr.shape[:2]
    px, py = int(w * pad), int(h * pad)
    padded = cv2.copyMakeBorder(bgr, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    dets = detector.detect(cv2.cvtColor(padded, cv2.COLOR_BGR2RGB))
    if dets:
        bx, by, bw, bh = max(dets, key=lambda d: d.box[2] * d.box[3]).box
        return (bx - px, by - py, bw, bh), True
    side = min(w, h) / CROP_SCALE
    return (round((w - side) / 2), round((h - side) / 2), round(side), round(side)), False
