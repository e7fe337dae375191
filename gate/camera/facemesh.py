"""Google's FaceMesh landmark network, cut short, as a frozen feature extractor.

The mask classifier's own CNNs learn from 6 k faces; FaceMesh was trained on
far more. Its inner activations, where the network has found the nose and
mouth but not yet turned them into landmarks, feed one member of the mask
classifier (a head the project trains). The network file is never committed:
`gate models fetch` caches it, and this module turns the first part of it into
an ONNX graph in memory each time the classifier loads, so onnxruntime runs it
beside the classifier and no second runtime is needed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from gate.camera.sessions import onnx_session
from gate.errors import GateError

INPUT_SIZE = 192
# The last layer kept: 12 × 12 × 128 activations. The probe in the fifth round of
# MODEL_HISTORY.md tried three cut points; this one gave the best head.
CUT_AT = "p_re_lu_12"
FEATURE_SHAPE = (128, 12, 12)


def trunk_onnx(tflite_path: Path) -> bytes:
    """The network up to `CUT_AT` as a serialized ONNX model.

    Input `crops`: float32 N×3×192×192, RGB in [-1, 1] (the classifier's own
    convention); FaceMesh itself wants [0, 1], so the graph rescales first.
    Output `features`: N×128×12×12.
    """
    try:
        return _convert(tflite_path.read_bytes())
    except (OSError, AttributeError, IndexError, TypeError, ValueError, struct.error) as exc:
        # A damaged flatbuffer fails in any of these ways deep inside the reader.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GateError(f"cannot read FaceMesh model {tflite_path}: {reason}") from None


def _convert(flatbuffer: bytes) -> bytes:
    import tflite
    from onnx import TensorProto, helper

    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    graph = model.Subgraphs(0)
    converter = _Converter(model, graph)
    first = graph.Tensors(graph.Inputs(0)).Name().decode()
    converter.rename[first] = "unit_range"
    converter.constant("half", np.array(0.5, np.float32))
    converter.nodes += [
        helper.make_node("Mul", ["crops", "half"], ["half_range"]),
        helper.make_node("Add", ["half_range", "half"], ["unit_range"]),
    ]
    for index in range(graph.OperatorsLength()):
        if converter.add(graph.Operators(index)) == CUT_AT:
            break
    else:
        raise GateError(f"the FaceMesh model has no layer {CUT_AT}")
    converter.nodes.append(helper.make_node("Identity", [converter.name(CUT_AT)], ["features"]))
    onnx_graph = helper.make_graph(
        converter.nodes,
        "facemesh_trunk",
        [
            helper.make_tensor_value_info(
                "crops", TensorProto.FLOAT, ["n", 3, INPUT_SIZE, INPUT_SIZE]
            )
        ],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", *FEATURE_SHAPE])],
        converter.initializers,
    )
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    return onnx_model.SerializeToString()


class _Converter:
    """Translates the few TFLite operators FaceMesh's first layers use, NHWC → NCHW."""

    def __init__(self, model, graph) -> None:  # tflite.Model, tflite.SubGraph
        import tflite

        self.tflite = tflite
        self.model, self.graph = model, graph
        self.op_names = {
            v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")
        }
        self.nodes: list = []
        self.initializers: list = []
        self.rename: dict[str, str] = {}
        # Constant tensors, dequantized, in TFLite's own layout.
        self.weights: dict[str, np.ndarray] = {}

    def name(self, tensor_name: str) -> str:
        return self.rename.get(tensor_name, tensor_name)

    def constant(self, name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value.astype(dtype), name))
        return name

    def tensor(self, index: int) -> tuple[str, np.ndarray | None]:
        """A tensor's name and, when it is a constant, its value."""
        t = self.graph.Tensors(index)
        name = t.Name().decode()
        if name in self.weights:
            return name, self.weights[name]
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:  # an activation, not a constant
            return name, None
        dtypes = {
            self.tflite.TensorType.FLOAT16: np.float16,
            self.tflite.TensorType.FLOAT32: np.float32,
            self.tflite.TensorType.INT32: np.int32,
        }
        if t.Type() not in dtypes:
            raise GateError(f"FaceMesh tensor {name} has an unsupported type {t.Type()}")
        return name, np.frombuffer(data.tobytes(), dtypes[t.Type()]).reshape(t.ShapeAsNumpy())

    def add(self, op) -> str:
        """Translate one operator; returns the name of its output."""
        from onnx import helper

        code = self.model.OperatorCodes(op.OpcodeIndex())
        kind = self.op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [self.tensor(op.Inputs(j)) for j in range(op.InputsLength())]
        out = self.graph.Tensors(op.Outputs(0)).Name().decode()
        if kind == "DEQUANTIZE":
            self.weights[out] = ins[0][1].astype(np.float32)
            return out
        x = self.name(ins[0][0])
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = self._options(
                op,
                self.tflite.Conv2DOptions
                if kind == "CONV_2D"
                else self.tflite.DepthwiseConv2DOptions,
                out,
            )
            kernel, bias = ins[1][1], ins[2][1]
            if kind == "CONV_2D":  # O, H, W, I → O, I, H, W
                weight, group = kernel.transpose(0, 3, 1, 2), 1
            else:  # 1, H, W, C → C, 1, H, W
                weight, group = kernel.transpose(3, 0, 1, 2), kernel.shape[3]
            self.nodes.append(
                helper.make_node(
                    "Conv",
                    [x, self.constant(f"{out}_w", weight), self.constant(f"{out}_b", bias)],
                    [out],
                    group=group,
                    strides=[options.StrideH(), options.StrideW()],
                    dilations=[options.DilationHFactor(), options.DilationWFactor()],
                    auto_pad=self._pad(options),
                )
            )
        elif kind == "PRELU":  # alpha 1, 1, C → C, 1, 1
            # x + (alpha - 1) · min(x, 0): the same function as ONNX PRelu, which
            # onnxruntime runs three times slower than these broadcast kernels.
            alpha = ins[1][1].reshape(-1, 1, 1)
            zero = self.constant(f"{out}_zero", np.zeros((), np.float32))
            self.nodes += [
                helper.make_node("Min", [x, zero], [f"{out}_neg"]),
                helper.make_node(
                    "Mul", [f"{out}_neg", self.constant(f"{out}_slope", alpha - 1)], [f"{out}_bend"]
                ),
                helper.make_node("Add", [x, f"{out}_bend"], [out]),
            ]
        elif kind == "ADD":
            self.nodes.append(helper.make_node("Add", [x, self.name(ins[1][0])], [out]))
        elif kind == "MAX_POOL_2D":
            options = self._options(op, self.tflite.Pool2DOptions, out)
            self.nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [out],
                    kernel_shape=[options.FilterHeight(), options.FilterWidth()],
                    strides=[options.StrideH(), options.StrideW()],
                    auto_pad=self._pad(options),
                )
            )
        elif kind == "PAD":  # NHWC (before, after) pairs → ONNX NCHW begins then ends
            pads = ins[1][1].reshape(4, 2)[[0, 3, 1, 2]]
            self.nodes.append(
                helper.make_node(
                    "Pad",
                    [x, self.constant(f"{out}_pads", pads.T.reshape(-1), np.int64)],
                    [out],
                    mode="constant",
                )
            )
        else:
            raise GateError(f"FaceMesh layer {out} uses {kind}, which the converter does not know")
        return out

    def _pad(self, options) -> str:
        return "SAME_UPPER" if options.Padding() == self.tflite.Padding.SAME else "VALID"

    def _options(self, op, kind: type, out: str):  # -> an instance of `kind`
        """An operator's options table; refused if it fuses an activation (none here do)."""
        options, table = kind(), op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        if options.FusedActivationFunction() != self.tflite.ActivationFunctionType.NONE:
            raise GateError(f"FaceMesh layer {out} has a fused activation the converter lacks")
        return options


class FaceMeshTrunk:
    """Runs the cut FaceMesh network on onnxruntime: crops in, features out."""

    def __init__(self, tflite_path: Path, threads: int = 1) -> None:
        self._session = onnx_session(trunk_onnx(tflite_path), "FaceMesh trunk", threads)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """float32 N×3×192×192 RGB in [-1, 1] → float32 N×128×12×12."""
        return self._session.run(None, {"crops": np.ascontiguousarray(crops)})[0]
