"""The project's own mask classifier (ONNX) and the face crops it was trained on.

`face_crop` is shared by training, evaluation and the live pipeline: the
network only works on crops framed the way it saw them in training. A model
may take several views of each face (one ONNX input per framing); its
metadata records how each view is framed, and which views go through the
frozen FaceMesh network first (`gate.camera.facemesh`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gate.camera import facemesh
from gate.camera.sessions import onnx_session
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


PIXELS = ""  # a view whose crops go straight into the model
FACEMESH = "facemesh"  # a view whose crops go through the FaceMesh trunk first


@dataclass(frozen=True)
class Framing:
    """How a face is cut out for one network input: side in pixels, the crop's scale
    and downward shift in box sides (see `crop_window`), and what the model reads
    from it: the pixels, or FaceMesh features of them."""

    size: int = INPUT_SIZE
    scale: float = CROP_SCALE
    shift: float = CROP_SHIFT
    net: str = PIXELS

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return face_crop(image, box, self.size, self.scale, self.shift)

    @property
    def patch_side(self) -> int:
        """Side of the training patches this view is cut from: twice its own for the
        small CNNs' random zoom; FaceMesh views reuse 192 px patches (a 0.7 GB cache)."""
        return self.size if self.net == FACEMESH else 2 * self.size


def bias_metadata(bias: Sequence[float]) -> str:
    """The `bias` metadata entry: log-prior offsets in LABELS order."""
    return ",".join(f"{b:.3f}" for b in bias)


def read_bias(meta: dict[str, str]) -> np.ndarray:
    """The offsets a model's `bias` metadata entry holds (none: zeros)."""
    return np.array([float(v) for v in meta.get("bias", "0,0,0").split(",")], dtype=np.float32)


def framing_metadata(views: Sequence[Framing]) -> dict[str, str]:
    """Model metadata for its inputs' framings, in input order."""
    meta = {
        "input": "; ".join(
            f"FaceMesh features of RGB {v.size}x{v.size}"
            if v.net == FACEMESH
            else f"RGB {v.size}x{v.size} in [-1,1]"
            for v in views
        ),
        "crop_scale": ",".join(f"{v.scale:g}" for v in views),
        "crop_shift": ",".join(f"{v.shift:g}" for v in views),
    }
    if any(v.net != PIXELS for v in views):
        meta["crop_net"] = ",".join(v.net for v in views)
    return meta


def read_framings(sizes: Sequence[int], meta: dict[str, str]) -> list[Framing]:
    """The framing of each model input, from its sizes and metadata (defaults where absent).

    A FaceMesh view's input holds features, so its crop side is FaceMesh's own."""
    scales = meta.get("crop_scale", ",".join([f"{CROP_SCALE}"] * len(sizes))).split(",")
    shifts = meta.get("crop_shift", ",".join([f"{CROP_SHIFT}"] * len(sizes))).split(",")
    nets = meta.get("crop_net", ",".join([PIXELS] * len(sizes))).split(",")
    if not len(scales) == len(shifts) == len(nets) == len(sizes):
        raise GateError(f"model metadata frames {len(scales)} views but it has {len(sizes)} inputs")
    if not set(nets) <= {PIXELS, FACEMESH}:
        raise GateError(f"model metadata names an unknown feature network: {nets}")
    try:
        return [
            Framing(facemesh.INPUT_SIZE if net == FACEMESH else n, float(a), float(b), net)
            for n, a, b, net in zip(sizes, scales, shifts, nets, strict=True)
        ]
    except ValueError:
        raise GateError(f"model metadata holds a bad crop framing: {scales} / {shifts}") from None


def trunk_for(
    views: Sequence[Framing], facemesh_model: Path | None, threads: int = 1
) -> facemesh.FaceMeshTrunk | None:
    """The FaceMesh trunk when any view reads FaceMesh features, else None."""
    if not any(v.net == FACEMESH for v in views):
        return None
    if facemesh_model is None:
        raise GateError("this mask model needs the FaceMesh network: run `gate models fetch`")
    return facemesh.FaceMeshTrunk(facemesh_model, threads)


def model_inputs(
    views: Sequence[Framing], tensors: Sequence[np.ndarray], trunk: Callable | None
) -> list[np.ndarray]:
    """Each view's crop tensor as the model reads it: FaceMesh views through `trunk`.

    The one place this is decided, for inference, `gate eval` and training alike.
    """
    if trunk is None and any(v.net == FACEMESH for v in views):
        raise GateError("this mask model needs the FaceMesh network: run `gate models fetch`")
    return [trunk(x) if v.net == FACEMESH else x for v, x in zip(views, tensors, strict=True)]


def to_tensor(crops: np.ndarray) -> np.ndarray:
    """uint8 BGR crops (N, H, W, 3) → float32 RGB NCHW in [-1, 1], as in training."""
    x = crops[..., ::-1].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class MaskClassifier:
    """Runs the committed ONNX model on onnxruntime.

    `bias` is added to the log-probabilities before the softmax; the model card
    records the values calibrated on the training split's validation part.
    `facemesh_model` is the cached FaceMesh network, for models with a FaceMesh view.
    """

    def __init__(
        self,
        model_path: Path = MODEL_PATH,
        threads: int = 1,
        bias: tuple[float, float, float] | None = None,
        facemesh_model: Path | None = None,
    ) -> None:
        self._session = onnx_session(model_path, "mask classifier", threads)
        inputs = self._session.get_inputs()
        self._inputs = [i.name for i in inputs]
        meta = self._session.get_modelmeta().custom_metadata_map
        # The views the network was trained on: each input's side (its last dimension)
        # and the framing its metadata records.
        sizes = [i.shape[-1] if isinstance(i.shape[-1], int) else INPUT_SIZE for i in inputs]
        self.views = read_framings(sizes, meta)
        self._trunk = trunk_for(self.views, facemesh_model, threads)
        self.bias = read_bias(meta) if bias is None else np.array(bias, dtype=np.float32)
        self.last_ms = 0.0

    def probabilities(self, *views: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 3) in LABELS order, from uint8 BGR crops (N, S, S, 3) of
        the same N faces for each of the model's views, in `self.views` order."""
        if len(views) != len(self._inputs):
            raise ValueError(f"the model takes {len(self._inputs)} views, got {len(views)}")
        n = len(views[0])
        if n == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        start = time.perf_counter()
        inputs = model_inputs(self.views, [to_tensor(crops) for crops in views], self._trunk)
        logp = plain_logp(self._run, inputs)
        z = logp + self.bias
        p = np.exp(log_softmax(z))
        self.last_ms = (time.perf_counter() - start) * 1000
        return p

    def _run(self, inputs: list[np.ndarray]) -> np.ndarray:
        return self._session.run(None, dict(zip(self._inputs, inputs, strict=True)))[0]

    def classify(self, image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """Probabilities for each face box of a BGR image."""
        if not boxes:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return self.probabilities(
            *(np.stack([v.crop(image, b) for b in boxes]) for v in self.views)
        )


def plain_logp(
    run: Callable[[list[np.ndarray]], np.ndarray], inputs: list[np.ndarray]
) -> np.ndarray:
    """Log-probabilities of a network `run` (its float inputs, one per view -> logits)."""
    return log_softmax(run([np.ascontiguousarray(x) for x in inputs]))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, computed stably."""
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))
