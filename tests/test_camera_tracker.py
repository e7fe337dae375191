"""Tracking and the temporal decision, frame by frame with a fake clock."""

from __future__ import annotations

import numpy as np

from gate.camera.tracker import Tracker

MASK, INCORRECT, NO = np.eye(3)


def test_one_person_walking_closer_keeps_one_key() -> None:
    tracker = Tracker()
    keys = set()
    for i in range(20):
        size = 80 + 8 * i  # steps towards the camera: the box grows fast
        box = (300 - size // 2 + 3 * i, 200 - size // 2, size, size)
        keys |= {t.key for t in tracker.update([box], MASK[None], i / 15)}
    assert len(keys) == 1


def test_two_people_get_two_keys_and_a_returning_face_a_new_one() -> None:
    tracker = Tracker(max_gap_seconds=0.5)
    a, b = (50, 50, 100, 100), (400, 60, 100, 100)
    first = tracker.update([a, b], np.stack([MASK, NO]), 0.0)
    second = tracker.update([b, a], np.stack([NO, MASK]), 0.1)
    assert [t.key for t in first] == [t.key for t in reversed(second)]
    later = tracker.update([a], MASK[None], 2.0)
    assert later[0].key not in {t.key for t in first}


def test_label_settles_after_agreeing_frames_and_resists_one_bad_frame() -> None:
    tracker = Tracker(settle_frames=3)
    box = (100, 100, 120, 120)
    settled = [tracker.update([box], NO[None], i / 15)[0].settled for i in range(3)]
    assert settled == [False, False, True]
    assert tracker.tracks[0].settled_after == 3
    blip = tracker.update([box], MASK[None], 0.3)[0]  # one frame says "mask"
    assert blip.label == 2 and blip.settled
    for i in range(6):
        track = tracker.update([box], MASK[None], 0.4 + i / 15)[0]
    assert track.label == 0 and track.settled


def test_uncertain_face_does_not_settle() -> None:
    tracker = Tracker(settle_probability=0.6)
    unsure = np.array([[0.4, 0.3, 0.3]])
    for i in range(10):
        track = tracker.update([(0, 0, 100, 100)], unsure, i / 15)[0]
    assert not track.settled
