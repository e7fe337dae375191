"""The entry state machine, frame by frame, on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gate.camera.verdict import FaceVerdict, MaskLabel
from gate.config import MAX_UNLOCK_SECONDS, MaskPolicy, PolicySettings
from gate.controller import (
    OVERRIDE_REF,
    Action,
    Controller,
    Dispense,
    EntryRecord,
    Lock,
    Mode,
    Prompt,
    RaiseAlert,
    SaveEntry,
    ShowPrompt,
    State,
    TakeSnapshot,
    Unlock,
)
from gate.server.texts import ALERT_DETAILS
from gate.store.models import Outcome

EPOCH = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
FPS = 10


def wall(now: float) -> datetime:
    return EPOCH + timedelta(seconds=now)


def face(label: MaskLabel, key: str = "t1", settled: bool = True, size: int = 120) -> FaceVerdict:
    return FaceVerdict(key, (100, 100, size, size), label, 0.95, settled, 5)


class Gate:
    """A controller plus a clock and a log of every action, for readable tests."""

    def __init__(self, occupancy: int = 0, **policy: object) -> None:
        defaults: dict[str, object] = {"decision_window_seconds": 0.2, "leave_seconds": 1.0}
        self.policy = PolicySettings(**{**defaults, **policy})
        self.c = Controller(self.policy, wall=wall, occupancy=occupancy)
        self.now = 0.0
        self.actions: list[Action] = []

    def run(self, actions: list[Action]) -> list[Action]:
        self.actions += actions
        return actions

    def see(self, *faces: FaceVerdict, seconds: float = 0.5) -> None:
        """Show these faces for a while, ticking the clock like a camera would."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.run(self.c.frame(self.now, list(faces)))
            self.run(self.c.tick(self.now))
            self.now = round(self.now + 1 / FPS, 6)

    def wait(self, seconds: float) -> None:
        self.see(seconds=seconds)

    def station(self, kind: str, ref: int | None = None) -> list[Action]:
        return self.run(self.c.station_event(self.now, kind, ref))

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def entries(self) -> dict[str, EntryRecord]:
        """Last saved snapshot of each entry."""
        return {a.entry.id: a.entry for a in self.of(SaveEntry)}

    def only_entry(self) -> EntryRecord:
        (entry,) = self.entries().values()
        return entry

    def sanitize(self) -> None:
        assert isinstance(self.station("hands_present")[0], Dispense)
        self.station("dispensed")


def unlock_index(actions: list[Action]) -> int:
    return next(i for i, a in enumerate(actions) if isinstance(a, Unlock))


def test_masked_visitor_sanitizes_and_is_admitted_with_save_before_unlock() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK))
    assert g.c.state is State.SANITIZING
    assert g.c.prompt is Prompt.SANITIZE
    assert not g.of(Unlock)
    g.sanitize()
    assert g.c.state is State.UNLOCKED
    i = unlock_index(g.actions)
    saved_before = [a for a in g.actions[:i] if isinstance(a, SaveEntry)]
    assert saved_before[-1].entry.outcome is Outcome.ADMITTED
    assert saved_before[-1].entry.unlocked_at is not None
    unlock = g.actions[i]
    assert unlock == Unlock(5.0, saved_before[-1].entry.unlock_ref)
    g.station("door_opened", unlock.ref)
    g.station("door_closed", unlock.ref)
    assert g.c.state is State.IDLE
    entry = g.only_entry()
    assert entry.door_opened and entry.sanitized and entry.finished_at is not None
    assert g.c.occupancy == 1


def test_one_person_is_one_entry_however_long_they_stand() -> None:
    g = Gate(sanitizer_required=False)
    g.see(face(MaskLabel.MASK), seconds=0.5)
    ref = g.of(Unlock)[0].ref
    g.station("door_opened", ref)
    g.station("door_closed", ref)
    g.see(face(MaskLabel.MASK), seconds=5)  # still in view after walking through
    assert len(g.entries()) == 1
    assert len(g.of(Unlock)) == 1


def test_no_unlock_ever_follows_a_no_mask_decision_under_deny() -> None:
    for label, outcome, prompt in [
        (MaskLabel.NO_MASK, Outcome.DENIED_NO_MASK, Prompt.WEAR_MASK),
        (MaskLabel.INCORRECT_MASK, Outcome.DENIED_INCORRECT_MASK, Prompt.PULL_MASK_UP),
    ]:
        g = Gate()
        g.see(face(label), seconds=3)
        g.station("hands_present")
        g.station("dispensed")
        g.wait(2)
        assert not g.of(Unlock), label
        assert not g.of(Dispense)
        entry = g.only_entry()
        assert entry.outcome is outcome
        assert entry.finished_at is not None  # visitor left
        assert [a.kind for a in g.of(RaiseAlert)] == [label.value]
        assert TakeSnapshot(entry.id, denied=True) in g.actions
        assert ShowPrompt(prompt) in g.actions
        assert g.c.state is State.IDLE and g.c.occupancy == 0


def test_denied_visitor_who_puts_a_mask_on_is_admitted_as_the_same_visit() -> None:
    g = Gate()
    g.see(face(MaskLabel.NO_MASK), seconds=1)
    assert g.c.state is State.DENIED
    g.see(face(MaskLabel.MASK, settled=False), seconds=0.3)  # hysteresis still deciding
    assert g.c.state is State.DENIED
    g.see(face(MaskLabel.MASK), seconds=0.3)
    assert g.c.state is State.SANITIZING
    g.sanitize()
    entry = g.only_entry()
    assert entry.outcome is Outcome.ADMITTED
    assert entry.first_label is MaskLabel.NO_MASK
    assert entry.first_decided_at is not None and entry.decided_at > entry.first_decided_at
    assert len(g.of(Unlock)) == 1


def test_decision_waits_for_settled_label_and_the_decision_window() -> None:
    g = Gate(decision_window_seconds=0.5)
    g.see(face(MaskLabel.NO_MASK, settled=False), seconds=1)
    assert g.c.state is State.CHECKING and not g.entries()
    g.see(face(MaskLabel.NO_MASK), seconds=0.1)
    assert g.c.state is State.DENIED  # window counts from first sight: 1.0 s already
    # a fresh visitor must still be watched for the whole window
    h = Gate(decision_window_seconds=0.5)
    h.see(face(MaskLabel.NO_MASK), seconds=0.4)
    assert h.c.state is State.CHECKING
    h.see(face(MaskLabel.NO_MASK), seconds=0.2)
    assert h.c.state is State.DENIED


def test_visitor_who_walks_away_undecided_leaves_no_entry() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK, settled=False), seconds=0.5)
    g.wait(1.5)
    assert g.c.state is State.IDLE and not g.entries()
    assert g.c.prompt is Prompt.IDLE


def test_remind_policy_admits_but_logs_and_alerts() -> None:
    g = Gate(mask_policy=MaskPolicy.REMIND, sanitizer_required=False)
    g.see(face(MaskLabel.NO_MASK), seconds=0.5)
    assert len(g.of(Unlock)) == 1
    entry = g.only_entry()
    assert entry.outcome is Outcome.ADMITTED_REMINDED
    assert entry.mask_label is MaskLabel.NO_MASK
    assert [a.kind for a in g.of(RaiseAlert)] == ["no_mask"]


def test_sanitizer_optional_unlocks_right_after_the_mask_check() -> None:
    g = Gate(sanitizer_required=False)
    g.see(face(MaskLabel.MASK), seconds=0.4)
    assert g.c.state is State.UNLOCKED
    assert not g.of(Dispense)
    assert not g.only_entry().sanitized


def test_sanitizer_timeout_records_not_sanitized_and_never_unlocks() -> None:
    g = Gate(sanitizer_timeout_seconds=3)
    g.see(face(MaskLabel.MASK), seconds=0.5)
    g.wait(2.0)
    assert g.c.state is State.SANITIZING
    g.wait(1.5)
    assert g.c.state is State.IDLE
    assert g.only_entry().outcome is Outcome.NOT_SANITIZED
    assert not g.of(Unlock)


def test_a_visitor_still_at_the_dispenser_when_time_is_up_may_still_sanitize() -> None:
    g = Gate(sanitizer_timeout_seconds=3)
    g.see(face(MaskLabel.MASK), seconds=4.0)  # stands there past the time
    assert g.only_entry().outcome is Outcome.NOT_SANITIZED  # logged as such meanwhile
    assert g.c.state is State.SANITIZING and g.c.prompt is Prompt.SANITIZE
    assert not g.of(Unlock)
    g.sanitize()
    assert g.only_entry().outcome is Outcome.ADMITTED  # the same visit, now admitted
    assert len(g.of(Unlock)) == 1


def test_a_visitor_who_leaves_after_the_time_is_up_is_not_sanitized() -> None:
    g = Gate(sanitizer_timeout_seconds=3)
    g.see(face(MaskLabel.MASK), seconds=4.0)
    g.wait(1.5)
    assert g.c.state is State.IDLE and g.c.prompt is Prompt.IDLE
    entry = g.only_entry()
    assert entry.outcome is Outcome.NOT_SANITIZED and entry.finished_at is not None
    assert not g.of(Unlock)


def test_unlock_without_door_opening_finishes_after_the_pulse() -> None:
    g = Gate(sanitizer_required=False, unlock_seconds=2)
    g.see(face(MaskLabel.MASK), seconds=0.3)
    g.wait(3.5)
    assert g.c.state is State.IDLE
    entry = g.only_entry()
    assert entry.outcome is Outcome.ADMITTED and not entry.door_opened


def test_door_events_for_another_unlock_are_ignored() -> None:
    g = Gate(sanitizer_required=False)
    g.see(face(MaskLabel.MASK), seconds=0.3)
    g.station("door_opened", ref=12345)
    assert not g.entries()[g.c.visit.id].door_opened


def test_lockdown_denies_everyone_and_locks_the_door() -> None:
    g = Gate()
    assert Lock() in g.run(g.c.set_lockdown(g.now, True))
    assert g.c.mode is Mode.LOCKDOWN and g.c.prompt is Prompt.LOCKDOWN
    g.see(face(MaskLabel.MASK), seconds=1)
    g.station("hands_present")
    g.station("dispensed")
    assert not g.of(Unlock) and not g.of(Dispense)
    assert g.only_entry().outcome is Outcome.DENIED_LOCKDOWN


def test_lockdown_refuses_a_visitor_already_sanitizing_and_lifting_it_rechecks() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK), seconds=0.5)
    assert g.c.state is State.SANITIZING
    g.run(g.c.set_lockdown(g.now, True))
    assert g.c.state is State.DENIED
    g.station("hands_present")
    assert not g.of(Dispense)
    g.run(g.c.set_lockdown(g.now, False))
    g.see(face(MaskLabel.MASK), seconds=0.3)
    assert g.c.state is State.SANITIZING
    g.sanitize()
    assert g.only_entry().outcome is Outcome.ADMITTED


def test_fire_input_unlocks_logs_and_refreshes_until_cleared() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK), seconds=0.5)  # mid-visit when the alarm sounds
    actions = g.station("fire_on")
    assert Unlock(MAX_UNLOCK_SECONDS, OVERRIDE_REF) in actions
    assert any(isinstance(a, RaiseAlert) and a.kind == "emergency" for a in actions)
    assert g.c.mode is Mode.EMERGENCY and g.c.prompt is Prompt.EMERGENCY
    assert g.only_entry().outcome is Outcome.INTERRUPTED
    g.see(face(MaskLabel.NO_MASK, key="t2"), seconds=MAX_UNLOCK_SECONDS)
    assert len(g.of(Unlock)) == 2  # refreshed before the first pulse ran out
    assert len(g.entries()) == 1  # nobody is checked during an emergency
    assert Lock() in g.station("fire_off")
    assert g.c.mode is Mode.NORMAL and g.c.prompt is Prompt.IDLE


def test_staff_emergency_release_and_fire_are_both_needed_off_to_relock() -> None:
    g = Gate()
    g.run(g.c.set_emergency(g.now, True))
    g.station("fire_on")
    assert not g.run(g.c.set_emergency(g.now, False))  # fire still on: stays released
    assert g.c.mode is Mode.EMERGENCY
    assert Lock() in g.station("fire_off")


def test_staff_release_of_a_door_the_station_cannot_reach_is_not_announced_as_open() -> None:
    """The kiosk tells the truth: a staff release the station cannot carry out leaves the door
    locked. No refresh is sent into the dead link; the release goes out when it returns."""
    g = Gate()
    g.run(g.c.station_health(g.now, False))
    g.run(g.c.set_emergency(g.now, True))
    assert g.c.mode is Mode.EMERGENCY and g.c.prompt is Prompt.OUT_OF_SERVICE
    sent = len(g.of(Unlock))
    g.wait(MAX_UNLOCK_SECONDS * 2)
    assert len(g.of(Unlock)) == sent  # no refreshes into the dead link
    back = g.run(g.c.station_health(g.now, True))
    assert Unlock(MAX_UNLOCK_SECONDS, OVERRIDE_REF) in back
    assert g.c.prompt is Prompt.EMERGENCY
    g.run(g.c.station_health(g.now, False))  # lost again while released
    assert g.c.prompt is Prompt.OUT_OF_SERVICE


def test_fire_keeps_the_emergency_prompt_without_the_station() -> None:
    """The firmware releases the door on its fire input by itself, link or no link."""
    g = Gate()
    g.station("fire_on")
    g.run(g.c.station_health(g.now, False))
    assert g.c.prompt is Prompt.EMERGENCY


def test_station_offline_degrades_keeps_locked_and_alerts() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK), seconds=0.5)
    actions = g.run(g.c.station_health(g.now, False))
    assert Lock() in actions
    assert [a.kind for a in actions if isinstance(a, RaiseAlert)] == ["station_offline"]
    assert g.c.mode is Mode.DEGRADED and g.c.prompt is Prompt.OUT_OF_SERVICE
    g.station("hands_present")
    g.see(face(MaskLabel.MASK, key="t2"), seconds=2)
    assert not g.of(Unlock) and not g.of(Dispense)
    assert g.only_entry().outcome is Outcome.INTERRUPTED
    g.run(g.c.station_health(g.now, True))
    assert g.c.mode is Mode.NORMAL
    g.see(face(MaskLabel.MASK, key="t3"), seconds=0.5)
    assert g.c.state is State.SANITIZING


def test_camera_down_degrades_with_its_own_alert() -> None:
    g = Gate()
    actions = g.run(g.c.camera_health(0, False))
    assert [a.kind for a in actions if isinstance(a, RaiseAlert)] == ["camera_offline"]
    assert g.c.mode is Mode.DEGRADED


def test_a_part_that_fails_under_another_mode_is_alerted_when_it_fails() -> None:
    """The alert names the failing part at once, even while lockdown hides the
    degraded mode, and lifting lockdown does not blame the other part."""
    g = Gate()
    g.run(g.c.set_lockdown(g.now, True))
    actions = g.run(g.c.camera_health(g.now, False))
    assert [a.kind for a in actions if isinstance(a, RaiseAlert)] == ["camera_offline"]
    assert g.c.mode is Mode.LOCKDOWN
    actions = g.run(g.c.station_health(g.now, False))
    assert [a.kind for a in actions if isinstance(a, RaiseAlert)] == ["station_offline"]
    actions = g.run(g.c.set_lockdown(g.now, False))
    assert g.c.mode is Mode.DEGRADED and Lock() in actions
    assert not [a for a in actions if isinstance(a, RaiseAlert)]  # both already alerted


def test_alert_details_are_keys_the_panel_translates() -> None:
    g = Gate(capacity=1, sanitizer_required=False)
    g.run(g.c.camera_health(g.now, False))
    g.run(g.c.camera_health(g.now, True))
    g.run(g.c.set_emergency(g.now, True))
    g.run(g.c.set_emergency(g.now, False))
    g.station("fire_on")
    g.station("fire_off")
    g.see(face(MaskLabel.MASK, key="a"), seconds=0.3)
    ref = g.of(Unlock)[-1].ref
    g.station("door_opened", ref)
    g.station("door_closed", ref)
    details = [(a.kind, a.message) for a in g.of(RaiseAlert)]
    assert details == [
        ("camera_offline", "check_camera"),
        ("emergency", "released_by_staff"),
        ("emergency", "fire_alarm"),
        ("capacity_reached", "entry_paused"),
    ]
    assert {message for _, message in details} <= ALERT_DETAILS.keys()


def test_capacity_full_makes_the_visitor_wait_until_someone_leaves() -> None:
    g = Gate(capacity=1, sanitizer_required=False)
    g.see(face(MaskLabel.MASK, key="a"), seconds=0.3)
    ref = g.of(Unlock)[0].ref
    g.station("door_opened", ref)
    g.station("door_closed", ref)
    assert g.c.mode is Mode.FULL
    assert any(isinstance(a, RaiseAlert) and a.kind == "capacity_reached" for a in g.actions)
    g.wait(1.5)
    g.see(face(MaskLabel.MASK, key="b"), seconds=2)
    assert g.c.prompt is Prompt.WAIT_FULL
    assert len(g.of(Unlock)) == 1
    g.station("exit_request")
    assert len(g.of(Unlock)) == 2  # the waiting visitor went in at once
    assert g.c.occupancy == 1 and g.c.mode is Mode.FULL


def test_visitor_who_leaves_while_full_is_recorded() -> None:
    g = Gate(capacity=1, occupancy=1)  # restarted with the building full
    assert g.c.mode is Mode.FULL
    g.see(face(MaskLabel.MASK), seconds=1)
    g.wait(1.5)
    assert g.only_entry().outcome is Outcome.LEFT_WAITING


def test_override_unlock_counts_one_person_and_uses_the_override_ref() -> None:
    g = Gate()
    assert g.run(g.c.override_unlock(0))[0] == Unlock(5.0, OVERRIDE_REF)
    assert g.c.occupancy == 1
    g.station("exit_request")
    g.station("exit_request")
    assert g.c.occupancy == 0  # never negative


def test_a_refused_visitor_whom_staff_let_in_is_told_to_enter() -> None:
    g = Gate()
    g.see(face(MaskLabel.NO_MASK), seconds=0.5)
    assert g.c.prompt is Prompt.WEAR_MASK
    g.run(g.c.override_unlock(g.now))
    assert g.c.prompt is Prompt.ENTER
    g.see(face(MaskLabel.NO_MASK), seconds=0.5)  # still bare-faced, walking in
    assert g.c.prompt is Prompt.ENTER
    g.wait(1.5)  # through the door and out of view
    assert g.c.prompt is Prompt.IDLE
    assert g.only_entry().outcome is Outcome.DENIED_NO_MASK  # the audit has the override


def test_largest_face_is_the_visitor_and_others_wait_their_turn() -> None:
    g = Gate(sanitizer_required=False)
    near, far = face(MaskLabel.MASK, "near", size=200), face(MaskLabel.NO_MASK, "far", size=60)
    g.see(near, far, seconds=0.5)
    assert g.only_entry().outcome is Outcome.ADMITTED


def test_resume_adopts_the_visitor_still_standing_there_without_a_second_entry() -> None:
    g = Gate(sanitizer_required=False)
    g.see(face(MaskLabel.MASK), seconds=0.5)
    (saved,) = g.entries().values()
    # The service crashed after saving the admission; it restarts 0.5 s later.
    h = Gate(sanitizer_required=False)
    h.now = g.now + 0.5
    assert not h.run(h.c.resume(h.now, [saved]))
    h.see(face(MaskLabel.MASK, key="new-track"), seconds=0.5)
    assert set(h.entries()) == {saved.id}
    assert h.of(Unlock) == [Unlock(5.0, saved.unlock_ref)]


def test_resume_closes_stale_visits_and_never_adopts_a_later_stranger() -> None:
    g = Gate()
    g.see(face(MaskLabel.MASK), seconds=0.5)  # sanitizing when the crash hits
    (saved,) = g.entries().values()
    h = Gate()
    h.now = g.now + 5  # restart took longer than leave_seconds
    h.run(h.c.resume(h.now, [saved]))
    h.see(face(MaskLabel.MASK, key="stranger"), seconds=0.5)
    entries = h.entries()
    assert entries[saved.id].outcome is Outcome.INTERRUPTED
    assert entries[saved.id].finished_at is not None
    assert len(entries) == 2


@pytest.mark.parametrize("outcome", [Outcome.ADMITTED, Outcome.PENDING])
def test_resume_after_the_clock_went_back_never_hands_the_visit_to_a_stranger(
    outcome: Outcome,
) -> None:
    """Power cut mid-visit; the board boots with its clock a year behind. The saved visit
    looks a year in the future: it must be closed, and a bare face an hour later
    refused, not let in as that visitor."""
    saved = EntryRecord("e1", 42, outcome, wall(0), wall(0), mask_label=MaskLabel.MASK)
    g = Gate()
    g.c.wall = lambda now: wall(now) - timedelta(days=365)
    g.now = 0.5
    g.run(g.c.resume(g.now, [saved]))
    g.wait(3600)
    g.see(face(MaskLabel.NO_MASK, key="stranger"), seconds=0.5)
    assert not g.of(Unlock)
    assert g.c.prompt is Prompt.WEAR_MASK
    assert g.entries()["e1"].finished_at is not None


@pytest.mark.parametrize("outcome", [Outcome.DENIED_NO_MASK, Outcome.ADMITTED])
def test_resume_expires_an_open_visit_when_nobody_shows_up(outcome: Outcome) -> None:
    entry = EntryRecord("e1", 7, outcome, wall(0), wall(0))
    g = Gate()
    g.now = 0.5
    g.run(g.c.resume(g.now, [entry]))
    g.wait(2)
    (closed,) = g.entries().values()
    assert closed.outcome is outcome and closed.finished_at is not None
    assert not g.of(Unlock)
