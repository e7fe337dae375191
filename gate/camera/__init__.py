"""Frame sources, face detection, the mask classifier, tracking and the visit's verdict."""

import os

# onnxruntime's Linux wheels (1.32 here) keep a device ID under ~/.cache and send usage
# events to Microsoft unless this is set before the library loads. A gate in a public
# building phones no one, so every part of the gate that runs ONNX imports it after this.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
