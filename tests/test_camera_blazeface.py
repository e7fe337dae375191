"""The project's fine-tuned BlazeFace: MediaPipe's geometry, and masked faces found at the door."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from gate.camera.blazeface import ANCHORS, INPUT_SIZE, BlazeFaceOnnx, decode, letterbox
from gate.camera.detector import FaceDetector, iou
from gate.camera.models import detector_path
from gate.errors import GateError

SCENES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "face-mask-scenes"


def test_anchors_are_mediapipes_two_grids() -> None:
    """16×16 cells with 2 anchors each, then 8×8 cells with 6, centred in their cells."""
    assert ANCHORS.shape == (896, 2)
    assert np.allclose(ANCHORS[0], [1 / 32, 1 / 32]) and np.allclose(ANCHORS[1], ANCHORS[0])
    assert np.allclose(ANCHORS[2], [3 / 32, 1 / 32])
    assert np.allclose(ANCHORS[512], [1 / 16, 1 / 16]) and np.allclose(ANCHORS[517], ANCHORS[512])
    assert np.allclose(ANCHORS[-1], [15 / 16, 15 / 16])


def test_letterbox_and_decode_map_back_to_image_pixels() -> None:
    """A box the network draws on the 128 px input lands where it should in a 640×480 frame:
    the frame is scaled by 0.2 and sits 16 px below the input's top edge."""
    _, scale, px, py = letterbox(np.zeros((480, 640, 3), np.uint8))
    assert (scale, px, py) == (5.0, 0.0, 80.0)
    raw = np.zeros((1, 16), np.float32)
    raw[0, :4] = [8, -4, 32, 40]  # centre offset from the anchor and size, in input pixels
    boxes, _ = decode(raw, np.array([[0.5, 0.5]], np.float32))
    x0, y0, x1, y1 = boxes[0] * INPUT_SIZE * scale - [px, py, px, py]
    assert np.allclose([x0, y0, x1, y1], [280, 120, 440, 320])


def test_finds_the_face_google_finds_with_the_same_framing(models_dir: Path) -> None:
    """The mask classifier learned Google's boxes, so the fine-tuned detector must draw them."""
    image = astronaut()
    with FaceDetector(detector_path(models_dir.parent)) as google:
        theirs = google.detect(image)
    ours = BlazeFaceOnnx().detect(image)
    assert len(theirs) == len(ours) == 1
    assert iou(ours[0].box, theirs[0].box) > 0.8
    assert len(ours[0].keypoints) == 6


def test_finds_masked_visitors_google_misses_at_the_door(models_dir: Path) -> None:
    """Masked faces of training images, framed as the door camera sees them: Google's
    BlazeFace misses some at its own threshold; the fine-tuned one must find more."""
    from gate.camera.data import read_voc
    from gate.camera.doorframe import door_frame, frame_box

    items = [it for it in read_voc(SCENES) if any(f.label == "mask" for f in it.faces)][:60]
    theirs = ours = total = 0
    mine = BlazeFaceOnnx()
    with FaceDetector(detector_path(models_dir.parent)) as google:
        for item in items:
            image = cv2.imread(str(item.image))
            for face in item.faces:
                if face.label != "mask" or face.box[2] < 60:
                    continue
                frame, window = door_frame(image, face.box)
                box = frame_box(window, face.box)
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                total += 1
                theirs += any(iou(d.box, box) >= 0.4 for d in google.detect(rgb))
                ours += any(iou(d.box, box) >= 0.4 for d in mine.detect(rgb))
    assert total >= 30
    assert ours > theirs and ours / total >= 0.95, (ours, theirs, total)


def test_a_missing_or_broken_model_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="face detector model not found"):
        BlazeFaceOnnx(tmp_path / "nothing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(GateError, match="cannot load face detector") as err:
        BlazeFaceOnnx(broken)
    assert "\n" not in str(err.value)
