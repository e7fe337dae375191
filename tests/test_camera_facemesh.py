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


def _feature_head(path: Path, weights: np.ndarray, meta: dict[str, str]) -> Path:
    """The smallest honest FaceMesh head: mean activation per channel times `weights`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        ],
        path.stem,
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["n", *facemesh.FEATURE_SHAPE]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(weights.astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(3, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


# A change to the last layer's bias, as a tuned model stores it.
TUNING = {"conv2d_12_b": np.linspace(-0.5, 0.5, 128, dtype=np.float32)}
FACEMESH_VIEW = {"crop_net": FACEMESH, "crop_scale": "1.5", "crop_shift": "0"}


def test_a_tuning_moves_the_trunk_and_survives_the_metadata(tflite_path: Path) -> None:
    """A tuned model stores only its change to Google's weights; the trunk adds it back."""
    crops = to_tensor(_astronaut_crop()[None])
    frozen = facemesh.FaceMeshTrunk(tflite_path)(crops)
    stored = facemesh.read_tuning({facemesh.TUNING_KEY: facemesh.tuning_metadata(TUNING)})
    assert stored is not None and np.array_equal(stored["conv2d_12_b"], TUNING["conv2d_12_b"])
    tuned = facemesh.FaceMeshTrunk(tflite_path, tuning=stored)(crops)
    assert not np.allclose(tuned, frozen, atol=1e-2)
    unchanged = {"conv2d_12_b": np.zeros(128, np.float32)}
    assert np.allclose(facemesh.FaceMeshTrunk(tflite_path, tuning=unchanged)(crops), frozen)
    assert facemesh.read_tuning({}) is None


def test_a_bad_tuning_is_one_clear_error(tflite_path: Path) -> None:
    with pytest.raises(GateError, match=r"weights the trunk lacks: \[.conv2d_99_b.\]"):
        facemesh.trunk_onnx(tflite_path, {"conv2d_99_b": np.zeros(128, np.float32)})
    with pytest.raises(GateError, match=r"tuning of conv2d_12_b has shape \(3,\)"):
        facemesh.trunk_onnx(tflite_path, {"conv2d_12_b": np.zeros(3, np.float32)})
    for damaged in ("not base64!", "bm90IGFuIG5weg=="):  # the second: base64 of no .npz
        with pytest.raises(GateError, match="bad FaceMesh tuning"):
            facemesh.read_tuning({facemesh.TUNING_KEY: damaged})


def test_the_classifier_runs_the_trunk_its_model_tunes(tmp_path: Path, tflite_path: Path) -> None:
    """The same head gives other answers on a tuned trunk, and exactly the tuned features'."""
    from gate.camera.classifier import log_softmax

    weights = np.random.default_rng(5).normal(0, 1, (128, 3))
    entry = {facemesh.TUNING_KEY: facemesh.tuning_metadata(TUNING)}
    frozen, tuned = (
        MaskClassifier(
            _feature_head(tmp_path / f"{name}.onnx", weights, meta),
            bias=(0, 0, 0),
            facemesh_model=tflite_path,
        )
        for name, meta in (("frozen", FACEMESH_VIEW), ("tuned", FACEMESH_VIEW | entry))
    )
    crop = _astronaut_crop()[None]
    features = facemesh.FaceMeshTrunk(tflite_path, tuning=TUNING)(to_tensor(crop))
    expected = np.exp(log_softmax(features.mean((2, 3)) @ weights))
    assert np.allclose(tuned.probabilities(crop), expected, atol=1e-4)
    assert not np.allclose(frozen.probabilities(crop), expected, atol=1e-3)


def test_merge_refuses_members_that_tune_facemesh_differently(tmp_path: Path) -> None:
    """One merged model runs one FaceMesh trunk, so its members must agree on it."""
    from gate.camera.train import merge

    weights = np.ones((128, 3))
    entry = {facemesh.TUNING_KEY: facemesh.tuning_metadata(TUNING)}
    frozen = _feature_head(tmp_path / "frozen.onnx", weights, FACEMESH_VIEW)
    tuned = _feature_head(tmp_path / "tuned.onnx", weights, FACEMESH_VIEW | entry)
    with pytest.raises(GateError, match=r"tuned differently.*frozen\.onnx, .*tuned\.onnx"):
        merge(tmp_path, tmp_path / "det.tflite", [frozen, tuned], tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
