"""`gate bench vision`: how long one 640x480 frame with one face takes on one core."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gate.camera.detector import FaceDetector
from gate.camera.models import detector_path
from gate.camera.pipeline import Vision
from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import MaskLabel
from gate.config import CameraSettings


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin this process to a single CPU while measuring (MediaPipe has no thread knob)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        os.sched_setaffinity(0, before)


def run_vision_bench(data_dir: Path, frames: int = 300, warmup: int = 20) -> dict:
    """Per-frame `Vision.analyze` time: p50, p99 and the frame rate it allows.

    Google's original BlazeFace (MediaPipe Tasks, the detector the gate ran before
    its own fine-tuned one) runs in the same loop, frame by frame in turn, so the
    ratio between the two holds however busy the machine is.
    """
    camera = SimulatedCamera(
        [SimVisitor("bench", ((60.0, MaskLabel.MASK),))], clock=lambda: 0.0, start_at=0.0
    )
    # A handful of distinct frames (the visitor sways), cycled.
    scene = [camera.render(t) for t in np.linspace(0.5, 30, 16)]
    with one_core():
        ours = Vision(CameraSettings(), data_dir)
        google = Vision(CameraSettings(), data_dir, detector=FaceDetector(detector_path(data_dir)))
        try:
            times: dict[str, list[float]] = {"ours": [], "google": []}
            faces = 0
            for i in range(warmup + frames):
                for name, vision in (("ours", ours), ("google", google)):
                    start = time.perf_counter()
                    analysis = vision.analyze(scene[i % len(scene)], at=i / 15)
                    elapsed = (time.perf_counter() - start) * 1000
                    if i >= warmup:
                        times[name].append(elapsed)
                        faces += len(analysis.faces) if name == "ours" else 0
        finally:
            ours.close()
            google.close()
    t, g = np.array(times["ours"]), np.array(times["google"])
    return {
        "p50_ms": round(float(np.percentile(t, 50)), 2),
        "p99_ms": round(float(np.percentile(t, 99)), 2),
        "fps": round(1000 / float(t.mean()), 1),
        "frames": frames,
        "faces_per_frame": round(faces / frames, 2),
        "google_detector_p50_ms": round(float(np.percentile(g, 50)), 2),
        "google_detector_p99_ms": round(float(np.percentile(g, 99)), 2),
        "ratio_p50": round(float(np.percentile(t, 50) / np.percentile(g, 50)), 3),
    }


def run_simulated_check(data_dir: Path, looks: int = 10, seconds: float = 2.0) -> dict:
    """Per-state accuracy and decision latency on the simulated visitors, real models throughout.

    Each look is a visitor with its own position, size and lighting; frames come at 15 fps.
    """
    vision = Vision(CameraSettings(), data_dir)
    per_state: dict[str, dict] = {}
    try:
        for label in MaskLabel:
            frames = found = right = settled_right = 0
            latency = []
            for look in range(looks):
                visitor = SimVisitor(f"{label}-{look}", ((seconds, label),))
                camera = SimulatedCamera([visitor], clock=lambda: 0.0, start_at=0.0, seed=look)
                decided = False
                for t in np.arange(0, seconds, 1 / 15):
                    frames += 1
                    analysis = vision.analyze(camera.render(t), 100 * look + t)
                    if not analysis.faces:
                        continue
                    face = analysis.faces[0]
                    found += 1
                    right += face.label == label
                    if face.settled and not decided:
                        decided = True
                        latency.append(face.frames)
                        settled_right += face.label == label
                vision.tracker.tracks.clear()  # the next look is a new person
            per_state[label.value] = {
                "frames": frames,
                "detected": round(found / frames, 3),
                "smoothed_label_accuracy": round(right / max(found, 1), 3),
                "decisions_right": f"{settled_right}/{looks}",
                "frames_to_settle_mean": round(float(np.mean(latency)), 1) if latency else None,
                "frames_to_settle_max": max(latency, default=None),
            }
    finally:
        vision.close()
    return per_state
