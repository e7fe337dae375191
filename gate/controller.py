"""The entry state machine: the only place in the gate that decides.

It is pure. Every input carries the time (`now`, monotonic seconds) and every
output is an action for the runtime to carry out in order. The order is part
of the safety design: an entry is always saved *before* the unlock that it
explains, so a crash can never leave an unlock unlogged.

States: IDLE → CHECKING → (DENIED | SANITIZING) → UNLOCKED → IDLE.
Modes, strongest first: EMERGENCY (free egress), LOCKDOWN (deny all),
DEGRADED (camera or station down: stay locked), FULL (visitor waits).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from gate.camera.verdict import FaceVerdict, MaskLabel
from gate.config import MAX_UNLOCK_SECONDS, MaskPolicy, PolicySettings
from gate.store.models import Outcome, Severity

# While in emergency the host keeps the door released by re-sending the
# longest unlock the firmware accepts before the previous one runs out.
EMERGENCY_REFRESH_SECONDS = MAX_UNLOCK_SECONDS * 2 / 3
# How often an open visit's "last seen" time is written, for crash recovery.
TOUCH_SECONDS = 0.5
# Grace after the unlock pulse for the door contact to report.
DOOR_GRACE_SECONDS = 1.0
OVERRIDE_REF = 0  # unlock reference used for staff overrides


class State(StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    DENIED = "denied"
    SANITIZING = "sanitizing"
    UNLOCKED = "unlocked"


class Mode(StrEnum):
    NORMAL = "normal"
    FULL = "full"
    DEGRADED = "degraded"
    LOCKDOWN = "lockdown"
    EMERGENCY = "emergency"


class Prompt(StrEnum):
    """What the kiosk beside the door asks the visitor to do."""

    IDLE = "idle"
    CHECKING = "checking"
    WEAR_MASK = "wear_mask"
    PULL_MASK_UP = "pull_mask_up"  # worn under the nose, or on the chin or neck
    SANITIZE = "sanitize"
    ENTER = "enter"
    WAIT_FULL = "wait_full"
    LOCKDOWN = "lockdown"
    EMERGENCY = "emergency"
    OUT_OF_SERVICE = "out_of_service"


@dataclass(frozen=True)
class EntryRecord:
    """A snapshot of one visit, written to the store as-is (upsert by id)."""

    id: str
    unlock_ref: int
    outcome: Outcome
    seen_at: datetime
    last_seen_at: datetime
    mask_label: MaskLabel | None = None
    mask_score: float | None = None
    first_label: MaskLabel | None = None
    first_decided_at: datetime | None = None
    decided_at: datetime | None = None
    sanitized: bool = False
    sanitized_at: datetime | None = None
    unlocked_at: datetime | None = None
    door_opened: bool = False
    door_opened_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.finished_at is None


# --- Actions: what the runtime must do, in the order given. ---


@dataclass(frozen=True)
class SaveEntry:
    entry: EntryRecord


@dataclass(frozen=True)
class Unlock:
    seconds: float
    ref: int


@dataclass(frozen=True)
class Lock:
    pass


@dataclass(frozen=True)
class Dispense:
    pass


@dataclass(frozen=True)
class RaiseAlert:
    kind: str
    severity: Severity
    message: str  # a key the panel translates (texts.ALERT_DETAILS), else shown as it is
    entry_id: str | None = None


@dataclass(frozen=True)
class ShowPrompt:
    prompt: Prompt


@dataclass(frozen=True)
class TakeSnapshot:
    entry_id: str
    denied: bool


Action = SaveEntry | Unlock | Lock | Dispense | RaiseAlert | ShowPrompt | TakeSnapshot


@dataclass
class _Visit:
    """The visit in progress; `entry` is what the store has (or will have)."""

    track_key: str | None
    entry: EntryRecord
    saved: bool = False
    waiting: bool = False  # checked and fine, but the building is full
    deadline: float = 0.0  # sanitizer timeout or end of the unlock pulse
    started: float = 0.0
    last_seen: float = 0.0
    touched: float = 0.0


@dataclass
class _Conditions:
    camera_ok: bool = True
    station_ok: bool = True
    fire: bool = False
    staff_emergency: bool = False
    lockdown: bool = False


@dataclass
class Controller:
    """Decides who may enter. Feed it inputs; carry out the actions it returns."""

    policy: PolicySettings
    wall: Callable[[float], datetime]  # monotonic seconds -> wall-clock time
    occupancy: int = 0
    state: State = State.IDLE
    prompt: Prompt = Prompt.IDLE
    new_ref: Callable[[], int] = field(default=lambda: random.randint(1, 0xFFFFFFFF))
    _visit: _Visit | None = None
    _resumable: EntryRecord | None = None
    _done_tracks: dict[str, float] = field(default_factory=dict)  # track -> last seen
    _conditions: _Conditions = field(default_factory=_Conditions)
    _mode: Mode = Mode.NORMAL
    _emergency_refresh_at: float = 0.0

    def __post_init__(self) -> None:
        self._mode = self._compute_mode()  # e.g. FULL when restarted with the building full

    # ------------------------------------------------------------------ queries

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def visit(self) -> EntryRecord | None:
        return self._visit.entry if self._visit else None

    @property
    def station_ok(self) -> bool:
        """Whether the station can carry out a command: staff may not unlock a door that
        cannot be unlocked and be told it was."""
        return self._conditions.station_ok

    # ------------------------------------------------------------------ inputs

    def resume(self, now: float, open_entries: list[EntryRecord]) -> list[Action]:
        """At start-up: close what a crash left open, keep the newest for its visitor.

        The newest open visit is adopted by the first face seen within
        `leave_seconds` of when it was last seen: that is the same person, still
        standing at the gate, and must not become a second entry.
        """
        actions: list[Action] = []
        newest = max(open_entries, key=lambda e: e.last_seen_at, default=None)
        for entry in open_entries:
            if entry is newest and self._within_leave(now, entry.last_seen_at):
                self._resumable = entry
            else:
                actions.append(SaveEntry(_closed(entry, self.wall(now))))
        return actions

    def frame(self, now: float, faces: list[FaceVerdict]) -> list[Action]:
        """One analysed camera frame."""
        actions = self._expire_resumable(now)
        for face in faces:
            if face.track_key in self._done_tracks:
                self._done_tracks[face.track_key] = now
        self._forget_done_tracks(now)
        if self._mode in (Mode.EMERGENCY, Mode.DEGRADED):
            return actions
        visit = self._visit
        face = self._face_of(visit, faces) if visit else None
        if visit and face:
            visit.last_seen = now
            actions += self._touch(now, visit)
        if visit is None:
            candidates = [f for f in faces if f.track_key not in self._done_tracks]
            if not candidates:
                return actions
            face = max(candidates, key=lambda f: f.box[2] * f.box[3])
            actions += self._start_visit(now, face)
            visit = self._visit
        assert visit is not None
        if face is not None and self.state in (State.CHECKING, State.DENIED):
            actions += self._judge(now, visit, face)
        return actions

    def station_event(self, now: float, kind: str, ref: int | None = None) -> list[Action]:
        """An event from the sanitizer/door station."""
        visit = self._visit
        if kind == "fire_on":
            self._conditions.fire = True
            return self._remode(now)
        if kind == "fire_off":
            self._conditions.fire = False
            return self._remode(now)
        if kind == "exit_request":
            self.occupancy = max(0, self.occupancy - 1)
            return self._after_occupancy_change(now)
        if kind == "hands_present" and self.state is State.SANITIZING:
            return [Dispense()]
        if kind == "dispensed" and self.state is State.SANITIZING and visit:
            visit.entry = replace(visit.entry, sanitized=True, sanitized_at=self.wall(now))
            return self._admit(now, visit)
        unlocked = visit is not None and self.state is State.UNLOCKED
        if kind == "door_opened" and unlocked and ref in (None, visit.entry.unlock_ref):
            visit.entry = replace(visit.entry, door_opened=True, door_opened_at=self.wall(now))
            return [SaveEntry(visit.entry)]
        if kind == "door_closed" and unlocked and visit.entry.door_opened:
            return self._finish(now, visit)
        return []

    def camera_health(self, now: float, ok: bool) -> list[Action]:
        if ok == self._conditions.camera_ok:
            return []
        self._conditions.camera_ok = ok
        return self._remode(now) + self._part_alert(ok, "camera_offline", "check_camera")

    def station_health(self, now: float, ok: bool) -> list[Action]:
        if ok == self._conditions.station_ok:
            return []
        self._conditions.station_ok = ok
        actions = self._remode(now)
        if self._mode is Mode.EMERGENCY:
            if ok:  # the release the station missed goes out now, not at the next refresh
                self._emergency_refresh_at = now + EMERGENCY_REFRESH_SECONDS
                actions.append(Unlock(MAX_UNLOCK_SECONDS, OVERRIDE_REF))
            actions += self._show(self._resting_prompt())
        return actions + self._part_alert(ok, "station_offline", "check_station_link")

    def set_lockdown(self, now: float, on: bool) -> list[Action]:
        self._conditions.lockdown = on
        return self._remode(now)

    def set_emergency(self, now: float, on: bool) -> list[Action]:
        self._conditions.staff_emergency = on
        return self._remode(now)

    def override_unlock(self, now: float) -> list[Action]:
        """Staff let someone in once. The runtime audits who and why."""
        if self._mode is Mode.EMERGENCY:
            return []  # already released
        self.occupancy += 1
        actions = [
            Unlock(self.policy.unlock_seconds, OVERRIDE_REF),
            *self._after_occupancy_change(now),
        ]
        if self.state is State.DENIED:  # staff let in the visitor the gate refused
            actions += self._show(Prompt.ENTER)
        return actions

    def reset_occupancy(self, now: float) -> list[Action]:
        self.occupancy = 0
        return self._after_occupancy_change(now)

    def tick(self, now: float) -> list[Action]:
        """Time passing: timeouts, leaving visitors, emergency refresh."""
        actions = self._expire_resumable(now)
        emergency = self._mode is Mode.EMERGENCY and self._conditions.station_ok
        if emergency and now >= self._emergency_refresh_at:
            self._emergency_refresh_at = now + EMERGENCY_REFRESH_SECONDS
            actions.append(Unlock(MAX_UNLOCK_SECONDS, OVERRIDE_REF))
        visit = self._visit
        if visit is None:
            return actions
        gone = now - visit.last_seen >= self.policy.leave_seconds
        if self.state is State.SANITIZING and now >= visit.deadline:
            actions += self._sanitizer_time_up(now, visit, gone)
        elif self.state is State.UNLOCKED and now >= visit.deadline and not visit.entry.door_opened:
            actions += self._finish(now, visit)
        elif self.state is State.CHECKING and gone:
            if visit.waiting:
                actions += self._conclude(now, visit, Outcome.LEFT_WAITING)
            else:  # walked away before any decision: nothing to record
                actions += self._back_to_idle(visit)
        elif self.state is State.DENIED and gone:
            actions += self._finish(now, visit)
        elif self.state is State.CHECKING and visit.waiting and self._mode is not Mode.FULL:
            actions += self._proceed(now, visit)
        return actions

    # ------------------------------------------------------------------ flow

    def _start_visit(self, now: float, face: FaceVerdict) -> list[Action]:
        resumed = self._resumable
        self._resumable = None
        if resumed is not None:
            return self._adopt(now, face, resumed)
        wall = self.wall(now)
        entry = EntryRecord(
            id=str(uuid.uuid4()),
            unlock_ref=self.new_ref(),
            outcome=Outcome.PENDING,
            seen_at=wall,
            last_seen_at=wall,
        )
        self._visit = _Visit(face.track_key, entry, started=now, last_seen=now, touched=now)
        self.state = State.CHECKING
        return self._show(Prompt.LOCKDOWN if self._mode is Mode.LOCKDOWN else Prompt.CHECKING)

    def _adopt(self, now: float, face: FaceVerdict, entry: EntryRecord) -> list[Action]:
        """Carry on with a visit that a restart interrupted, without a second entry."""
        visit = _Visit(face.track_key, entry, saved=True, started=now, last_seen=now, touched=now)
        self._visit = visit
        if entry.outcome.denied:
            self.state = State.DENIED
            return self._show(_prompt_for(entry.mask_label))
        if entry.outcome.admitted and entry.door_opened:
            return self._finish(now, visit)
        if entry.outcome.admitted or entry.sanitized or not self.policy.sanitizer_required:
            # Re-sending the same unlock (same ref) is harmless if it already ran.
            return self._unlock(now, visit)
        self.state = State.SANITIZING
        visit.deadline = now + self.policy.sanitizer_timeout_seconds
        return self._show(Prompt.SANITIZE)

    def _judge(self, now: float, visit: _Visit, face: FaceVerdict) -> list[Action]:
        """Decide on a settled face; re-decide if a denied visitor fixes the mask."""
        if not face.settled or now - visit.started < self.policy.decision_window_seconds:
            return []
        entry = visit.entry
        if self._mode is Mode.LOCKDOWN:
            if entry.outcome is Outcome.DENIED_LOCKDOWN:
                return []
            visit.entry = replace(
                entry,
                outcome=Outcome.DENIED_LOCKDOWN,
                mask_label=face.label,
                mask_score=face.score,
                decided_at=self.wall(now),
            )
            self.state = State.DENIED
            return [SaveEntry(visit.entry), TakeSnapshot(entry.id, denied=True)]
        acceptable = face.label is MaskLabel.MASK or self.policy.mask_policy is MaskPolicy.REMIND
        if not acceptable:
            return self._deny(now, visit, face)
        if self.state is State.DENIED and entry.outcome is Outcome.DENIED_LOCKDOWN:
            return []  # lockdown denials stand until the visitor leaves
        if visit.waiting:
            return []
        visit.entry = replace(
            entry,
            outcome=Outcome.PENDING,
            mask_label=face.label,
            mask_score=face.score,
            decided_at=self.wall(now),
        )
        actions: list[Action] = []
        if face.label is not MaskLabel.MASK:  # admitted under the "remind" policy
            actions.append(
                RaiseAlert(
                    face.label.value, Severity.WARNING, Outcome.ADMITTED_REMINDED.value, entry.id
                )
            )
        if self._mode is Mode.FULL:
            visit.waiting = True
            self.state = State.CHECKING
            return actions + self._show(Prompt.WAIT_FULL)
        return actions + self._proceed(now, visit)

    def _deny(self, now: float, visit: _Visit, face: FaceVerdict) -> list[Action]:
        entry = visit.entry
        outcome = (
            Outcome.DENIED_NO_MASK
            if face.label is MaskLabel.NO_MASK
            else Outcome.DENIED_INCORRECT_MASK
        )
        if self.state is State.DENIED and entry.outcome is outcome:
            return []
        first = entry.first_label is None
        visit.entry = replace(
            entry,
            outcome=outcome,
            mask_label=face.label,
            mask_score=face.score,
            decided_at=self.wall(now),
            first_label=face.label if first else entry.first_label,
            first_decided_at=self.wall(now) if first else entry.first_decided_at,
        )
        visit.waiting = False
        self.state = State.DENIED
        actions: list[Action] = [
            SaveEntry(visit.entry),
            TakeSnapshot(entry.id, denied=True),
            RaiseAlert(face.label.value, Severity.WARNING, outcome.value, entry.id),
        ]
        visit.saved = True
        return actions + self._show(_prompt_for(face.label))

    def _proceed(self, now: float, visit: _Visit) -> list[Action]:
        """Mask is fine and there is room: sanitize if required, else open."""
        visit.waiting = False
        if not self.policy.sanitizer_required:
            return self._admit(now, visit)
        visit.entry = replace(visit.entry, outcome=Outcome.PENDING)
        visit.deadline = now + self.policy.sanitizer_timeout_seconds
        visit.saved = True
        self.state = State.SANITIZING
        return [SaveEntry(visit.entry), *self._show(Prompt.SANITIZE)]

    def _sanitizer_time_up(self, now: float, visit: _Visit, gone: bool) -> list[Action]:
        """A visitor who left without sanitizing is done. One still standing at the
        dispenser is logged as not sanitized but keeps the prompt: a late dose admits them
        as the same visit, as a mask put on after a refusal does."""
        if gone:
            return self._conclude(now, visit, Outcome.NOT_SANITIZED)
        if visit.entry.outcome is Outcome.NOT_SANITIZED:
            return []
        visit.entry = replace(visit.entry, outcome=Outcome.NOT_SANITIZED)
        return [SaveEntry(visit.entry)]

    def _admit(self, now: float, visit: _Visit) -> list[Action]:
        label = visit.entry.mask_label
        outcome = Outcome.ADMITTED if label is MaskLabel.MASK else Outcome.ADMITTED_REMINDED
        visit.entry = replace(visit.entry, outcome=outcome, unlocked_at=self.wall(now))
        self.occupancy += 1
        actions = self._unlock(now, visit)
        return actions + self._after_occupancy_change(now)

    def _unlock(self, now: float, visit: _Visit) -> list[Action]:
        visit.deadline = now + self.policy.unlock_seconds + DOOR_GRACE_SECONDS
        visit.saved = True
        self.state = State.UNLOCKED
        # Saved first: the unlock below must always have its entry on disk.
        return [
            SaveEntry(visit.entry),
            Unlock(self.policy.unlock_seconds, visit.entry.unlock_ref),
            *self._show(Prompt.ENTER),
        ]

    def _conclude(self, now: float, visit: _Visit, outcome: Outcome) -> list[Action]:
        visit.entry = replace(visit.entry, outcome=outcome)
        return self._finish(now, visit)

    def _finish(self, now: float, visit: _Visit) -> list[Action]:
        visit.entry = replace(
            visit.entry, finished_at=self.wall(now), last_seen_at=self.wall(visit.last_seen)
        )
        actions: list[Action] = [SaveEntry(visit.entry)]
        return actions + self._back_to_idle(visit)

    def _back_to_idle(self, visit: _Visit) -> list[Action]:
        if visit.track_key is not None:
            self._done_tracks[visit.track_key] = visit.last_seen
        self._visit = None
        self.state = State.IDLE
        return self._show(self._resting_prompt())

    def _touch(self, now: float, visit: _Visit) -> list[Action]:
        """Keep the stored 'last seen' fresh so a restart can recognise this visitor."""
        visit.entry = replace(visit.entry, last_seen_at=self.wall(now))
        if not visit.saved or now - visit.touched < TOUCH_SECONDS:
            return []
        visit.touched = now
        return [SaveEntry(visit.entry)]

    # ------------------------------------------------------------------ modes

    @staticmethod
    def _part_alert(ok: bool, kind: str, detail: str) -> list[Action]:
        """A failing part is alerted when it fails, whatever mode the gate is in (after the
        mode change, so a lock is never held up by an alert's write)."""
        return [] if ok else [RaiseAlert(kind, Severity.CRITICAL, detail)]

    def _remode(self, now: float) -> list[Action]:
        old, new = self._mode, self._compute_mode()
        if new is old:
            return []
        self._mode = new
        actions: list[Action] = []
        if old is Mode.EMERGENCY:
            actions.append(Lock())
        if new is Mode.EMERGENCY:
            self._emergency_refresh_at = now + EMERGENCY_REFRESH_SECONDS
            actions.append(Unlock(MAX_UNLOCK_SECONDS, OVERRIDE_REF))
            cause = "fire_alarm" if self._conditions.fire else "released_by_staff"
            actions.append(RaiseAlert("emergency", Severity.CRITICAL, cause))
            actions += self._interrupt(now)
        elif new is Mode.DEGRADED:
            actions.append(Lock())  # the failing part was alerted when it failed
            actions += self._interrupt(now)
        elif new is Mode.LOCKDOWN:
            actions.append(Lock())
            actions += self._lock_out_visit(now)
        elif new is Mode.FULL:
            actions.append(RaiseAlert("capacity_reached", Severity.INFO, "entry_paused"))
        visit = self._visit
        if old is Mode.LOCKDOWN and visit and visit.entry.outcome is Outcome.DENIED_LOCKDOWN:
            self.state = State.CHECKING  # lockdown lifted: check the visitor still waiting
        if self._mode_prompt() is not None or visit is None:
            return actions + self._show(self._resting_prompt())
        if self.state is State.CHECKING and not visit.waiting:
            return actions + self._show(Prompt.CHECKING)
        return actions

    def _compute_mode(self) -> Mode:
        c = self._conditions
        if c.fire or c.staff_emergency:
            return Mode.EMERGENCY
        if c.lockdown:
            return Mode.LOCKDOWN
        if not (c.camera_ok and c.station_ok):
            return Mode.DEGRADED
        capacity = self.policy.capacity
        if capacity is not None and self.occupancy >= capacity:
            return Mode.FULL
        return Mode.NORMAL

    def _after_occupancy_change(self, now: float) -> list[Action]:
        actions = self._remode(now)
        visit = self._visit
        if visit and visit.waiting and self._mode is Mode.NORMAL:
            actions += self._proceed(now, visit)
        return actions

    def _interrupt(self, now: float) -> list[Action]:
        """Emergency or degraded: the visit in progress cannot go on."""
        visit = self._visit
        if visit is None:
            return []
        if not visit.saved:
            return self._back_to_idle(visit)
        if visit.entry.outcome is Outcome.PENDING:
            visit.entry = replace(visit.entry, outcome=Outcome.INTERRUPTED)
        return self._finish(now, visit)

    def _lock_out_visit(self, now: float) -> list[Action]:
        """Lockdown: a visitor not yet let in is refused."""
        visit = self._visit
        if visit is None or self.state is State.UNLOCKED:
            return []
        visit.entry = replace(
            visit.entry, outcome=Outcome.DENIED_LOCKDOWN, decided_at=self.wall(now)
        )
        visit.saved = True
        visit.waiting = False
        self.state = State.DENIED
        return [SaveEntry(visit.entry)]

    def _resting_prompt(self) -> Prompt:
        return self._mode_prompt() or Prompt.IDLE

    def _mode_prompt(self) -> Prompt | None:
        if self._mode is Mode.EMERGENCY and not (self._conditions.fire or self.station_ok):
            # Staff released a door the station cannot reach: it is still locked. (A fire
            # input is different: the firmware releases the door by itself.)
            return Prompt.OUT_OF_SERVICE
        return {
            Mode.EMERGENCY: Prompt.EMERGENCY,
            Mode.LOCKDOWN: Prompt.LOCKDOWN,
            Mode.DEGRADED: Prompt.OUT_OF_SERVICE,
        }.get(self._mode)

    # ------------------------------------------------------------------ helpers

    def _show(self, prompt: Prompt | None) -> list[Action]:
        if prompt is None or prompt is self.prompt:
            return []
        self.prompt = prompt
        return [ShowPrompt(prompt)]

    def _face_of(self, visit: _Visit, faces: list[FaceVerdict]) -> FaceVerdict | None:
        return next((f for f in faces if f.track_key == visit.track_key), None)

    def _forget_done_tracks(self, now: float) -> None:
        for key, seen in list(self._done_tracks.items()):
            if now - seen >= self.policy.leave_seconds:
                del self._done_tracks[key]

    def _within_leave(self, now: float, last_seen: datetime) -> bool:
        """Whether a visit left open by a restart may still be the person in view.

        A visit seen "in the future" is not: the clock went back (a board that booted
        in 1970, an NTP step), and any face could otherwise take it over unchecked.
        """
        elapsed = (self.wall(now) - last_seen).total_seconds()
        return 0 <= elapsed <= self.policy.leave_seconds

    def _expire_resumable(self, now: float) -> list[Action]:
        entry = self._resumable
        if entry is None or self._within_leave(now, entry.last_seen_at):
            return []
        self._resumable = None
        return [SaveEntry(_closed(entry, self.wall(now)))]


def _closed(entry: EntryRecord, at: datetime) -> EntryRecord:
    """Close a visit left open by a restart; an unfinished admission is 'interrupted'."""
    outcome = Outcome.INTERRUPTED if entry.outcome is Outcome.PENDING else entry.outcome
    return replace(entry, outcome=outcome, finished_at=at)


def _prompt_for(label: MaskLabel | None) -> Prompt:
    return Prompt.PULL_MASK_UP if label is MaskLabel.INCORRECT_MASK else Prompt.WEAR_MASK
