"""The FaceMesh trunk: rebuilt as ONNX from the fetched TFLite file, checked against LiteRT.

LiteRT (`ai-edge-litert`) is Google's own runtime for the file; it is in the
test extra only, to hold the converter to the network's real output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from gate.camera import facemesh
from gate.camera.classifier import FACEMESH, Framing, MaskClassifier, model_inputs, to_tensor
from gate.camera.models import FACEMESH as FACEMESH_FILE
from gate.camera.models import facemesh_path, fetch_model
from gate.errors import GateError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tflite_path() -> Path:
    fetch_model(REPO / "var", FACEMESH_FILE, progress=False, log=lambda _line: None)
    return facemesh_path(REPO / "var")


def _astronaut_crop() -> np.ndarray:
    """A 192 px BGR crop around the astronaut's face, as the classifier cuts it."""
    rgb = astronaut()
    return Framing(192, 1.5, 0.0, FACEMESH).crop(rgb[..., ::-1].copy(), (170, 60, 100, 100))


def test_trunk_matches_litert_on_a_real_face(tflite_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    crop = _astronaut_crop()
    reference = Interpreter(
        model_path=str(tflite_path),
        experimental_preserve_all_tensors=True,  # read the inner layer we cut at
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    reference.allocate_tensors()
    unit_rgb = crop[..., ::-1].astype(np.float32)[None] / 255.0  # FaceMesh's own input
    reference.set_tensor(reference.get_input_details()[0]["index"], unit_rgb)
    reference.invoke()
    by_name = {d["name"]: d["index"] for d in reference.get_tensor_details()}
    expected = reference.get_tensor(by_name[facemesh.CUT_AT]).transpose(0, 3, 1, 2)
    face_score = reference.get_tensor(reference.get_output_details()[1]["index"])
    assert float(face_score.ravel()[0]) > 5, "FaceMesh should see a face in this crop"

    got = facemesh.FaceMeshTrunk(tflite_path)(to_tensor(crop[None]))
    assert got.shape == (1, *facemesh.FEATURE_SHAPE)
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_trunk_runs_batches_and_sees_the_mirror_image(tflite_path: Path) -> None:
    """A face in a batch gets the features it gets alone; its mirror image gets others."""
    crop = _astronaut_crop()
    trunk = facemesh.FaceMeshTrunk(tflite_path)
    plain, mirrored = trunk(to_tensor(np.stack([crop, crop[:, ::-1].copy()])))
    assert np.allclose(mirrored, trunk(to_tensor(crop[None, :, ::-1].copy()))[0], atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-2)


def test_a_damaged_tflite_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "face_landmark.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(GateError, match="FaceMesh"):
        facemesh.trunk_onnx(bad)


def test_a_facemesh_view_needs_the_trunk() -> None:
    views = [Framing(64), Framing(192, 1.5, 0.0, FACEMESH)]
    tensors = [np.zeros((1, 3, 64, 64), np.float32), np.zeros((1, 3, 192, 192), np.float32)]
    with pytest.raises(GateError, match="gate models fetch"):
        model_inputs(views, tensors, None)
    features = model_inputs(views, tensors, lambda x: x[:, :1, :12, :12])
    assert features[0] is tensors[0] and features[1].shape == (1, 1, 12, 12)


def test_the_committed_model_refuses_to_run_without_facemesh() -> None:
    with pytest.raises(GateError, match="FaceMesh"):
        MaskClassifier()


def test_model_metadata_names_each_views_network() -> None:
    """A FaceMesh view is read back at FaceMesh's own side; an unknown network is refused."""
    from gate.camera.classifier import framing_metadata, read_framings

    views = [Framing(64), Framing(192, 1.5, 0.0, FACEMESH)]
    meta = framing_metadata(views)
    assert meta["crop_net"] == ",facemesh"
    assert read_framings([64, 12], meta) == views  # the feature input's last side is 12
    assert "crop_net" not in framing_metadata(views[:1])  # pixel-only models stay as before
    with pytest.raises(GateError, match="unknown feature network"):
        read_framings([64, 12], meta | {"crop_net": ",lidar"})
