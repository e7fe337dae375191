"""Frame sources: missing and corrupt inputs fail with one line; a vanishing camera never crashes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from gate.camera.simulated import SimulatedCamera, SimVisitor, demo_visitors
from gate.camera.sources import CaptureSource, describe_target, open_source
from gate.camera.verdict import MaskLabel
from gate.config import CameraSettings
from gate.errors import GateError
from tests.panel_support import free_port, serve_files, write_clip


def _wait(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="video file not found") as err:
        open_source(CameraSettings(source=str(tmp_path / "nope.mp4")))
    assert "\n" not in str(err.value)


def test_corrupt_file_is_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(GateError, match="cannot read video file") as err:
        open_source(CameraSettings(source=str(junk)))
    assert "\n" not in str(err.value)


def test_a_missing_camera_is_retried_not_an_error() -> None:
    """A camera that is absent at start is the same case as one that disappears later:
    no error, no frames, unhealthy, and retried with backoff."""
    settings = CameraSettings(source="97", stall_seconds=0.3)
    source = CaptureSource(describe_target(settings.source), settings, backoff=(0.05, 0.1))
    try:
        assert _wait(lambda: source.metrics.reconnects >= 2)
        assert source.read() is None and not source.healthy
    finally:
        source.close()


def test_an_absent_camera_is_one_warning_not_one_per_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """gate.log says when the camera stopped and when it is back, not every retry."""
    write_clip(tmp_path / "cam.avi")
    port = free_port()
    settings = CameraSettings(source=f"http://127.0.0.1:{port}/cam.avi", stall_seconds=0.3)
    caplog.set_level(logging.DEBUG, logger="gate.camera.sources")
    source = CaptureSource(describe_target(settings.source), settings, backoff=(0.02, 0.05))
    try:
        assert _wait(lambda: source.metrics.reconnects >= 10)
        with serve_files(tmp_path, port):
            assert _wait(lambda: source.read() is not None, 20), "the stream was not picked up"
    finally:
        source.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # (The short clip may end before the source closes: a third line, rightly.)
    assert "delivered no frame" in warnings[0] and "delivers frames again" in warnings[1], warnings
    retries = [r for r in caplog.records if "delivered no frame" in r.getMessage()]
    assert len(retries) >= 10 and retries[1].levelno == logging.DEBUG


def test_a_stream_that_comes_up_after_the_gate_is_picked_up(tmp_path: Path) -> None:
    """An RTSP/HTTP camera that boots slower than the gate after a power cut."""
    write_clip(tmp_path / "cam.avi")
    port = free_port()
    settings = CameraSettings(source=f"http://127.0.0.1:{port}/cam.avi", stall_seconds=0.3)
    source = open_source(settings)
    try:
        assert isinstance(source, CaptureSource)
        assert _wait(lambda: source.metrics.reconnects >= 1)
        assert source.read() is None and not source.healthy
        with serve_files(tmp_path, port):
            assert _wait(lambda: source.read() is not None, 20), "the stream was not picked up"
            assert source.healthy
    finally:
        source.close()


def test_video_file_delivers_latest_frames_with_metrics(tmp_path: Path) -> None:
    source = open_source(CameraSettings(source=str(write_clip(tmp_path / "v.avi")), fps=60))
    try:
        got = source.read()
        assert got is not None
        at, frame = got
        assert frame.shape == (120, 160, 3) and at <= time.monotonic()
        assert _wait(lambda: source.metrics.frames > 25), "a file loops like a live camera"
        assert source.read() is not None
        assert source.read() is None, "no new frame yet: latest-frame semantics"
        assert source.healthy and source.metrics.fps > 0
    finally:
        source.close()


def test_camera_that_disappears_goes_unhealthy_and_recovers(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "cam.avi", frames=10)
    settings = CameraSettings(source=str(path), fps=60, stall_seconds=0.3)
    source = CaptureSource(str(path), settings, backoff=(0.05, 0.2), loop_file=False)
    try:
        assert _wait(lambda: source.metrics.frames >= 10)
        path.unlink()  # the device is gone: every reopen fails
        assert _wait(lambda: not source.healthy)
        assert _wait(lambda: source.metrics.reconnects >= 2)
        source.read()
        assert source.read() is None
        write_clip(path, frames=10)  # plugged back in
        assert _wait(lambda: source.healthy)
    finally:
        source.close()
    assert source.metrics.stalls >= 1


def test_simulated_source_follows_the_clock() -> None:
    now = [100.0]
    visitors = [
        SimVisitor("a", ((1.0, MaskLabel.MASK), (0.5, None))),
        SimVisitor("b", ((1.0, None),)),
    ]
    camera = SimulatedCamera(visitors, fps=10, clock=lambda: now[0])
    first = camera.read()
    assert first is not None and first[1].shape == (480, 640, 3)
    assert camera.read() is None, "same frame slot"
    now[0] += 0.1
    assert camera.read() is not None
    assert camera.visitor_at(100.5) == "a"
    assert camera.visitor_at(101.2) is None  # out of view
    assert camera.label_at(100.5) is MaskLabel.MASK
    now[0] = 103.0
    assert camera.read() is None and camera.done


def test_simulated_visitors_differ_and_default_source_is_simulated() -> None:
    source = open_source(CameraSettings())
    assert isinstance(source, SimulatedCamera) and source.loop
    camera = SimulatedCamera(demo_visitors(), clock=lambda: 0.0)
    a, b = camera.render(1.0), camera.render(5.0)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_the_scripted_visitors_start_when_the_gate_first_looks() -> None:
    """Loading the models can take seconds: the first visitor must still be seen."""
    clock = [100.0]
    camera = SimulatedCamera(
        [SimVisitor("first", ((2.0, MaskLabel.MASK),))], clock=lambda: clock[0]
    )
    clock[0] += 30.0  # the gate is still loading its models
    assert camera.visitor_at(clock[0]) is None
    assert camera.read() is not None
    clock[0] += 1.0
    assert camera.visitor_at(clock[0]) == "first"
    assert camera.read() is not None and not camera.done


@pytest.mark.parametrize(("source", "target"), [("0", 0), (" 2 ", 2), ("\u00b2", "\u00b2")])
def test_only_plain_digits_name_a_camera_index(source: str, target: str | int) -> None:
    assert describe_target(source) == target
