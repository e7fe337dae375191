"""The soak itself: set the scene, start the gate, inject faults, sample, check, report."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from gate.camera.models import models_dir
from gate.errors import GateError
from gate.server.users import create_user, generate_password
from gate.soak import invariants, panel
from gate.soak.faults import PlannedFault, schedule
from gate.soak.rig import Clock, DataDisk, Postgres, Station, Supervisor, free_port
from gate.soak.scene import SceneCamera, visitor_stream
from gate.store.db import make_engine, open_database, session
from gate.store.models import Alert, AuditEvent, Entry, Role

GATE_ID = "soak"
SAMPLE_SECONDS = 5.0
POLL_SECONDS = 1.0
RELAY_POLL_SECONDS = 0.2
RECOVERY_SECONDS = 300.0  # a killed gate reloads its models, slowly on a busy machine
ACK_AFTER_SECONDS = 60.0  # the guard reads and acknowledges what has stood this long
OVERRIDE_EVERY_SECONDS = 150.0  # now and then the guard lets a courier in by hand
DATA_DISK_MB = 48
CAMERA_FPS = 10.0
POLICY = {
    "unlock_seconds": 2.0,
    "sanitizer_timeout_seconds": 4.0,
    "deny_hold_seconds": 2.0,
    "leave_seconds": 1.0,
}
HANDS_DELAY_SECONDS = 0.4
HANDS_HOLD_SECONDS = 1.0


@dataclass
class FaultRecord:
    kind: str
    started: float
    ended: float
    recovered: float | None = None
    alert_ids: tuple[int, int] = (0, 0)  # alerts raised in this id range belong to it
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Soak:
    """One soak run. `run()` returns every figure; nothing of it survives the run but
    the report."""

    minutes: float
    database: str
    seed: int
    models_from: Path
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gate-soak-")))
    log: Any = None  # a callable for progress lines, or None

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.faults: list[FaultRecord] = []
        self.samples: list[dict[str, Any]] = []
        self.state: dict[str, Any] | None = None
        self.state_at = 0.0
        self.kiosk_stale: list[tuple[float, float, str, str]] = []
        self.relay_periods: list[tuple[float, float, bool]] = []  # start, end, fire seen
        self.overrides: list[tuple[float, float]] = []
        self.clock_periods: list[tuple[float, float, int]] = []
        self._current_fault: str | None = None
        self.fluid_percent = 100
        self.postgres: Postgres | None = None
        self.engine: Engine | None = None
        self._threads: list[threading.Thread] = []

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)

    # ------------------------------------------------------------------ set-up

    def _configure(self) -> Path:
        data = self.work / "data"
        self.disk = DataDisk(data, DATA_DISK_MB)
        self.disk.start()
        shutil.copytree(models_dir(self.models_from), models_dir(data))
        if self.database == "postgresql":
            self.postgres = Postgres(self.work / "postgres")
            self.postgres.start()
            url = self.postgres.url
        else:
            url = f"sqlite:///{data / 'gate.db'}"
        self.url = url
        self.engine = open_database(url)
        self.password = generate_password()
        create_user(self.engine, "guard", Role.SECURITY, self.password)
        self.port = free_port()
        policy = "\n".join(f"{k} = {v}" for k, v in POLICY.items())
        config = self.work / "gate.toml"
        config.write_text(
            f'gate_id = "{GATE_ID}"\ndata_dir = "{data}"\ndatabase_url = "{url}"\n'
            f'[camera]\nsource = "{self.camera.url}"\nfps = {CAMERA_FPS}\n'
            f'[station]\nport = "{self.station.link}"\n'
            f"[policy]\n{policy}\n"
            f'[server]\nport = {self.port}\ntimezone = "UTC"\n',
            encoding="utf-8",
        )
        return config

    def run(self) -> dict[str, Any]:
        seconds = self.minutes * 60
        visits = visitor_stream(
            self.seed, seconds, POLICY["sanitizer_timeout_seconds"], POLICY["leave_seconds"]
        )
        self.camera = SceneCamera(visits, CAMERA_FPS, (640, 480), self.seed)
        self.camera.start()
        self.station = Station(self.work)
        self.clock = Clock(self.work / "clock")
        if not self.clock.available:
            raise GateError("the soak steps the gate's clock with libfaketime (Debian: faketime)")
        try:
            self.station.start()
            config = self._configure()
            self.supervisor = Supervisor(config, self.clock.environment(), self.work)
            self.supervisor.start()
            self.began = time.time()
            self._wait_until_normal(self.began + RECOVERY_SECONDS, "the gate to start")
            self.say(f"gate up after {time.time() - self.began:.0f} s; soaking {self.minutes} min")
            self._start_people()
            self._fault_loop(self.began + seconds)
            self.ended = time.time()
            self.stop.set()
            for thread in self._threads:
                thread.join(timeout=15)
            self.supervisor.stop()
            return self._results()
        finally:
            self.stop.set()
            self._tear_down()

    def _tear_down(self) -> None:
        with contextlib.suppress(Exception):
            self.supervisor.stop()
        self.station.stop()
        self.camera.stop()
        if self.engine is not None:
            self.engine.dispose()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        with contextlib.suppress(Exception):
            self.disk.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ people

    def _thread(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_people(self) -> None:
        self.kiosk = panel.Kiosk(self.port)
        self.kiosk.listeners.append(self._on_prompt)
        self._thread(self.kiosk.run, self.stop)
        self.guard = panel.Browser(self.port)
        self.guard.login("guard", self.password)
        self.live_views = []
        for _ in range(2):
            browser = panel.Browser(self.port)
            browser.login("guard", self.password)
            view = panel.LiveView(browser)
            self.live_views.append(view)
            self._thread(view.run, self.stop)
        self._thread(self._guard_loop)
        self._thread(self._relay_loop)
        self._thread(self._sample_loop)
        self._thread(self._exit_button_loop)

    def _on_prompt(self, prompt: str) -> None:
        """The visitor in view does what the kiosk asks, if they are the kind who does."""
        if prompt != "sanitize":
            return
        visit = self.camera.visit_at(time.time())
        if visit is None or not visit.kind.sanitizes:
            return
        if self._current_fault in ("door_held", "door_forced"):
            return  # an unlock now would let the simulated visitor close the propped door

        def hands() -> None:
            time.sleep(HANDS_DELAY_SECONDS)
            self._station("hands on")
            time.sleep(HANDS_HOLD_SECONDS)
            self._station("hands off")

        threading.Thread(target=hands, daemon=True).start()

    def _station(self, command: str) -> str:
        try:
            return self.station.send(command)
        except (OSError, ValueError):
            return ""

    def _exit_button_loop(self) -> None:
        """Someone inside presses the exit button as each 'exit' visit comes round."""
        pressed: set[int] = set()
        while not self.stop.wait(0.5):
            visit = self.camera.visit_at(time.time())
            if visit is not None and visit.kind.name == "exit" and visit.index not in pressed:
                pressed.add(visit.index)
                self._station("exit")

    def _guard_loop(self) -> None:
        """The guard's browser: the state every second, alerts read and acknowledged,
        an override now and then; the kiosk compared with the gate's own prompt."""
        first_seen: dict[int, float] = {}
        last_alerts = last_override = time.time()
        mismatch: tuple[float, str, str] | None = None  # since, kiosk's prompt, gate's
        while not self.stop.wait(POLL_SECONDS):
            now = time.time()
            try:
                status, body = self.guard.request("GET", "/api/state")
                if status in (401, 403):
                    self.guard.login("guard", self.password)
                    continue
                if status != 200:
                    continue
                self.state, self.state_at = json.loads(body), now
            except (OSError, http.client.HTTPException, ValueError):
                self.state, mismatch = None, None
                continue
            gate_prompt, shown = self.state.get("prompt"), self.kiosk.prompt
            if not self.kiosk.connected or shown == gate_prompt:
                if mismatch is not None and now - mismatch[0] > 5:
                    self.kiosk_stale.append((mismatch[0], now, *mismatch[1:]))
                mismatch = None
            elif mismatch is None:
                mismatch = (now, str(shown), str(gate_prompt))
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if now - last_alerts >= 10:
                    last_alerts = now
                    for alert in self.guard.get_json("/api/alerts"):
                        seen = first_seen.setdefault(alert["id"], now)
                        if now - seen >= ACK_AFTER_SECONDS:
                            self.guard.request("POST", f"/api/alerts/{alert['id']}/ack")
                if now - last_override >= OVERRIDE_EVERY_SECONDS and self._calm():
                    last_override = now
                    status, _ = self.guard.request(
                        "POST",
                        "/api/overrides/unlock",
                        json.dumps({"reason": "soak: a courier with a parcel"}),
                        {"Content-Type": "application/json"},
                    )
                    if status == 200:
                        self.overrides.append((now, time.time()))

    def _calm(self) -> bool:
        state = self.state or {}
        return state.get("mode") == "normal" and state.get("state") == "idle"

    def _relay_loop(self) -> None:
        """Watch the relay as the emulated world sees it, and time each release."""
        since: float | None = None
        fire = False
        while not self.stop.wait(RELAY_POLL_SECONDS):
            answer = self._station("status")
            now = time.time()
            fields = dict(part.split("=", 1) for part in answer.split() if "=" in part)
            if "fluid" in fields:
                with contextlib.suppress(ValueError):
                    self.fluid_percent = int(fields["fluid"].rstrip("%"))
            unlocked = fields.get("relay") == "unlocked"
            if unlocked and since is None:
                since, fire = now, False
            if unlocked and fields.get("fire") == "on":
                fire = True
            if not unlocked and since is not None:
                self.relay_periods.append((since, now, fire))
                since = None

    # ------------------------------------------------------------------ sampling

    def _sample_loop(self) -> None:
        previous: dict[str, float] = {}
        while not self.stop.wait(SAMPLE_SECONDS):
            with contextlib.suppress(Exception):  # a sample missed is a gap, not a failure
                self.samples.append(self._sample(previous))

    def _sample(self, previous: dict[str, float]) -> dict[str, Any]:
        now = time.time()
        sample: dict[str, Any] = {"t": round(now - self.began, 1)}
        pids = {
            "gate": [self.supervisor.pid] if self.supervisor.pid else [],
            "station": [self.station.process.pid] if self.station.process else [],
            "soak": [os.getpid()],
        }
        if self.postgres is not None:
            pids["postgres"] = self.postgres.pids()
        for name, group in pids.items():
            usage = [invariants.process_usage(pid) for pid in group]
            usage = [u for u in usage if u is not None]
            if usage:
                sample[f"{name}_rss_mb"] = round(sum(u[0] for u in usage), 1)
                sample[f"{name}_fds"] = sum(u[1] for u in usage)
                sample[f"{name}_threads"] = sum(u[2] for u in usage)
        sample["gate_pid"] = self.supervisor.pid
        data = self.disk.mount
        sample["log_mb"] = round(_size(data, "gate.log*") / 1e6, 3)
        if self.postgres is None:
            sample["db_mb"] = round(_size(data, "gate.db") / 1e6, 3)
            sample["wal_mb"] = round(_size(data, "gate.db-wal") / 1e6, 3)
        else:
            sample["wal_mb"] = round(self.postgres.wal_bytes() / 1e6, 3)
            size = self._scalar(text("select pg_database_size('soak')"))
            if size is not None:
                sample["db_mb"] = round(size / 1e6, 3)
        open_alerts = select(func.count(Alert.id)).where(Alert.acknowledged_at.is_(None))
        sample["open_alerts"] = self._scalar(open_alerts)
        scrape = invariants.scrape_metrics(self.port)
        if scrape:
            dt = now - previous.get("t", now)
            frames = scrape.get("gate_frames_total", 0.0)
            if dt > 0 and frames >= previous.get("frames", math.inf):
                sample["fps"] = round((frames - previous["frames"]) / dt, 2)
            lag_sum = scrape.get("gate_event_loop_lag_ms_sum", 0.0)
            lag_count = scrape.get("gate_event_loop_lag_ms_count", 0.0)
            if lag_count > previous.get("lag_count", math.inf):
                sample["loop_lag_ms"] = round(
                    (lag_sum - previous["lag_sum"]) / (lag_count - previous["lag_count"]), 2
                )
            sample["sse_clients"] = scrape.get("gate_panel_sse_clients")
            previous.update(t=now, frames=frames, lag_sum=lag_sum, lag_count=lag_count)
        latencies = self._latencies_since(previous.get("entries_seen", now - SAMPLE_SECONDS))
        previous["entries_seen"] = now
        if latencies:
            sample["latency_p95_ms"] = round(invariants.percentile(latencies, 95), 1)
        fault = self._current_fault
        if fault:
            sample["fault"] = fault
        return sample

    def _scalar(self, statement: Any) -> Any:
        """One value from the store, or None while it cannot be read (a fault)."""
        try:
            with self.engine.connect() as c:  # type: ignore[union-attr]
                return c.execute(statement).scalar()
        except SQLAlchemyError:
            return None

    def _latencies_since(self, since: float) -> list[float]:
        """Decision latency of the entries decided since `since` (soak time)."""
        with contextlib.suppress(SQLAlchemyError):
            with self.engine.connect() as c:  # type: ignore[union-attr]
                rows = c.execute(
                    select(Entry.seen_at, Entry.first_decided_at, Entry.decided_at)
                    .where(Entry.gate_id == GATE_ID)
                    .order_by(Entry.seen_at.desc())
                    .limit(20)
                ).all()
            offset = self.clock.offset
            return [
                ms
                for seen, first, decided in rows
                if (ms := invariants.decision_ms(seen, first, decided)) is not None
                and invariants.wall(seen) - offset >= since - 10
            ]
        return []

    # ------------------------------------------------------------------ faults

    def _fault_loop(self, until: float) -> None:
        plan = schedule(self.seed, self.postgres is not None)
        while True:
            fault = next(plan)
            if self.stop.wait(fault.calm_before) or time.time() + fault.hold > until:
                break
            self._inject(fault)
        self.stop.wait(max(0.0, until - time.time()))

    def _max_alert_id(self) -> int:
        for _ in range(30):
            if (found := self._scalar(select(func.coalesce(func.max(Alert.id), 0)))) is not None:
                return found
            time.sleep(1)
        return 0

    def _inject(self, planned: PlannedFault) -> None:
        kind = planned.kind.name
        first_alert = self._max_alert_id()
        record = FaultRecord(kind, time.time(), time.time())
        self._current_fault = kind
        self.say(f"{record.started - self.began:7.0f} s  fault {kind} ({planned.hold:.0f} s)")
        hold = planned.hold
        match kind:
            case "camera_gone":
                self.camera.gone = True
                time.sleep(hold)
                self.camera.gone = False
            case "camera_stall":
                self.camera.stalled = True
                time.sleep(hold)
                self.camera.stalled = False
            case "station_unplugged":
                self._station("unplug")
                time.sleep(hold)
                self._station("plug")
            case "station_reboot":
                self._station("reboot")
            case "fluid_empty":
                self._station("empty")
                time.sleep(hold)
                self._station("refill")
            case "door_held":
                self._station("exit")  # someone leaves, and props the door open
                time.sleep(0.3)
                self._station("door open")
                time.sleep(hold)
                self._station("door close")
            case "door_forced":
                self._station("door open")
                time.sleep(hold)
                self._station("door close")
            case "fire":
                self._station("fire on")
                time.sleep(hold)
                self._station("fire off")
            case "disk_full":
                self.disk.fill()
                time.sleep(hold)
                self.disk.free()
            case "database_restart":
                assert self.postgres is not None
                self.postgres.restart()
            case "clock_step":
                start = time.time()
                self.clock.set(planned.clock_step)
                time.sleep(hold)
                self.clock.set(0)
                # libfaketime re-reads the file within a second: both sides are unsure.
                self.clock_periods.append((start - 2, time.time() + 2, planned.clock_step))
                record.detail["step_seconds"] = planned.clock_step
            case "gate_killed":
                record.detail["killed"] = self.supervisor.kill()
            case "wrong_logins":
                record.detail["answers"] = panel.wrong_logins(self.port, 20)
            case "event_crowd":
                record.detail["connected"] = panel.event_crowd(self.port, 50, hold)
        record.ended = time.time()
        self._wait_until_normal(record.ended + RECOVERY_SECONDS, kind)
        self._current_fault = None
        if self.state is not None and self.state_at >= record.ended:
            record.recovered = self.state_at
        if kind == "event_crowd":
            record.detail["sse_clients_after"] = self._sse_clients_settled()
        record.alert_ids = (first_alert, self._max_alert_id())
        self.faults.append(record)

    def _sse_clients_settled(self) -> float | None:
        """The open stream count once the crowd's connections are closed (a few seconds)."""
        value = None
        for _ in range(10):
            value = invariants.scrape_metrics(self.port).get("gate_panel_sse_clients")
            if value is not None and value <= 3:
                break
            time.sleep(1)
        return value

    def _wait_until_normal(self, deadline: float, what: str) -> None:
        """Until the guard's poller sees the gate normal again: mode, camera, station."""
        asked = time.time()
        while time.time() < deadline and not self.stop.is_set():
            if self._normal(asked):
                return
            if not hasattr(self, "kiosk"):  # at start, before the guard's poller runs
                self._poll_state_once()
            time.sleep(0.5)
        if what == "the gate to start":
            raise GateError(f"the gate did not come up in {RECOVERY_SECONDS:.0f} s")

    def _poll_state_once(self) -> None:
        browser = getattr(self, "_starter", None)
        if browser is None:
            browser = self._starter = panel.Browser(self.port)
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            status, body = browser.request("GET", "/api/state")
            if status in (401, 403):  # once per gate life, not every poll: a login hashes
                browser.login("guard", self.password)
            elif status == 200:
                self.state, self.state_at = json.loads(body), time.time()

    def _normal(self, after: float) -> bool:
        state = self.state
        return (
            state is not None
            and self.state_at > after + 1
            and state.get("mode") == "normal"
            and state["camera"]["healthy"]
            and state["station"]["link"] == "connected"
            and self.fluid_percent > 50
        )

    # ------------------------------------------------------------------ results

    def _results(self) -> dict[str, Any]:
        # Visitors from the moment the gate was first up: before, nobody was looking.
        up = self.began - (self.camera.started_at or self.began)
        shown = [v for v in self.camera.shown(self.ended) if v.start >= up]
        announced: dict[str, str] = {}
        for view in self.live_views:
            announced |= view.entries
        with contextlib.suppress(SQLAlchemyError):
            self.engine.dispose()  # type: ignore[union-attr]
        engine = make_engine(self.url)
        try:
            with session(engine) as s:
                entries = list(s.scalars(select(Entry).where(Entry.gate_id == GATE_ID)).all())
                alerts = s.execute(select(Alert.id, Alert.kind)).all()
                audits = s.scalars(select(AuditEvent.action)).all()
        finally:
            engine.dispose()
        actuations = invariants.read_actuations(self.station.actuations)
        check = invariants.Check(
            visits=shown,
            entries=entries,
            alerts=[(a.id, a.kind) for a in alerts],
            audit_actions=list(audits),
            actuations=actuations,
            faults=self.faults,
            relay_periods=self.relay_periods,
            overrides=self.overrides,
            clock_periods=self.clock_periods,
            lives=self.supervisor.lives,
            kiosk_stale=self.kiosk_stale,
            announced=announced,
            fps_samples=[(self.began + s["t"], s["fps"]) for s in self.samples if "fps" in s],
            camera_fps=CAMERA_FPS,
            camera_started=self.camera.started_at or self.began,
            unlock_seconds=POLICY["unlock_seconds"],
            ended=self.ended,
        )
        figures = invariants.figures(self.samples, self.minutes, check, self.began)
        return {
            "minutes": self.minutes,
            "database": self.database,
            "seed": self.seed,
            "began": self.began,
            "visitors": len(shown),
            "faults": invariants.count_by_kind(self.faults),
            "violations": check.violations(),
            **figures,
            "entries": len(entries),
            "entries_announced": len(announced),
            "outcomes": check.outcome_counts(),
            "masked_unlogged_while_starved": check.starved_misses,
            "unlocks": sum(1 for a in actuations if a["kind"] == "unlock"),
            "gate_restarts": len(self.supervisor.lives) - 1,
            "live_events": sum(v.events for v in self.live_views),
            "fault_log": [asdict(f) for f in self.faults],
            "entry_log": check.entry_log(),
            "samples": self.samples,
        }


def _size(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())
