"""Door framing: the geometry of the re-framed face, and `gate eval --door` on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gate.camera.doorframe import (
    FACE_HEIGHT,
    FACE_SHARE,
    FRAME_SIZE,
    boxes_in_frame,
    door_frame,
    frame_box,
)
from gate.cli import app
from gate.errors import GateError

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "datasets" / "face-mask-scenes"

DOOR_KEYS = {
    "masked_found",
    "found_masked_admitted",
    "masked_found_and_admitted",
    "improper_refused",
    "improper_found",
    "prompt_accuracy",
    "false_detections_per_frame",
    "ms_per_frame_p50",
    "ms_per_frame_p99",
    "confusion",
    "by_size",
}


def _white_box_photo(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A grey photo with the 'face' as a white rectangle, its edges on whole pixels."""
    photo = np.full((size[1], size[0], 3), 90, np.uint8)
    x, y, w, h = box
    photo[y : y + h, x : x + w] = 255
    return photo


def _white_extent(frame: np.ndarray) -> tuple[float, float, float, float]:
    """x, y, width, height of the frame's bright area, to sub-pixel (half-bright edges)."""
    bright = frame[:, :, 0].astype(np.float32)
    weight = np.clip((bright - 90) / (255 - 90), 0, 1)
    cols, rows = weight.max(axis=0), weight.max(axis=1)
    xs, ys = np.nonzero(cols > 0.5)[0], np.nonzero(rows > 0.5)[0]
    return xs[0], ys[0], xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0]


@pytest.mark.parametrize(
    "box",
    [
        (300, 200, 80, 100),  # small face: the window is enlarged
        (200, 150, 400, 480),  # a face larger than the frame's 30 %: the photo is shrunk
    ],
)
def test_face_fills_thirty_percent_a_little_above_centre(box: tuple[int, int, int, int]) -> None:
    photo = _white_box_photo((1000, 900), box)
    frame, window = door_frame(photo, box)
    assert frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    x, y, w, h = _white_extent(frame)
    assert abs(w - FACE_SHARE * FRAME_SIZE[0]) <= 2  # 192 px of 640
    assert abs(x + w / 2 - FRAME_SIZE[0] / 2) <= 2
    assert abs(y + h / 2 - FACE_HEIGHT * FRAME_SIZE[1]) <= 2  # 202 px of 480: above centre
    assert abs(h - box[3] * window.scale) <= 2  # not stretched: one scale for both axes
    fx, fy, fw, fh = frame_box(window, box)
    assert abs(fx - x) <= 1 and abs(fy - y) <= 1 and abs(fw - w) <= 2 and abs(fh - h) <= 2


def test_edges_are_replicated_where_the_window_leaves_the_photo() -> None:
    """A face in the photo's corner: the window reaches past the photo, and what lies
    beyond repeats the photo's edge pixels (no black border for the detector to see)."""
    photo = np.zeros((400, 400, 3), np.uint8)
    photo[:, :] = (np.arange(400) % 200 + 30)[None, :, None]  # a ramp, never 0
    frame, window = door_frame(photo, (5, 5, 90, 110))
    assert window.x < 0 and window.y < 0
    assert frame.min() >= 30
    left = round(-window.x * window.scale)  # frame columns left of the photo
    assert np.ptp(frame[:, : left - 2, 0].astype(int), axis=1).max() <= 1  # flat rows


def test_other_faces_in_the_window_are_kept_others_left_out() -> None:
    target, beside, far = (400, 300, 100, 120), (560, 300, 100, 120), (50, 50, 100, 120)
    _, window = door_frame(np.zeros((800, 1200, 3), np.uint8), target)
    assert boxes_in_frame(window, [target, beside, far]) == [0, 1]


def test_door_eval_reports_every_figure(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["eval", str(SCENES), "--door", "--split", "test", "--limit", "8", "--json",
         "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report.keys() >= DOOR_KEYS
    assert report["n_faces"] == 8 and report["split"] == "test" and report["min_face"] == 60
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 8
    assert sum(band["n_faces"] for band in report["by_size"].values()) == 8
    for key in ("masked_found", "improper_refused", "improper_found"):
        assert report[key] is None or 0 <= report[key] <= 1
    assert report["ms_per_frame_p50"] > 0
    assert report["masked_found"] is not None and report["improper_refused"] is not None


def test_door_eval_text_is_readable(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["eval", str(SCENES), "--door", "--limit", "3", "--min-face", "100",
         "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "masked_found_and_admitted" in result.output and "confusion mask:" in result.output
    assert "min_face                     100" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--door", "--visits"], "give one of them"),
        (["--visits", "--visits-per-face", "0"], "at least 1"),
        (["--door", "--limit", "0"], "at least 1"),
        (["--door", "--min-face", "0"], "at least 1"),
        (["--door", "--misses", "{tmp}/misses"], "scene evaluation only"),
        (["--door", "--split", "validation"], "unknown split"),
        (["--door", "--path", "{tmp}"], "not a VOC set"),
        (["--visits", "--path", "{tmp}/missing"], "not found"),
    ],
)
def test_bad_door_and_visit_arguments_are_one_line_errors(
    data_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    path = str(SCENES)
    if "--path" in args:
        at = args.index("--path")
        path, args = args[at + 1], args[:at] + args[at + 2 :]
    args = [a.format(tmp=tmp_path) for a in args]
    command = ["eval", path.format(tmp=tmp_path), *args, "--data-dir", str(data_dir)]
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, GateError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "misses").exists()


def test_door_frames_of_a_real_photo_are_640_by_480() -> None:
    from gate.camera.evaluate import door_faces

    faces = door_faces(SCENES, "test", 60, 4)
    assert len(faces) == 4 and all(d.face.box[2] >= 60 for d in faces)
    for door in faces:
        frame, window = door_frame(cv2.imread(str(door.item.image)), door.face.box)
        assert frame.shape == (480, 640, 3)
        assert abs(frame_box(window, door.face.box)[2] - 192) <= 1
