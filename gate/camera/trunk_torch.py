"""FaceMesh's trunk in torch, so training can tune its last stages.

It runs the very ONNX graph `facemesh.trunk_onnx` builds, node by node, so the
network trained is the network the gate runs. Only the layers from
`facemesh.TUNE_FROM` on learn; `tuning()` returns how far their weights moved,
which is all a tuned model keeps. Needs the optional `[train]` extra (torch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from gate.camera import facemesh
from gate.errors import GateError


class TrainableTrunk(nn.Module):
    """Pixels (N×3×192×192 in [-1, 1]) → FaceMesh features (N×128×12×12)."""

    def __init__(self, tflite_path: Path) -> None:
        super().__init__()
        graph = onnx.load_from_string(facemesh.trunk_onnx(tflite_path)).graph
        self.nodes = list(graph.node)
        first = next(
            (i for i, n in enumerate(self.nodes) if n.output[0] == facemesh.TUNE_FROM), None
        )
        if first is None:
            raise GateError(f"the FaceMesh trunk has no layer {facemesh.TUNE_FROM}")
        tuned_names = {name for node in self.nodes[first:] for name in node.input}
        self.weights = nn.ParameterDict()
        self.base: dict[str, np.ndarray] = {}
        self.frozen: dict[str, torch.Tensor] = {}
        for init in graph.initializer:
            value = numpy_helper.to_array(init).copy()
            if init.name in tuned_names and init.name.endswith(("_w", "_b")):
                self.base[init.name] = value.copy()  # the parameter below changes in place
                self.weights[_key(init.name)] = nn.Parameter(torch.from_numpy(value))
            else:
                self.frozen[init.name] = torch.from_numpy(value)

    def tuning(self) -> dict[str, np.ndarray]:
        """The tuned weights minus Google's: what a tuned model stores."""
        return {
            name: self.weights[_key(name)].detach().numpy() - base
            for name, base in self.base.items()
        }

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {"crops": crops}

        def value(name: str) -> torch.Tensor:
            if name in values:
                return values[name]
            return self.weights[_key(name)] if name in self.base else self.frozen[name]

        for node in self.nodes:
            x, *rest = (value(name) for name in node.input)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            same = attrs.get("auto_pad") == b"SAME_UPPER"
            if node.op_type == "Conv":
                weight, bias = rest
                strides, dilations = attrs["strides"], attrs["dilations"]
                if same:
                    x = _same_upper(x, weight.shape[2:], strides, dilations, 0.0)
                out = F.conv2d(x, weight, bias, strides, 0, dilations, attrs["group"])
            elif node.op_type == "MaxPool":
                kernel, strides = attrs["kernel_shape"], attrs["strides"]
                if same:
                    x = _same_upper(x, kernel, strides, [1, 1], -math.inf)
                out = F.max_pool2d(x, kernel, strides)
            elif node.op_type == "Pad":  # ONNX begins then ends, NCHW → F.pad's last-axis-first
                pads = rest[0].tolist()
                half = len(pads) // 2
                out = F.pad(
                    x,
                    [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])],
                )
            elif node.op_type == "Min":
                out = torch.minimum(x, rest[0])
            elif node.op_type == "Mul":
                out = x * rest[0]
            elif node.op_type == "Add":
                out = x + rest[0]
            elif node.op_type == "Identity":
                out = x
            else:
                raise GateError(f"the FaceMesh trunk uses {node.op_type}, which training lacks")
            values[node.output[0]] = out
        return values["features"]


def _key(name: str) -> str:
    """A parameter name torch accepts for an initializer."""
    return name.replace(".", "_")


def _same_upper(
    x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int], fill: float
) -> torch.Tensor:
    """Pad as ONNX's SAME_UPPER does (any odd pixel after), which torch lacks."""
    pads: list[int] = []
    for axis in (1, 0):  # F.pad wants the width first
        size = x.shape[2 + axis]
        reach = (kernel[axis] - 1) * dilations[axis] + 1
        total = max((math.ceil(size / strides[axis]) - 1) * strides[axis] + reach - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=fill) if any(pads) else x
