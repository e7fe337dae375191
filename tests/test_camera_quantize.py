"""`gate models quantize`: an int8 model that labels faces as its float model does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gate.camera.classifier import MaskClassifier, framing_metadata, read_framings
from gate.errors import GateError


def conv_classifier(path: Path, seed: int, half: bool = False) -> Path:
    """A small real CNN (conv, ReLU, conv, pool, linear) with fixed random weights,
    its weights optionally stored as float16 behind a Cast, as `gate models merge` writes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, 8),
        "w2": rng.normal(0, 0.2, (8, 8, 3, 3)),
        "b2": rng.normal(0, 0.1, 8),
        "fc": rng.normal(0, 8.0, (3, 8)),
        "fb": np.zeros(3),
    }
    nodes, initializers = [], []
    for name, value in weights.items():
        if half:
            initializers.append(numpy_helper.from_array(value.astype(np.float16), f"{name}_f16"))
            nodes.append(helper.make_node("Cast", [f"{name}_f16"], [name], to=TensorProto.FLOAT))
        else:
            initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
    nodes += [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"labels": "mask,incorrect_mask,no_mask", "bias": "0.000,0.250,0.500", "members": "2"}
    meta |= framing_metadata(read_framings([64], {"crop_scale": "1.5", "crop_shift": "0.1"}))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def _crops(seed: int, n: int) -> np.ndarray:
    """Smooth random images (upscaled noise) of varied colour and contrast."""
    import cv2

    rng = np.random.default_rng(seed)
    tint = rng.uniform(0, 255, (n, 1, 1, 3))
    contrast = rng.uniform(0, 1, (n, 1, 1, 1))
    noise = np.clip(tint + contrast * rng.normal(0, 80, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    return np.stack([cv2.resize(x, (64, 64), interpolation=cv2.INTER_CUBIC) for x in noise])


@pytest.mark.parametrize("half", [False, True])
def test_int8_model_labels_like_the_float_model(tmp_path: Path, half: bool) -> None:
    import onnx

    from gate.camera.classifier import to_tensor
    from gate.camera.quantize import is_quantized, quantized

    source = onnx.load(conv_classifier(tmp_path / "float.onnx", seed=7, half=half))
    calibration = [[to_tensor(c[None])] for c in _crops(1, 64)]
    small = quantized(source, calibration)
    assert is_quantized(small) and not is_quantized(source)
    int8_weights = [i for i in small.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 3  # both convolutions and the linear layer
    path = tmp_path / "int8.onnx"
    onnx.save(small, path)

    faces = _crops(2, 200)  # not the calibration images
    exact, fast = MaskClassifier(tmp_path / "float.onnx"), MaskClassifier(path)
    assert fast.views == exact.views and np.allclose(fast.bias, [0, 0.25, 0.5])
    p_float, p_int8 = exact.probabilities(faces), fast.probabilities(faces)
    assert len(set(p_float.argmax(1))) == 3, "the test needs faces of every label"
    assert (p_float.argmax(1) == p_int8.argmax(1)).mean() >= 0.95
    assert np.abs(p_float - p_int8).mean() < 0.02
    assert {p.key: p.value for p in small.metadata_props}["members"] == "2"


def test_a_quantized_model_is_not_quantized_or_merged_again(tmp_path: Path) -> None:
    import onnx

    from gate.camera.classifier import to_tensor
    from gate.camera.quantize import quantize, quantized
    from gate.camera.train import merge

    source = onnx.load(conv_classifier(tmp_path / "float.onnx", seed=6))
    small = quantized(source, [[to_tensor(c[None])] for c in _crops(3, 8)])
    onnx.save(small, tmp_path / "int8.onnx")
    with pytest.raises(GateError, match="already quantized"):
        quantized(small, [])
    with pytest.raises(GateError, match=r"int8\.onnx is already quantized"):
        quantize(tmp_path, tmp_path / "det.tflite", tmp_path / "int8.onnx", tmp_path / "o.onnx")
    with pytest.raises(GateError, match=r"int8\.onnx is quantized; merge the float models"):
        merge(tmp_path, tmp_path / "det.tflite", [tmp_path / "float.onnx", tmp_path / "int8.onnx"],
              tmp_path / "o.onnx")  # fmt: skip
    assert not (tmp_path / "o.onnx").exists()
