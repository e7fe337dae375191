"""The project's own mask classifier (ONNX) and the face crop it was trained on.

`face_crop` is shared by training, evaluation and the live pipeline: the
network only works on crops framed the way it saw them in training.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from gate.camera.verdict import Box, MaskLabel
from gate.errors import GateError

MODEL_PATH = Path(__file__).with_name("mask_classifier.onnx")
INPUT_SIZE = 64
# Crop side as a multiple of the (square) BlazeFace box: keeps chin and mask edges in view.
CROP_SCALE = 1.25
# How far the crop centre sits below the box centre, as a share of the box side. A model
# records its own scale and shift in its metadata; these are the values for models without.
CROP_SHIFT = 0.0
# Output order of the network.
LABELS: tuple[MaskLabel, ...] = (MaskLabel.MASK, MaskLabel.INCORRECT_MASK, MaskLabel.NO_MASK)


def crop_window(
    box: Box, scale: float = CROP_SCALE, shift: float = CROP_SHIFT
) -> tuple[float, float, float]:
    """Centre x, centre y and side of the square crop around a detector box."""
    x, y, w, h = box
    side = max(w, h)
    return x + w / 2, y + h / 2 + shift * side, side * scale


def face_crop(
    image: np.ndarray,
    box: Box,
    size: int = INPUT_SIZE,
    scale: float = CROP_SCALE,
    shift: float = CROP_SHIFT,
) -> np.ndarray:
    """Square crop around a face box, resized to `size`, edges padded by replication.

    Works in the image's own channel order; callers pass BGR.
    """
    cx, cy, side = crop_window(box, scale, shift)
    k = size / max(side, 1.0)
    # One affine warp does crop, pad and resize in a single pass.
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], dtype=np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def to_tensor(crops: np.ndarray) -> np.ndarray:
    """uint8 BGR crops (N, H, W, 3) → float32 RGB NCHW in [-1, 1], as in training."""
    x = crops[..., ::-1].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class MaskClassifier:
    """Runs the committed ONNX model on onnxruntime.

    `bias` is added to the log-probabilities before the softmax; the model card
    records the values calibrated on the training split's validation part.
    """

    def __init__(
        self,
        model_path: Path = MODEL_PATH,
        threads: int = 1,
        flip_average: bool = False,
        bias: tuple[float, float, float] | None = None,
    ) -> None:
        import onnxruntime as ort

        if not model_path.is_file():
            raise GateError(f"mask classifier model not found: {model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise GateError(f"cannot load mask classifier {model_path}: {exc}") from None
        first = self._session.get_inputs()[0]
        self._input = first.name
        # The crop side the network was trained on (the input's last dimension).
        self.input_size = first.shape[-1] if isinstance(first.shape[-1], int) else INPUT_SIZE
        meta = self._session.get_modelmeta().custom_metadata_map
        self.bias = np.array(
            bias if bias is not None else [float(v) for v in meta.get("bias", "0,0,0").split(",")],
            dtype=np.float32,
        )
        # The framing the network was trained on.
        self.crop_scale = float(meta.get("crop_scale", CROP_SCALE))
        self.crop_shift = float(meta.get("crop_shift", CROP_SHIFT))
        self.flip_average = flip_average
        self.last_ms = 0.0

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 3) in LABELS order for uint8 BGR crops (N, S, S, 3)."""
        if len(crops) == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        start = time.perf_counter()
        x = to_tensor(crops)
        if self.flip_average:
            x = np.concatenate([x, x[..., ::-1]])
        logits = self._session.run(None, {self._input: np.ascontiguousarray(x)})[0]
        logp = log_softmax(logits)
        if self.flip_average:
            n = len(crops)
            logp = (logp[:n] + logp[n:]) / 2
        z = logp + self.bias
        p = np.exp(log_softmax(z))
        self.last_ms = (time.perf_counter() - start) * 1000
        return p

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The crop of one face, framed as this model was trained."""
        return face_crop(image, box, self.input_size, self.crop_scale, self.crop_shift)

    def classify(self, image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """Probabilities for each face box of a BGR image."""
        if not boxes:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return self.probabilities(np.stack([self.crop(image, b) for b in boxes]))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, computed stably."""
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
