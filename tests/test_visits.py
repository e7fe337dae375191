"""`gate eval --visits`: simulated visits through the real Vision and Controller."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import typer
from typer.testing import CliRunner

from gate.camera import cli as camera_cli
from gate.camera.doorframe import door_frame
from gate.camera.evaluate import door_faces
from gate.camera.verdict import MaskLabel
from gate.cli import app
from gate.errors import GateError
from gate.visits import VISIT_FRAMES, VisitFilm, evaluate_visits

REPO = Path(__file__).resolve().parents[1]
SCENES = REPO.parent / "shared" / "datasets" / "face-mask-scenes"

VISIT_KEYS = {
    "masked_refused_share",
    "improper_admitted",
    "improper_admitted_share",
    "undecided",
    "decision_seconds_p50",
    "decision_seconds_p95",
    "n_visits",
    "by_label",
    "by_size",
}


def _film(seed: int) -> list[np.ndarray]:
    door = door_faces(SCENES, "test", 60, 1)[0]
    return list(
        VisitFilm(cv2.imread(str(door.item.image)), door, np.random.default_rng(seed)).frames()
    )


def test_a_visit_moves_and_changes_but_stays_on_the_face() -> None:
    frames = _film(3)
    assert len(frames) == VISIT_FRAMES and all(f.shape == (480, 640, 3) for f in frames)
    door = door_faces(SCENES, "test", 60, 1)[0]
    still, _ = door_frame(cv2.imread(str(door.item.image)), door.face.box)
    face = (slice(100, 300), slice(230, 410))  # around the face box of the door frame
    diffs = [np.abs(f[face].astype(int) - still[face].astype(int)).mean() for f in frames]
    assert min(diffs) > 1, "every frame differs from the still door frame"
    first_to_last = np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean()
    assert first_to_last > 2, "the visit moves over its second"
    correlation = [
        np.corrcoef(f[face][:, :, 1].ravel(), still[face][:, :, 1].ravel())[0, 1] for f in frames
    ]
    assert min(correlation) > 0.5, "the face stays where the door frame put it"


def test_visits_are_reproducible_with_the_same_seed() -> None:
    a, b, other = _film(11), _film(11), _film(12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, other, strict=True))


def test_same_seed_same_decisions(data_dir: Path) -> None:
    runs = [
        evaluate_visits(SCENES, data_dir, min_face=60, split="test", limit=2, per_face=1, seed=5)
        for _ in range(2)
    ]
    first, again = ({k: v for k, v in r.items() if k != "ms_per_frame_p50"} for r in runs)
    assert first == again and first["n_visits"] == 2


def test_visits_run_end_to_end_through_the_gate_cli(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["eval", str(SCENES), "--visits", "--split", "test", "--limit", "3",
         "--visits-per-face", "2", "--seed", "1", "--json", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report.keys() >= VISIT_KEYS
    assert report["n_visits"] == 6 and report["visits_per_face"] == 2 and report["n_faces"] == 3
    assert report["masked_visits"] + report["improper_visits"] == 6
    assert sum(v["n_visits"] for v in report["by_label"].values()) == 6
    decided = report["n_visits"] - report["undecided"]
    assert decided == sum(
        v["first_admitted"] + v["first_refused"] for v in report["by_label"].values()
    )
    if decided:
        assert 0 < report["decision_seconds_p50"] <= report["decision_seconds_p95"] <= 1
    admitted_improper = sum(
        report["by_label"][label]["admitted_at_any_moment"]
        for label in (MaskLabel.NO_MASK, MaskLabel.INCORRECT_MASK)
    )
    assert report["improper_admitted"] == admitted_improper


def test_visits_need_the_gate_cli_that_holds_the_controller(data_dir: Path) -> None:
    """The camera room's own commands, mounted alone, cannot run visits: a one-line error."""
    alone = typer.Typer()
    camera_cli.register(alone)
    result = CliRunner().invoke(
        alone, ["eval", str(SCENES), "--visits", "--data-dir", str(data_dir)]
    )
    assert isinstance(result.exception, GateError) and "gate eval --visits" in str(result.exception)
