"""The running gate: camera → controller → station and store → event bus.

The runtime owns no decisions. It feeds the controller (frames, station
events, time, staff commands) and carries out the actions it returns, one list
at a time and in order, under one lock, so an entry is always on disk before the
unlock that it explains is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import cv2
import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from gate import metrics
from gate.camera.sources import FrameSource
from gate.camera.verdict import FrameAnalysis, MaskLabel
from gate.config import Settings
from gate.controller import (
    Action,
    Controller,
    Dispense,
    EntryRecord,
    Lock,
    Mode,
    RaiseAlert,
    SaveEntry,
    ShowPrompt,
    TakeSnapshot,
    Unlock,
)
from gate.errors import CommandRefused, GateError
from gate.events import EventBus
from gate.sanitizer.station import LinkState, Station, StationEvent
from gate.store import records
from gate.store.db import ride_out
from gate.store.models import Entry, Outcome, Severity, local_midnight
from gate.store.retention import apply_retention

log = logging.getLogger("gate.runtime")

TICK_SECONDS = 0.05
# At the end of a replayed file, time is run on this far so open visits conclude.
FLUSH_SECONDS = 600.0
# Station events worth keeping for statistics, and the name they are kept under.
STATION_LOG_KINDS = {
    "dispensed": "dispensed",
    "exit_request": "exit",
    "door_forced": "door_forced",
    "door_held": "door_held",
    "fire_on": "fire_on",
    "fire_off": "fire_off",
    "tamper": "tamper",
    "fluid_low": "fluid_low",
    "fluid_empty": "fluid_empty",
}
# Station events that alert the guard: severity, and what to do (a key the panel translates).
STATION_ALERTS = {
    "fluid_low": (Severity.WARNING, "refill_soon"),
    "fluid_empty": (Severity.CRITICAL, "refill_now"),
    "door_forced": (Severity.CRITICAL, "check_door"),
    "door_held": (Severity.WARNING, "close_door"),
    "tamper": (Severity.CRITICAL, "check_station"),
    "fault": (Severity.WARNING, "check_station"),
}
REFILL_JUMP_PERCENT = 20  # a fluid level rising this much at once is a refill


class Analyzer(Protocol):
    def analyze(self, frame: np.ndarray, at: float) -> FrameAnalysis: ...
    def annotate(self, frame: np.ndarray, analysis: FrameAnalysis) -> np.ndarray: ...
    def close(self) -> None: ...


class GateRuntime:
    """One gate at work. Create it, then `await run()`; `stop()` ends it cleanly."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        source: FrameSource,
        vision: Analyzer,
        station: Station,
        *,
        clock: Callable[[], float] = time.monotonic,
        realtime: bool = True,
        bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.vision = vision
        self.station = station
        self.bus = bus or EventBus()
        self.clock = clock
        # Replaying a file runs as fast as it decodes, on the file's own clock.
        self.realtime = realtime
        self._epoch = (clock(), datetime.now(UTC))
        self._zone = ZoneInfo(settings.server.timezone)
        self._occupancy_day = self._today()
        self.controller = Controller(
            settings.policy,
            wall=self._wall,
            occupancy=records.occupancy(engine, settings.gate_id, self._day_start()),
        )
        self._lock = asyncio.Lock()
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="gate-db")
        self._vision_pool = ThreadPoolExecutor(1, thread_name_prefix="gate-vision")
        self._stopping = asyncio.Event()
        # Set once the gate has resumed open visits and restored standing orders: from
        # then on its mode is the one it will act on.
        self.started = asyncio.Event()
        self._watchers = 0
        self._latest_annotated: np.ndarray | None = None
        self._last_frame: np.ndarray | None = None
        self._last_analysis: FrameAnalysis | None = None
        self._last_frame_at = clock()
        self._fluid_percent: int | None = None
        self._fps = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._link_counts: dict[str, int] = {}
        self._published_state: dict[str, Any] | None = None
        self.decisions: list[dict[str, Any]] = []  # what `gate replay` prints
        self.hub: Any = None  # the replication to the site hub (gate.hub.client), when set up

    # ------------------------------------------------------------------ life

    async def run(self) -> None:
        """Run until stop() or the source runs dry (when not realtime)."""
        await self._db(records.ensure_gate, self.engine, self.settings.gate_id)
        events = self.station.subscribe()
        await self.station.start()
        now = self.clock()
        open_entries = await self._db(records.open_entries, self.engine, self.settings.gate_id)
        await self._feed(self.controller.resume(now, [_record(e) for e in open_entries]))
        await self._restore_standing_orders(now)
        await self._feed(
            self.controller.station_health(now, self.station.state is not LinkState.OFFLINE)
        )
        self._publish_state(force=True)
        self.started.set()
        if self.settings.hub.url and self.realtime:
            from gate.hub.client import HubClient

            # Reads the token first: a missing token file ends the start with one line.
            self.hub = HubClient(self)
            self._keep(asyncio.create_task(self.hub.run(), name="hub"))
        tasks = [asyncio.create_task(self._station_loop(events), name="station")]
        if self.realtime:
            tasks.append(asyncio.create_task(self._tick_loop(), name="tick"))
            tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        camera = asyncio.create_task(self._camera_loop(), name="camera")
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            # Any loop that dies ends the run (and the process: systemd restarts it). A
            # station or tick loop that died alone would leave a gate that looks alive
            # but never hears the dispenser or times a visit out.
            done, _ = await asyncio.wait(
                [*tasks, camera, stopper], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self._stopping.set()  # whoever waits in stopping() (the panel) ends too
            for task in [*tasks, camera, stopper, *self._background]:
                task.cancel()
            await asyncio.gather(*tasks, camera, stopper, *self._background, return_exceptions=True)
            await self.station.close()
            self.source.close()
            # Closed here, on its own thread: MediaPipe hangs if the garbage
            # collector has to close a detector later.
            await asyncio.get_running_loop().run_in_executor(self._vision_pool, self.vision.close)
            self._db_pool.shutdown(wait=True)
            self._vision_pool.shutdown(wait=True)

    def stop(self) -> None:
        self._stopping.set()

    def stop_on_signals(self) -> None:
        """SIGTERM (systemd) and Ctrl-C end the gate cleanly: door locked, link closed."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def stopping(self) -> None:
        """Wait until someone asks the runtime to stop."""
        await self._stopping.wait()

    # ------------------------------------------------------------------ staff commands

    async def override_unlock(self, actor: str, reason: str) -> None:
        """Let one person in. Refused, and so neither audited nor counted, when the
        station cannot do it or the door is already released for an emergency."""
        if not self.controller.station_ok:
            raise CommandRefused("station_offline")
        if self.controller.mode is Mode.EMERGENCY:
            raise CommandRefused("door_released")
        await self._audit(actor, "override_unlock", reason)
        await self._db(records.log_station, self.engine, self.settings.gate_id, "override_unlock")
        await self._command(self.controller.override_unlock)

    async def set_lockdown(self, actor: str, on: bool, reason: str, detail: str = "") -> None:
        await self._audit(actor, "lockdown_on" if on else "lockdown_off", reason, detail)
        await self._command(lambda now: self.controller.set_lockdown(now, on))

    async def set_emergency(self, actor: str, on: bool, reason: str, detail: str = "") -> None:
        await self._audit(actor, "emergency_on" if on else "emergency_off", reason, detail)
        await self._command(lambda now: self.controller.set_emergency(now, on))

    async def reset_occupancy(self, actor: str, reason: str) -> None:
        await self._audit(actor, "occupancy_reset", reason)
        await self._db(records.log_station, self.engine, self.settings.gate_id, "occupancy_reset")
        await self._command(self.controller.reset_occupancy)

    async def _restore_standing_orders(self, now: float) -> None:
        """A lockdown or an emergency release that staff ordered outlives a restart: the
        audit, written before each order is carried out, says which still stand."""
        orders = await self._db(records.standing_orders, self.engine, self.settings.gate_id)
        carry_out = {
            "lockdown_on": self.controller.set_lockdown,
            "emergency_on": self.controller.set_emergency,
        }
        for order in orders:
            log.warning(
                "%s by %s at %s still stands", order.action, order.actor, order.at.isoformat()
            )
            await self._feed(carry_out[order.action](now, True))

    # ------------------------------------------------------------------ panel views

    def snapshot(self) -> dict[str, Any]:
        """The gate as the panel shows it. A part that is down shows no readings: a frame
        rate or a fluid level from before it failed would be stale."""
        c = self.controller
        camera_ok = self._camera_healthy()
        station_ok = self.station.state is not LinkState.OFFLINE
        return {
            "gate_id": self.settings.gate_id,
            "state": c.state.value,
            "mode": c.mode.value,
            "prompt": c.prompt.value,
            "occupancy": c.occupancy,
            "capacity": self.settings.policy.capacity,
            "camera": {"healthy": camera_ok, "fps": round(self._fps, 1) if camera_ok else None},
            "station": {
                "link": self.station.state.value,
                "fluid_percent": self._fluid_percent if station_ok else None,
            },
            "hub": self.hub.report() if self.hub is not None else None,
        }

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """While held, annotated frames are kept for the live view."""
        self._watchers += 1
        try:
            yield
        finally:
            self._watchers -= 1
            if not self._watchers:
                self._latest_annotated = None

    def latest_frame(self) -> np.ndarray | None:
        """The newest annotated frame; none while the camera is stalled, so the live view
        says "no signal" rather than showing a frozen picture as live."""
        return self._latest_annotated if self._camera_healthy() else None

    def sight(self) -> tuple[np.ndarray, FrameAnalysis] | None:
        """The newest camera frame and what was seen in it, for the kiosk's mirror; none
        while the camera is stalled, so the visitor is never shown an old picture."""
        frame, analysis = self._last_frame, self._last_analysis
        if frame is None or analysis is None or not self._camera_healthy():
            return None
        return frame, analysis

    # ------------------------------------------------------------------ loops

    async def _camera_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.settings.camera.fps
        while not self._stopping.is_set():
            got = self.source.read()
            if got is None:
                if not self.realtime and getattr(self.source, "done", False):
                    await self._feed(self.controller.tick(self.clock() + FLUSH_SECONDS))
                    return
                await asyncio.sleep(interval / 2 if self.realtime else 0)
                continue
            at, frame = got
            analysis = await loop.run_in_executor(self._vision_pool, self.vision.analyze, frame, at)
            self._measure_fps(at)
            self._last_frame, self._last_analysis, self._last_frame_at = frame, analysis, at
            metrics.FRAMES.inc()
            metrics.INFERENCE_MS.observe(analysis.ms)
            metrics.CAMERA_FPS.set(self._fps)
            if self._watchers:
                self._latest_annotated = await loop.run_in_executor(
                    self._vision_pool, self.vision.annotate, frame, analysis
                )
            async with self._lock:
                await self._apply(self.controller.camera_health(at, True))
                await self._apply(self.controller.frame(at, analysis.faces))
                if not self.realtime:
                    await self._apply(self.controller.tick(at))
            if not self.realtime:
                await asyncio.sleep(0)  # let station events through between frames

    async def _tick_loop(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            metrics.LOOP_LAG_MS.observe(max(0.0, time.monotonic() - asked - TICK_SECONDS) * 1000)
            now = self.clock()
            self._sync_link_metrics()
            async with self._lock:
                if not self._camera_healthy(now):
                    await self._apply(self.controller.camera_health(now, False))
                if (today := self._today()) != self._occupancy_day:
                    self._occupancy_day = today
                    log.info("a new day: the count of people inside starts again at 0")
                    await self._apply(self.controller.reset_occupancy(now))
                await self._apply(self.controller.tick(now))

    async def _station_loop(self, events: asyncio.Queue[StationEvent]) -> None:
        while True:
            event = await events.get()
            metrics.QUEUE_DEPTH.labels(queue="station_events").set(events.qsize())
            await self._on_station_event(event)

    async def _retention_loop(self) -> None:
        interval = self.settings.retention.interval_minutes * 60
        while True:
            await self._db(apply_retention, self.engine, self.settings)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ station

    async def _on_station_event(self, event: StationEvent) -> None:
        gate_id = self.settings.gate_id
        now = self.clock()
        metrics.STATION_LINK.state(self.station.state.value)
        if event.kind.startswith("link_"):
            online = event.kind != "link_offline"
            async with self._lock:
                await self._apply(self.controller.station_health(now, online))
            self._publish_state()
            return
        self.bus.publish("station", {"kind": event.kind, "value": event.value, "ref": event.ref})
        if event.kind == "fluid_level" and event.value is not None:
            await self._on_fluid_level(event.value)
        if event.kind in STATION_LOG_KINDS:
            await self._db(
                records.log_station,
                self.engine,
                gate_id,
                STATION_LOG_KINDS[event.kind],
                event.value,
            )
        if event.kind in STATION_ALERTS:
            severity, message = STATION_ALERTS[event.kind]
            await self._alert(event.kind, severity, message)
        async with self._lock:
            await self._apply(self.controller.station_event(now, event.kind, event.ref))

    async def _on_fluid_level(self, percent: int) -> None:
        previous, self._fluid_percent = self._fluid_percent, percent
        metrics.FLUID_PERCENT.set(percent)
        if previous is not None and percent - previous >= REFILL_JUMP_PERCENT:
            await self._db(
                records.log_station, self.engine, self.settings.gate_id, "refill", percent
            )

    # ------------------------------------------------------------------ actions

    async def _command(self, step: Callable[[float], list[Action]]) -> None:
        async with self._lock:
            await self._apply(step(self.clock()))

    async def _feed(self, actions: list[Action]) -> None:
        async with self._lock:
            await self._apply(actions)

    async def _apply(self, actions: list[Action]) -> None:
        """Carry out actions in order; a failing actuator raises an alert, never a crash."""
        for action in actions:
            match action:
                case SaveEntry(entry):
                    await self._save(entry)
                case Unlock(seconds, ref):
                    await self._actuate("unlock", self.station.unlock(seconds, ref))
                case Lock():
                    await self._actuate("lock", self.station.lock())
                case Dispense():
                    # The pump runs for most of a second; nothing waits on it, and
                    # its 'dispensed' event moves the visit on.
                    dose = self.settings.station.dose_ms
                    self._keep(
                        asyncio.create_task(self._actuate("dispense", self.station.dispense(dose)))
                    )
                case RaiseAlert(kind, severity, message, entry_id):
                    await self._alert(kind, severity, message, entry_id)
                case ShowPrompt(prompt):
                    self.bus.publish("prompt", {"prompt": prompt.value})
                case TakeSnapshot(entry_id, denied):
                    await self._snapshot(entry_id, denied)
        self._publish_state()

    async def _save(self, entry: EntryRecord) -> None:
        row = Entry(gate_id=self.settings.gate_id, **asdict(entry))
        await self._db(records.save_entry, self.engine, row)
        if entry.decided_at is not None and entry.finished_at is not None:
            metrics.DECISIONS.labels(outcome=entry.outcome.value).inc()
            self.decisions.append(
                {
                    "time": (entry.decided_at - self._epoch[1]).total_seconds(),
                    "label": entry.mask_label.value if entry.mask_label else None,
                    "score": entry.mask_score,
                    "outcome": entry.outcome.value,
                }
            )
        self.bus.publish("entry", row.model_dump(mode="json"))

    async def _actuate(self, what: str, command: Any) -> None:
        try:
            await command
        except GateError as exc:
            log.warning("station %s failed: %s", what, exc)
            if what != "lock":  # a lock that cannot be sent: the firmware relocks by itself
                await self._alert(f"{what}_failed", Severity.CRITICAL, "check_station_link")

    async def _alert(
        self, kind: str, severity: Severity, message: str, entry_id: str | None = None
    ) -> None:
        alert = await self._db(
            records.raise_alert,
            self.engine,
            self.settings.gate_id,
            kind,
            severity.value,
            message,
            entry_id,
        )
        self.bus.publish("alert", alert.model_dump(mode="json"))

    async def _audit(self, actor: str, action: str, reason: str, detail: str = "") -> None:
        event = await self._db(
            records.record_audit, self.engine, actor, action, reason, detail, self.settings.gate_id
        )
        self.bus.publish("override", event.model_dump(mode="json"))

    async def _snapshot(self, entry_id: str, denied: bool) -> None:
        wanted = self.settings.snapshots.denied if denied else self.settings.snapshots.admitted
        frame, analysis = self._last_frame, self._last_analysis
        if not wanted or frame is None:
            return
        if self.settings.snapshots.blur_faces and analysis is not None:
            frame = blur_faces(frame, analysis)
        folder = self.settings.snapshots_dir / datetime.now(UTC).strftime("%Y-%m-%d")
        path = folder / f"{entry_id}.jpg"
        try:
            await self._db(_write_jpeg, path, frame)
        except OSError as exc:
            log.warning("snapshot not saved: %s", exc)
            return
        await self._db(records.set_snapshot, self.engine, entry_id, str(path))

    # ------------------------------------------------------------------ helpers

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a task nothing awaits until it ends; `run` cancels those left at its end."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call off the event loop. A database that cannot be reached or
        written (server down, disk full) is not a bug: a short outage is waited out, a
        longer one ends the run with one line."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._db_pool, ride_out, fn, *args)
        except OperationalError as exc:
            reason = str(exc.orig or exc).splitlines()[0]
            raise GateError(f"database unavailable: {reason}") from None

    def _sync_link_metrics(self) -> None:
        """Carry the link's own counters over to Prometheus as increments."""
        link = self.station.metrics
        seen = self._link_counts
        for name, counter in (
            ("retransmits", metrics.STATION_RETRANSMITS),
            ("crc_errors", metrics.STATION_LINK_ERRORS.labels(kind="crc")),
            ("framing_errors", metrics.STATION_LINK_ERRORS.labels(kind="framing")),
        ):
            value = getattr(link, name)
            if value > seen.get(name, 0):
                counter.inc(value - seen.get(name, 0))
            seen[name] = value

    def _today(self) -> date:
        """The local date, in the zone the panel and statistics use."""
        return datetime.now(self._zone).date()

    def _day_start(self) -> datetime:
        """Local midnight of today, in UTC: the count of people inside starts there."""
        return local_midnight(self._today(), self._zone)

    def _wall(self, mono: float) -> datetime:
        """The wall-clock time of an instant on the gate's clock.

        Live, the wall clock is read afresh, so a clock that NTP sets right while the
        gate runs (a box without a battery-backed clock boots in 1970) dates the
        entries after it right, and retention does not take them for old ones. A
        replay runs on the file's own clock, counted from its start.
        """
        if self.realtime:
            return datetime.now(UTC) - timedelta(seconds=self.clock() - mono)
        start_mono, start_wall = self._epoch
        return start_wall + timedelta(seconds=mono - start_mono)

    def _camera_healthy(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return now - self._last_frame_at < self.settings.camera.stall_seconds

    def _measure_fps(self, at: float) -> None:
        """Frames per second actually analysed, smoothed over about a second."""
        interval = at - self._last_frame_at
        if interval > 0:
            self._fps += (1 / interval - self._fps) * min(1.0, interval)

    def _publish_state(self, force: bool = False) -> None:
        """Publish the state when it changed; a moving frame rate alone is not a change."""
        state = self.snapshot()
        steady = {**state, "camera": {**state["camera"], "fps": None}, "hub": None}
        if force or steady != self._published_state:
            self._published_state = steady
            metrics.OCCUPANCY.set(state["occupancy"])
            self.bus.publish("state", state)


def _record(row: Entry) -> EntryRecord:
    """Turn a stored entry back into the controller's snapshot type."""
    return EntryRecord(
        id=row.id,
        unlock_ref=row.unlock_ref,
        outcome=Outcome(row.outcome),
        seen_at=_aware(row.seen_at),
        last_seen_at=_aware(row.last_seen_at or row.seen_at),
        mask_label=MaskLabel(row.mask_label) if row.mask_label else None,
        mask_score=row.mask_score,
        first_label=MaskLabel(row.first_label) if row.first_label else None,
        first_decided_at=_aware(row.first_decided_at),
        decided_at=_aware(row.decided_at),
        sanitized=row.sanitized,
        sanitized_at=_aware(row.sanitized_at),
        unlocked_at=_aware(row.unlocked_at),
        door_opened=row.door_opened,
        door_opened_at=_aware(row.door_opened_at),
        finished_at=_aware(row.finished_at),
    )


def _aware(value: datetime | None) -> Any:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def blur_faces(frame: np.ndarray, analysis: FrameAnalysis) -> np.ndarray:
    out = frame.copy()
    for face in analysis.faces:
        x, y, w, h = face.box
        x0, y0 = max(0, x), max(0, y)
        region = out[y0 : y + h, x0 : x + w]
        if region.size:
            out[y0 : y + h, x0 : x + w] = cv2.GaussianBlur(region, (0, 0), max(3, w // 8))
    return out


def _write_jpeg(path: Path, frame: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError("JPEG encoding failed")
    path.write_bytes(data.tobytes())
