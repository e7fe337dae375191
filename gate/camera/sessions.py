"""One way to open an onnxruntime session, for every network the camera room runs."""

from __future__ import annotations

from pathlib import Path

from gate.errors import GateError


def onnx_session(model: Path | bytes, what: str, threads: int = 1):  # -> ort.InferenceSession
    """A CPU session with `threads` threads and no chatter. A model file that is missing
    or will not load is one GateError line naming `what`."""
    import onnxruntime as ort

    if isinstance(model, Path) and not model.is_file():
        raise GateError(f"{what} model not found: {model}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        name = model if isinstance(model, Path) else "(built in memory)"
        raise GateError(f"cannot load {what} {name}: {exc}") from None
