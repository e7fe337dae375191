"""`gate replay`: a recorded video through the real camera pipeline and controller."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import cv2

from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import MaskLabel
from tests.test_cli import assert_user_error, gate

REPO = Path(__file__).resolve().parents[1]
FPS = 15


def record(path: Path, visitors: list[SimVisitor], seconds: float) -> None:
    """Write what the simulated camera sees to an MJPG video, frame by frame."""
    clock = [0.0]
    camera = SimulatedCamera(visitors, fps=FPS, clock=lambda: clock[0], start_at=0.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for i in range(int(seconds * FPS)):
        clock[0] = i / FPS
        got = camera.read()
        assert got is not None
        writer.write(got[1])
    writer.release()


def replay(video: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env["GATE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "gate", "replay", str(video), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_a_file_with_no_frames_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """OpenCV opens random bytes named .jpg without complaint and then reads nothing: the
    replay printed nothing and exited 0."""
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(random.Random(1).randbytes(5000))
    result = gate("replay", str(noise), env={"GATE_DATA_DIR": str(data_dir)}, cwd=tmp_path)
    assert_user_error(result, tmp_path, "cannot decode video", str(noise))


def test_replay_decides_each_visitor_on_the_videos_own_clock(
    tmp_path: Path, data_dir: Path
) -> None:
    gap = (2.5, None)
    visitors = [
        SimVisitor("masked", ((3.0, MaskLabel.MASK), gap)),
        SimVisitor("bare", ((3.0, MaskLabel.NO_MASK), gap)),
        SimVisitor("under-nose", ((3.0, MaskLabel.INCORRECT_MASK), gap)),
    ]
    video = tmp_path / "door.avi"
    record(video, visitors, seconds=16.5)
    result = replay(video, data_dir)
    assert result.returncode == 0, result.stderr
    decisions = json.loads(result.stdout)["decisions"]
    assert [d["outcome"] for d in decisions] == [
        "admitted",
        "denied_no_mask",
        "denied_incorrect_mask",
    ]
    assert [d["label"] for d in decisions] == ["mask", "no_mask", "incorrect_mask"]
    # Times are seconds into the video: each decision soon after its visitor appears.
    for decision, appears in zip(decisions, (0.0, 5.5, 11.0), strict=True):
        assert appears < decision["time"] < appears + 1.0, decisions
        assert 0.5 < decision["score"] <= 1.0
    # A replay leaves nothing in the gate's data dir: its entries went to a throwaway
    # database, so a snapshot of a refused visitor would outlive retention there.
    assert sorted(p.name for p in data_dir.iterdir()) == ["models"]


def test_corrupt_video_is_a_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    result = replay(video, data_dir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "video" in result.stderr
