"""What the camera tells the controller about each face it follows.

This is the whole contract between the camera room and the controller: the
controller never sees pixels, and the camera never sees doors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MaskLabel(StrEnum):
    MASK = "mask"
    INCORRECT_MASK = "incorrect_mask"  # under the nose or on the chin
    NO_MASK = "no_mask"


Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


@dataclass(frozen=True)
class FaceVerdict:
    """One tracked face in one frame, with its label smoothed over the track."""

    track_key: str  # unique for the life of the process, e.g. "t17"
    box: Box
    label: MaskLabel
    score: float  # smoothed probability of `label`, 0..1
    settled: bool  # hysteresis says the label is stable enough to decide on
    frames: int  # frames this track has been seen in


@dataclass(frozen=True)
class FrameAnalysis:
    """Everything the camera learned from one frame."""

    at: float  # monotonic seconds when the frame was captured
    faces: list[FaceVerdict] = field(default_factory=list)
    ms: float = 0.0  # analysis time
