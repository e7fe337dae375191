"""A simulated gate camera: scripted visitors walking up one after another.

Every visitor is scikit-image's `astronaut` portrait composited into a lobby
scene, at its own position, size and brightness, with a surgical mask drawn
on it worn correctly, under the nose, or not at all. The mask is drawn at
landmarks measured once on that photo (BlazeFace keypoints plus jaw and chin
read off the picture), so the real detector and classifier have to see it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from gate.camera.verdict import MaskLabel

# Landmarks on skimage.data.astronaut() (512x512), in photo pixels.
EYES_Y = 104
NOSE_TIP = (225, 127)
# The sprite: head and shoulders cut out of the photo.
SPRITE_BOX = (88, 8, 368, 330)  # x0, y0, x1, y1
FACE_WIDTH = 95  # BlazeFace box width on the photo
# Mask outlines (photo pixels), clockwise from the left ear: worn properly the
# top edge rides the nose bridge; under the nose it sits on the upper lip.
MASK_BOTTOM = [(268, 140), (259, 164), (243, 180), (226, 187), (209, 180), (193, 164), (184, 140)]
MASK_TOP = {
    MaskLabel.MASK: [(181, 119), (203, 111), (226, 106), (249, 111), (271, 120)],
    MaskLabel.INCORRECT_MASK: [(184, 137), (205, 134), (226, 134), (247, 134), (268, 137)],
}
EAR_LOOPS = ((178, 117), (273, 121))
MASK_BGR = np.array([222, 196, 152], dtype=np.float32)  # the pale blue of a surgical mask


@dataclass(frozen=True)
class SimVisitor:
    """One scripted visitor: what the face shows for how long (None = out of view)."""

    key: str
    segments: tuple[tuple[float, MaskLabel | None], ...]

    @property
    def duration(self) -> float:
        return sum(d for d, _ in self.segments)


@dataclass(frozen=True)
class _Look:
    """How one visitor appears: where, how large, how lit."""

    cx: float
    cy: float
    face_px: float
    gain: float
    tint: tuple[float, float, float]


def demo_visitors() -> list[SimVisitor]:
    """The demo script: a masked, an unmasked and an under-the-nose visitor, then a mask again."""
    return [
        SimVisitor("masked", ((3.0, MaskLabel.MASK), (1.0, None))),
        SimVisitor("unmasked", ((3.0, MaskLabel.NO_MASK), (1.0, None))),
        SimVisitor("under-nose", ((3.0, MaskLabel.INCORRECT_MASK), (1.0, None))),
        SimVisitor(
            "fixed-mask", ((2.0, MaskLabel.INCORRECT_MASK), (2.0, MaskLabel.MASK), (1.0, None))
        ),
    ]


class SimulatedCamera:
    """A FrameSource that renders the scripted visitors against a clock."""

    def __init__(
        self,
        visitors: Sequence[SimVisitor],
        fps: float = 15,
        size: tuple[int, int] = (640, 480),
        clock: Callable[[], float] = time.monotonic,
        loop: bool = False,
        start_at: float | None = None,
        seed: int = 11,
    ) -> None:
        if not visitors:
            raise ValueError("a simulated camera needs at least one visitor")
        self.visitors = list(visitors)
        self.fps = fps
        self.size = size
        self.loop = loop
        self._clock = clock
        # Without a set start, the script starts when the gate first looks: loading the
        # models can take seconds, and a visitor must not walk past before anyone looks.
        self._start = start_at
        self._starts = np.cumsum([0.0] + [v.duration for v in self.visitors])
        self._total = float(self._starts[-1])
        rng = np.random.default_rng(seed)
        self._looks = [_random_look(rng, size) for _ in self.visitors]
        self._background = _lobby(size, rng)
        self._noise_rng = np.random.default_rng(seed + 1)
        self._last_index: int | None = None
        self.done = False
        self.healthy = True
        self.metrics = SimMetrics()

    def read(self) -> tuple[float, np.ndarray] | None:
        """The frame for the current clock time, or None if no new frame is due yet."""
        now = self._clock()
        if self._start is None:
            self._start = now
        rel = now - self._start
        if rel < 0:
            return None
        if not self.loop and rel >= self._total:
            self.done = True
            return None
        index = math.floor(rel * self.fps + 1e-6)  # 100.1 - 100 is 0.0999…
        if index == self._last_index:
            return None
        self._last_index = index
        self.metrics.frames += 1
        return now, self.render(rel % self._total if self.loop else rel)

    def render(self, rel: float) -> np.ndarray:
        """The scene at `rel` seconds into the script (without looping)."""
        frame = self._background.copy()
        found = self._locate(rel)
        if found is not None:
            i, into, label = found
            if label is not None:
                _paste_visitor(frame, self._looks[i], label, into / self.visitors[i].duration)
        noise = self._noise_rng.normal(0, 2.0, frame.shape)
        return np.clip(frame + noise, 0, 255).astype(np.uint8)

    def visitor_at(self, t: float) -> str | None:
        """Ground truth for tests: the key of the visitor in view at clock time t."""
        found = self._locate(self._relative(t))
        if found is None or found[2] is None:
            return None
        return self.visitors[found[0]].key

    def label_at(self, t: float) -> MaskLabel | None:
        """Ground truth for tests: what the face in view shows at clock time t."""
        found = self._locate(self._relative(t))
        return None if found is None else found[2]

    def close(self) -> None:
        self.done = True

    def _relative(self, t: float) -> float:
        if self._start is None:
            return -1.0  # not started: nobody in view yet
        rel = t - self._start
        return rel % self._total if self.loop else rel

    def _locate(self, rel: float) -> tuple[int, float, MaskLabel | None] | None:
        if rel < 0 or rel >= self._total:
            return None
        i = int(np.searchsorted(self._starts, rel, side="right") - 1)
        into = rel - self._starts[i]
        t = into
        for duration, label in self.visitors[i].segments:
            if t < duration:
                return i, into, label
            t -= duration
        return i, into, None


@dataclass
class SimMetrics:
    frames: int = 0
    fps: float = field(default=0.0)


def _random_look(rng: np.random.Generator, size: tuple[int, int]) -> _Look:
    w, h = size
    face = rng.uniform(0.21, 0.31) * w
    return _Look(
        cx=rng.uniform(0.35, 0.65) * w,
        cy=rng.uniform(0.33, 0.45) * h,
        face_px=face,
        gain=rng.uniform(0.75, 1.15),
        tint=tuple(rng.uniform(0.93, 1.07, 3)),
    )


def _lobby(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plain entrance hall: a lit wall, a door frame, a darker floor."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    wall = np.array([178, 186, 190], np.float32) * (1.05 - 0.25 * y)
    frame = np.broadcast_to(wall, (h, w, 3)).copy()
    frame[int(0.78 * h) :] = np.array([96, 104, 112], np.float32)
    x0, x1 = int(0.22 * w), int(0.78 * w)
    cv2.rectangle(frame, (x0, int(0.05 * h)), (x1, int(0.78 * h)), (120, 128, 134), 6)
    frame += rng.normal(0, 3, frame.shape).astype(np.float32)
    return frame


@cache
def _sprite(label: MaskLabel) -> tuple[np.ndarray, np.ndarray]:
    """The portrait (float BGR) with the mask for `label` drawn on, and its soft alpha."""
    from skimage.data import astronaut

    photo = astronaut()[..., ::-1].astype(np.float32)
    if label is not MaskLabel.NO_MASK:
        photo = _draw_mask(photo, label)
    x0, y0, x1, y1 = SPRITE_BOX
    sprite = photo[y0:y1, x0:x1].copy()
    h, w = sprite.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, int(h * 0.55)), (int(w * 0.46), int(h * 0.52)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 9)[..., None]
    return sprite, alpha


def _draw_mask(photo: np.ndarray, label: MaskLabel) -> np.ndarray:
    """A pleated surgical mask with cylindrical shading, a nose wire and ear loops."""
    ss = 4  # draw at 4x and shrink, for clean anti-aliased edges
    outline = np.array(MASK_TOP[label] + MASK_BOTTOM, np.float32)
    h, w = photo.shape[:2]
    big = np.zeros((h * ss, w * ss), np.uint8)
    cv2.fillPoly(big, [np.round(_smooth(outline) * ss).astype(np.int32)], 255, cv2.LINE_AA)
    coverage = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    coverage = cv2.GaussianBlur(coverage, (0, 0), 0.7)

    top = np.array(MASK_TOP[label], np.float32)
    x_left, x_right = outline[:, 0].min(), outline[:, 0].max()
    y_top, y_bottom = top[:, 1].mean(), outline[:, 1].max()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = np.clip((xx - x_left) / (x_right - x_left), 0, 1)  # 0..1 across the face
    v = np.clip((yy - y_top) / (y_bottom - y_top), 0, 1)  # 0..1 down the mask
    # Brighter in the middle, falling off over the cheeks and towards the chin.
    shade = 0.72 + 0.33 * np.clip(np.sin(np.pi * u), 0, 1) ** 0.6 - 0.12 * v
    # Three pleats: a dark fold line with a lit ridge just above it.
    for k in (0.3, 0.5, 0.7):
        d = v - k - 0.04 * np.sin(np.pi * u)
        shade -= 0.16 * np.exp(-((d / 0.018) ** 2))
        shade += 0.07 * np.exp(-(((d + 0.035) / 0.02) ** 2))
    # The shadow the nose casts when the mask rides over it.
    if label is MaskLabel.MASK:
        nose_u = (NOSE_TIP[0] - x_left) / (x_right - x_left)
        shade += 0.06 * np.exp(-(((u - nose_u) / 0.06) ** 2)) * np.exp(-((v / 0.3) ** 2))
    texture = np.random.default_rng(3).normal(0, 3, (h, w, 1)).astype(np.float32)
    fabric = MASK_BGR * shade[..., None] + texture
    # Ear loops and nose wire.
    loops = np.zeros((h, w), np.float32)
    for corner, ear in ((outline[0], EAR_LOOPS[0]), (outline[4], EAR_LOOPS[1])):
        cv2.line(loops, _pt(corner), _pt(ear), 1.0, 1, cv2.LINE_AA)
    cv2.line(loops, _pt(outline[-1]), _pt(EAR_LOOPS[0]), 1.0, 1, cv2.LINE_AA)
    cv2.line(loops, _pt(outline[5]), _pt(EAR_LOOPS[1]), 1.0, 1, cv2.LINE_AA)
    out = photo * (1 - coverage[..., None]) + fabric * coverage[..., None]
    out = out * (1 - 0.8 * loops[..., None]) + 235 * 0.8 * loops[..., None]
    wire = np.zeros((h, w), np.float32)
    cv2.polylines(
        wire, [np.round(_smooth(top, closed=False)[4:-4]).astype(np.int32)], False, 1.0, 2
    )
    wire = cv2.GaussianBlur(wire, (0, 0), 0.8) * coverage
    return out * (1 - 0.25 * wire[..., None]) + 250 * 0.25 * wire[..., None]


def _smooth(points: np.ndarray, closed: bool = True, steps: int = 8) -> np.ndarray:
    """Catmull-Rom spline through the outline points, so the mask has no corners."""
    p = np.asarray(points, np.float32)
    n = len(p)
    out = []
    segments = n if closed else n - 1
    for i in range(segments):
        p0, p1 = p[(i - 1) % n if closed else max(i - 1, 0)], p[i]
        p2 = p[(i + 1) % n]
        p3 = p[(i + 2) % n if closed else min(i + 2, n - 1)]
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * (
                    2 * p1
                    + (-p0 + p2) * t
                    + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                    + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                )
            )
    if not closed:
        out.append(p[-1])
    return np.array(out)


def _pt(p: np.ndarray | tuple[float, float]) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def _paste_visitor(frame: np.ndarray, look: _Look, label: MaskLabel, progress: float) -> None:
    """Blend the visitor into the frame; they step closer and sway a little during the visit."""
    sprite, alpha = _sprite(label)
    scale = look.face_px / FACE_WIDTH * (0.94 + 0.12 * progress)
    sway = 4 * math.sin(progress * 2 * math.pi * 1.5)
    # Where the face centre of the photo lands in the frame.
    fx, fy = NOSE_TIP[0] - SPRITE_BOX[0], EYES_Y + 25 - SPRITE_BOX[1]
    m = np.array(
        [[scale, 0, look.cx + sway - scale * fx], [0, scale, look.cy - scale * fy]], np.float32
    )
    h, w = frame.shape[:2]
    warped = cv2.warpAffine(sprite, m, (w, h), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    lit = warped * look.gain * np.array(look.tint, np.float32)
    frame *= 1 - a
    frame += lit * a
