"""Follow faces across frames so one person gets one track and one decision.

Matching is greedy by IoU, with a centroid fallback for fast steps towards the
camera (the box grows and IoU drops). Class probabilities are smoothed with an
exponential moving average; the label only changes when another class leads
by a margin (hysteresis), and a track is `settled` once the same label has led
for `settle_frames` frames in a row with enough confidence.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from gate.camera.detector import greedy_match, iou
from gate.camera.verdict import Box

_keys = itertools.count(1)  # process-wide: a key is never reused


@dataclass
class Track:
    key: str
    box: Box
    probs: np.ndarray  # smoothed class probabilities
    label: int  # index of the current label
    frames: int = 1
    streak: int = 1  # consecutive frames the current label has led
    settled: bool = False
    last_seen: float = 0.0
    settled_after: int | None = field(default=None)  # frames it took to settle


class Tracker:
    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_gap_seconds: float = 0.7,
        ema: float = 0.5,
        switch_margin: float = 0.15,
        settle_frames: int = 3,
        settle_probability: float = 0.6,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_gap_seconds = max_gap_seconds
        self.ema = ema
        self.switch_margin = switch_margin
        self.settle_frames = settle_frames
        self.settle_probability = settle_probability
        self.tracks: list[Track] = []

    def update(self, boxes: list[Box], probs: np.ndarray, at: float) -> list[Track]:
        """Feed one frame's faces; return the tracks seen in it, in the order of `boxes`."""
        self.tracks = [t for t in self.tracks if at - t.last_seen <= self.max_gap_seconds]
        match = greedy_match([t.box for t in self.tracks], boxes, _affinity, self.iou_threshold)
        assigned = {bi: self.tracks[ti] for ti, bi in match.items()}
        seen = []
        for bi, box in enumerate(boxes):
            track = assigned.get(bi)
            if track is None:
                track = Track(
                    f"t{next(_keys)}", box, probs[bi].astype(np.float64), int(np.argmax(probs[bi]))
                )
                self.tracks.append(track)
            else:
                self._observe(track, box, probs[bi])
            track.last_seen = at
            self._maybe_settle(track)
            seen.append(track)
        return seen

    def _observe(self, track: Track, box: Box, probs: np.ndarray) -> None:
        track.box = box
        track.frames += 1
        track.probs = (1 - self.ema) * track.probs + self.ema * probs
        leader = int(np.argmax(track.probs))
        if (
            leader != track.label
            and track.probs[leader] - track.probs[track.label] >= self.switch_margin
        ):
            track.label = leader
            track.streak = 1
            track.settled = False
        elif leader == track.label:
            track.streak += 1

    def _maybe_settle(self, track: Track) -> None:
        if (
            not track.settled
            and track.streak >= self.settle_frames
            and track.probs[track.label] >= self.settle_probability
        ):
            track.settled = True
            if track.settled_after is None:
                track.settled_after = track.frames


def _affinity(a: Box, b: Box) -> float:
    """IoU, or for boxes that barely overlap, how close their centres are (scaled like IoU)."""
    overlap = iou(a, b)
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    dist = np.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2)
    size = max(aw, ah, bw, bh)
    ratio = min(aw, bw) / max(aw, bw, 1)
    near = max(0.0, 1 - dist / (0.5 * size)) * ratio * 0.5  # at most 0.5: IoU wins when it is good
    return max(overlap, near)
