"""`gate models quantize`: the mask networks in 8-bit integers, for a faster frame.

The classifier's own networks (not FaceMesh's layers, which the gate rebuilds from
the fetched file at start) are about half of the per-face time. onnxruntime runs
them in int8 at about 0.6 of the float time on this AVX2 CPU. Weights are int8 per
output channel; activations are uint8, with ranges measured on training faces
outside the validation part, so the validation figures stay an honest check.

Needs the optional `[train]` extra (torch) to cut the calibration crops.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gate.camera.classifier import bias_metadata, read_bias, trunk_for
from gate.errors import GateError

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}
CALIBRATION_FACES = 512
CALIBRATION_SEED = 0


def is_quantized(model) -> bool:  # model: onnx.ModelProto
    return any(node.op_type in QUANTIZED_OPS for node in model.graph.node)


def float32_model(model) -> object:  # onnx.ModelProto -> onnx.ModelProto
    """The same graph with float16-stored weights turned back into float32 initializers.

    `gate models merge` stores weights as float16 behind a Cast; the quantizer must see
    the weights themselves to give them per-channel int8 scales.
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    halves = {i.name: i for i in out.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    casts = [n for n in out.graph.node if n.op_type == "Cast" and n.input[0] in halves]
    for cast in casts:
        weight = numpy_helper.to_array(halves[cast.input[0]]).astype(np.float32)
        out.graph.initializer.append(numpy_helper.from_array(weight, cast.output[0]))
        out.graph.node.remove(cast)
    for name in {c.input[0] for c in casts}:
        out.graph.initializer.remove(halves[name])
    return out


def quantized(model, calibration: Sequence[list[np.ndarray]]) -> object:
    """Static int8 quantization of a float model (onnx.ModelProto -> onnx.ModelProto).

    `calibration` is a sequence of feeds, each one array per model input, from which
    the activation ranges are measured. The model's metadata (labels, bias, framings,
    member count) is carried over unchanged.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if is_quantized(model):
        raise GateError("this model is already quantized; quantize the float model")
    names = [i.name for i in model.graph.input]

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self._feeds, None)
            return None if feed is None else dict(zip(names, feed, strict=True))

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, target = (Path(tmp) / f"{n}.onnx" for n in ("float", "prep", "int8"))
        onnx.save(float32_model(model), str(source))
        # Shape inference and graph clean-up first, as onnxruntime's quantizer advises.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            # AVX2 without VNNI multiplies uint8 by int8 in 16-bit sums that can saturate;
            # 7-bit weights avoid that (onnxruntime's advice for such CPUs).
            reduce_range=True,
        )  # fmt: skip
        result = onnx.load(str(target))
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    return result


def quantize(
    datasets: Path,
    detector_model: Path,
    model_path: Path,
    out: Path,
    log: Callable[[str], None] = print,
    cache: Path | None = None,
    facemesh_model: Path | None = None,
    bias: tuple[float, float, float] | None = None,
) -> dict:
    """Quantize a merged model on training faces; report both models on the validation part.

    The report holds each model's validation figures with the bias (the model's own, or
    `bias`, which then replaces it in the int8 model's metadata) and how many validation
    faces the two label alike, so the int8 model is judged before use.
    """
    import onnx

    from gate.camera.train import (
        _framings,
        _onnx_val_logp,
        _require_torch,
        cached_inputs,
        load_samples,
        val_scores,
    )

    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # onnx raises protobuf, OS and its own errors
        raise GateError(f"cannot read model {model_path}: {exc}") from None
    if is_quantized(model):
        raise GateError(f"{model_path} is already quantized; quantize the float model")
    _require_torch()
    views = _framings(model)
    trunk = trunk_for(views, facemesh_model)
    samples = load_samples(datasets, detector_model, log, max(v.patch_side for v in views), cache)
    is_train, is_val = samples.parts()
    rng = np.random.default_rng(CALIBRATION_SEED)
    pool = np.flatnonzero(is_train)
    picked = np.zeros(len(is_train), bool)
    picked[rng.choice(pool, min(CALIBRATION_FACES, len(pool)), replace=False)] = True
    calibration = cached_inputs(samples, picked, views, trunk)
    feeds = [[x[i : i + 1] for x in calibration] for i in range(int(picked.sum()))]
    log(f"measuring activation ranges on {len(feeds)} training faces")
    small = quantized(model, feeds)
    meta = {p.key: p.value for p in model.metadata_props}
    offsets = read_bias(meta) if bias is None else np.array(bias, np.float32)
    kept = [p for p in small.metadata_props if p.key != "bias"]
    del small.metadata_props[:]
    small.metadata_props.extend(kept)
    small.metadata_props.add(key="bias", value=bias_metadata(offsets))
    onnx.save(small, str(out))

    val_inputs, y_val = cached_inputs(samples, is_val, views, trunk), samples.labels[is_val]
    logp_float, logp_int8 = (_onnx_val_logp(m, val_inputs) for m in (model, small))
    same = int(((logp_float + offsets).argmax(1) == (logp_int8 + offsets).argmax(1)).sum())
    report = {
        "source": str(model_path),
        # A path names where the float model was, the digest which model it was.
        "source_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "calibration_faces": len(feeds),
        "bias": offsets.tolist(),
        "n_val": int(is_val.sum()),
        "val_float": val_scores(logp_float, y_val, offsets),
        "val_int8": val_scores(logp_int8, y_val, offsets),
        "val_same_label": same,
        "bytes": {"float": model_path.stat().st_size, "int8": out.stat().st_size},
    }
    out.with_suffix(".quantize.json").write_text(json.dumps(report, indent=1))
    log(f"wrote {out}: {same} of {int(is_val.sum())} validation faces labelled alike")
    return report
