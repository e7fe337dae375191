"""Re-frame a labelled face of a scene photo as the camera beside a door sees one visitor.

Scene photos hold crowds and faces of every size; the door camera sees one person
filling a good part of a 640x480 frame. A door frame is a 4:3 window around one
face, sized so the face box is 30 % of the window's width, with the face centre
at 42 % of the window's height (a little above the middle: a door camera is aimed
at eye level and the shoulders fill the bottom), edges replicated where the window
leaves the photo, then resized to 640x480.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gate.camera.verdict import Box

FRAME_SIZE = (640, 480)  # width, height: the door camera's default
FACE_SHARE = 0.30  # face box width / window width
FACE_HEIGHT = 0.42  # face centre / window height, from the top


@dataclass(frozen=True)
class DoorWindow:
    """Where a door frame comes from: frame = scale * (photo - origin)."""

    x: float  # window origin in photo pixels
    y: float
    scale: float  # frame pixels per photo pixel

    def matrix(self) -> np.ndarray:
        """The photo-to-frame map as a 3x3 homography (a visit composes more warps on it)."""
        k = self.scale
        return np.array([[k, 0, -k * self.x], [0, k, -k * self.y], [0, 0, 1]], np.float64)

    def box(self, box: Box) -> tuple[float, float, float, float]:
        """A photo box in frame pixels (unclipped, unrounded)."""
        x, y, w, h = box
        k = self.scale
        return (x - self.x) * k, (y - self.y) * k, w * k, h * k


def door_window(face: Box, size: tuple[int, int] = FRAME_SIZE) -> DoorWindow:
    """The window of a photo that frames `face` as the door camera would."""
    x, y, w, h = face
    width = w / FACE_SHARE
    height = width * size[1] / size[0]
    cx, cy = x + w / 2, y + h / 2
    return DoorWindow(cx - width / 2, cy - FACE_HEIGHT * height, size[0] / width)


def door_source(photo: np.ndarray, window: DoorWindow) -> tuple[np.ndarray, np.ndarray]:
    """The photo ready to warp into door frames, and the homography from it to the frame.

    A photo larger than the frame is shrunk first with area averaging, as a camera's
    larger pixels would, so a big face seen small does not alias. Done once, it serves
    every frame of a visit (`warp` then only moves it a little).
    """
    matrix = window.matrix()
    if window.scale >= 1:
        return photo, matrix
    k = window.scale
    small = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    return small, matrix @ np.diag([1 / k, 1 / k, 1.0])


def warp(source: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """One 640x480 frame through a homography, edges replicated where it leaves the photo."""
    return cv2.warpPerspective(
        source, matrix, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def door_frame(photo: np.ndarray, face: Box) -> tuple[np.ndarray, DoorWindow]:
    """The 640x480 door frame of one labelled face, and the window it came from."""
    window = door_window(face)
    return warp(*door_source(photo, window)), window


def boxes_in_frame(window: DoorWindow, boxes: list[Box]) -> list[int]:
    """Indices of the photo boxes that show at least partly in the window's frame."""
    fw, fh = FRAME_SIZE
    shown = []
    for i, box in enumerate(boxes):
        x, y, w, h = window.box(box)
        if x < fw and y < fh and x + w > 0 and y + h > 0:
            shown.append(i)
    return shown


def frame_box(window: DoorWindow, box: Box) -> Box:
    """A photo box in frame pixels, clipped to the frame and rounded (for IoU matching)."""
    fw, fh = FRAME_SIZE
    x, y, w, h = window.box(box)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(fw), x + w), min(float(fh), y + h)
    return round(x0), round(y0), max(0, round(x1 - x0)), max(0, round(y1 - y0))
