"""The guard's page: overrides with reasons, alerts and their acknowledgement, video, events."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from gate.config import PolicySettings
from gate.controller import Controller
from gate.errors import CommandRefused, GateError
from gate.events import EventBus
from gate.runtime import STATION_ALERTS
from gate.server import streams
from gate.server.queries import acknowledge_alert
from gate.server.routers import live
from gate.server.routers.live import FEED_BACKLOG, replay_point
from gate.server.texts import ALERT_DETAILS
from gate.server.users import disable_user
from gate.store.db import session
from gate.store.models import Alert, AuditEvent
from gate.store.records import raise_alert, record_audit
from tests.panel_support import client_for, make_app


def form(client, path: str, **fields: str):  # type: ignore[no-untyped-def]
    return client.post(
        path,
        data={"csrf_token": client.headers["x-csrf-token"], **fields},
        headers={"accept": "text/html"},
        follow_redirects=False,
    )


def test_overrides_reach_the_runtime_with_actor_and_reason(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    assert (
        form(guard, "/live/unlock", reason="  courier   with parcel ").headers["location"]
        == "/live?done=unlock"
    )
    form(guard, "/live/lockdown", on="on", reason="fight outside")
    form(guard, "/live/emergency", on="off", reason="drill over")
    form(guard, "/live/occupancy/reset", reason="count drifted")
    assert runtime.calls == [
        ("override_unlock", "security", None, "courier with parcel"),
        ("lockdown", "security", True, "fight outside"),
        ("emergency", "security", False, "drill over"),
        ("reset_occupancy", "security", None, "count drifted"),
    ]
    assert "Đã mở khóa cửa một lần." in guard.get("/live?done=unlock").text


def test_ending_staff_release_during_a_fire_says_the_door_stays_released(tmp_path: Path) -> None:
    """The real controller keeps the door free while the fire input is on; the message
    after "End emergency" must say so rather than "Emergency release is off."."""
    app, runtime = make_app(tmp_path)
    controller = Controller(PolicySettings(), wall=lambda now: datetime.now(UTC))

    async def set_emergency(actor: str, on: bool, reason: str) -> None:
        controller.set_emergency(0.0, on)
        runtime.state["mode"] = controller.mode.value

    runtime.set_emergency = set_emergency  # type: ignore[method-assign]
    guard = client_for(app, "security")

    def end_after_start() -> str:
        form(guard, "/live/emergency", on="on", reason="drill")
        answer = form(guard, "/live/emergency", on="off", reason="drill over")
        runtime.state["mode"] = controller.mode.value
        return answer.headers["location"]

    controller.station_event(0.0, "fire_on")
    assert end_after_start() == "/live?done=emergency_fire"
    assert runtime.state["mode"] == "emergency"
    page = guard.get("/live?done=emergency_fire").text
    assert (
        "Đã tắt mở cửa khẩn cấp do nhân viên bật, nhưng tín hiệu báo cháy vẫn giữ cửa mở khóa."
        in page
    )
    assert "Đã tắt chế độ mở cửa khẩn cấp." not in page
    # The API answers with the state after the order, so a client sees the same.
    api = guard.post("/api/overrides/emergency", json={"on": False, "reason": "drill over"})
    assert api.status_code == 200 and api.json()["mode"] == "emergency"
    controller.station_event(0.0, "fire_off")
    assert end_after_start() == "/live?done=emergency_off"
    assert runtime.state["mode"] == "normal"
    api = guard.post("/api/overrides/emergency", json={"on": False, "reason": "drill over"})
    assert api.status_code == 200 and api.json()["mode"] == "normal"


def test_an_override_needs_a_real_reason(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    for reason in ("", "  ", "ab", " a \t ", "a\n\n"):
        answer = form(guard, "/live/unlock", reason=reason)
        assert answer.status_code in (303, 422)
        if answer.status_code == 303:
            assert answer.headers["location"] == "/live?error=reason_required"
    assert form(guard, "/live/unlock", reason="x" * 501).status_code == 422
    assert form(guard, "/live/lockdown", on="maybe", reason="valid reason").status_code == 422
    assert runtime.calls == []
    assert "Vui lòng nhập lý do" in guard.get("/live?error=reason_required").text


def test_a_refusing_runtime_is_shown_not_crashed(tmp_path: Path) -> None:
    """A refusal the panel knows reads in the guard's language; another error as it is."""
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    runtime.refuse = CommandRefused("station_offline")
    answer = form(guard, "/live/unlock", reason="visitor at door")
    assert answer.status_code == 409
    assert "Trạm sát khuẩn mất kết nối nên không thể mở khóa cửa" in answer.text
    runtime.refuse = GateError("database unavailable: disk I/O error")
    answer = form(guard, "/live/unlock", reason="visitor at door")
    assert answer.status_code == 409 and "database unavailable: disk I/O error" in answer.text


def test_html_in_reasons_is_escaped_everywhere(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    form(client_for(app, "security"), "/live/unlock", reason=hostile)
    page = client_for(app, "manager").get("/audit").text
    assert hostile not in page
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    )
    api = client_for(app, "manager").get("/api/me")
    assert api.headers["content-security-policy"].startswith("default-src 'self'")


def test_alerts_are_listed_acknowledged_once_and_audited(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "gate-1", "fluid_low", "warning", "<b>level 9%</b>", None)
    guard = client_for(app, "security")
    page = guard.get("/live").text
    assert "Sắp hết dung dịch sát khuẩn" in page and "&lt;b&gt;level 9%&lt;/b&gt;" in page
    answer = form(guard, "/live/alerts/1/ack")
    assert answer.headers["location"] == "/live?done=ack"
    assert 'data-alert="1"' not in guard.get("/live").text
    assert acknowledge_alert(runtime.engine, 1, "gate-1", "someone else") is None  # done
    with session(runtime.engine) as db:
        alert = db.get(Alert, 1)
        audit = db.exec(select(AuditEvent).where(AuditEvent.action == "alert_ack")).all()
    assert alert is not None and alert.acknowledged_by == "security"
    assert [(a.actor, json.loads(a.detail)) for a in audit] == [
        ("security", {"alert": 1, "kind": "fluid_low", "message": "<b>level 9%</b>"})
    ]
    assert [e.kind for e in runtime.bus.recent()] == ["alert_ack"]
    assert guard.post("/api/alerts/1/ack").status_code == 404
    manager = client_for(app, "manager")
    page = manager.get("/audit?action=alert_ack").text
    assert "cảnh báo #1, Sắp hết dung dịch sát khuẩn: &lt;b&gt;level 9%&lt;/b&gt;" in page


def listed_alerts(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-alert="(\d+)"', page)]


def test_critical_alerts_stay_listed_when_newer_warnings_pile_up(tmp_path: Path) -> None:
    """Every refused visitor raises a warning; 100 of them must not hide a fire."""
    app, runtime = make_app(tmp_path)
    start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    with session(runtime.engine) as db:
        for i in range(12):
            db.add(
                Alert(
                    gate_id="gate-1",
                    kind="emergency",
                    severity="critical",
                    message="fire_alarm",
                    raised_at=start + timedelta(seconds=i),
                )
            )
        for i in range(100):
            db.add(
                Alert(
                    gate_id="gate-1",
                    kind="no_mask",
                    severity="warning",
                    message="denied_no_mask",
                    raised_at=start + timedelta(minutes=1, seconds=i),
                )
            )
        db.commit()
    guard = client_for(app, "security")
    page = guard.get("/live").text
    critical = list(range(12, 0, -1))  # ids 1..12, newest first
    assert listed_alerts(page)[:12] == critical
    assert len(listed_alerts(page)) == 100
    assert "Cảnh báo đang chờ xác nhận chưa hiện ở đây: 12." in page
    listed = guard.get("/api/alerts")
    assert [a["id"] for a in listed.json()][:12] == critical
    assert len(listed.json()) == 100 and listed.headers["x-total-count"] == "112"
    guard.post("/lang", data={"lang": "en", "csrf_token": guard.headers["x-csrf-token"]})
    assert "Open alerts not shown here: 12." in guard.get("/live").text


def test_a_gate_lists_and_acknowledges_only_its_own_alerts(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "demo", "fire_on", "critical", "fire_alarm", None)
    raise_alert(runtime.engine, "gate-1", "fluid_low", "warning", "refill_soon", None)
    guard = client_for(app, "security")
    page = guard.get("/live").text
    assert listed_alerts(page) == [2] and "chưa hiện ở đây" not in page
    assert [a["id"] for a in guard.get("/api/alerts").json()] == [2]
    answer = form(guard, "/live/alerts/1/ack")
    assert answer.status_code == 404
    assert "Cảnh báo này không còn chờ xác nhận" in answer.text
    assert "Đã xác nhận cảnh báo." not in answer.text
    assert guard.post("/api/alerts/1/ack").status_code == 404
    with session(runtime.engine) as db:
        other = db.get(Alert, 1)
    assert other is not None and other.acknowledged_at is None
    assert runtime.bus.recent() == []


def test_acknowledging_a_missing_or_acknowledged_alert_says_so(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "gate-1", "fluid_low", "warning", "refill_soon", None)
    guard = client_for(app, "security")
    assert form(guard, "/live/alerts/1/ack").headers["location"] == "/live?done=ack"
    for alert_id in (1, 999):
        answer = form(guard, f"/live/alerts/{alert_id}/ack")
        assert answer.status_code == 404
        assert "Cảnh báo này không còn chờ xác nhận" in answer.text
        assert "Đã xác nhận cảnh báo." not in answer.text
    assert [e.kind for e in runtime.bus.recent()] == ["alert_ack"]


def test_audit_rows_read_in_the_managers_language(tmp_path: Path) -> None:
    """Structured details and our own login-refusal reasons are translated; staff reasons
    and rows written before details were structured are shown as stored."""
    app, runtime = make_app(tmp_path)
    record_audit(
        runtime.engine, "system", "retention", "", '{"entries": 3, "snapshots": 2}', "door-2"
    )
    record_audit(runtime.engine, "x", "login_failed", "locked", '{"address": "198.51.100.4"}')
    record_audit(runtime.engine, "admin", "user_create", "", '{"user": "lan", "role": "manager"}')
    record_audit(runtime.engine, "cli", "user_disable", "", "old-style plain text")
    record_audit(runtime.engine, "cli", "user_password", "", '{"other": "shape"}')
    manager = client_for(app, "manager")
    page = manager.get("/audit").text
    assert "Đã xóa dữ liệu cũ" in page and "đã xóa 3 lượt vào và 2 ảnh chụp" in page
    # Gates sharing a database share the log: each row says which gate it came from.
    assert "<td>door-2</td><td>system</td>" in page and "<td>–</td><td>admin</td>" in page
    assert "từ 198.51.100.4" in page and "Tài khoản bị khóa trong vài phút" in page
    assert "old-style plain text" in page and "{&#34;other&#34;: &#34;shape&#34;}" in page
    assert "lan, vai trò: Quản lý" in page
    manager.post("/lang", data={"lang": "en", "csrf_token": manager.headers["x-csrf-token"]})
    page = manager.get("/audit").text
    assert "Old records deleted" in page and "3 entries and 2 snapshots deleted" in page
    assert "from 198.51.100.4" in page and "This account is locked" in page
    assert "lan, role: Manager" in page


def test_an_entry_alert_reads_in_the_guards_language(tmp_path: Path) -> None:
    """The controller's entry alerts carry the outcome's key, shown translated."""
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "gate-1", "no_mask", "warning", "denied_no_mask", None)
    page = client_for(app, "security").get("/live").text
    assert "<strong>Khách không đeo khẩu trang</strong>" in page
    assert '<span class="msg">Từ chối: không đeo khẩu trang</span>' in page


def test_system_alerts_say_what_to_do_in_the_guards_language(tmp_path: Path) -> None:
    """Station and mode alerts carry a key for what to do; free text (a command's
    error, rows from older versions) is shown as it is."""
    app, runtime = make_app(tmp_path)
    raise_alert(runtime.engine, "gate-1", "fluid_empty", "critical", "refill_now", None)
    raise_alert(runtime.engine, "gate-1", "emergency", "critical", "door released: drill", None)
    page = client_for(app, "security").get("/live").text
    assert "<strong>Hết dung dịch sát khuẩn</strong>" in page
    assert '<span class="msg">Nạp thêm dung dịch sát khuẩn ngay</span>' in page
    assert '<span class="msg">door released: drill</span>' in page
    assert {detail for _, detail in STATION_ALERTS.values()} <= ALERT_DETAILS.keys()


def test_the_api_overrides_and_validates_json(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    answer = guard.post("/api/overrides/unlock", json={"reason": "parcel"})
    assert answer.status_code == 200 and answer.json() == runtime.snapshot()
    assert (
        guard.post("/api/overrides/lockdown", json={"on": True, "reason": "x"}).status_code == 422
    )
    assert (
        guard.post(
            "/api/overrides/emergency", json={"on": "perhaps", "reason": "fire drill"}
        ).status_code
        == 422
    )
    assert (
        guard.post(
            "/api/overrides/unlock",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ).status_code
        == 422
    )
    assert guard.post("/api/overrides/unlock", json={"reason": "      "}).status_code == 400
    assert runtime.calls == [("override_unlock", "security", None, "parcel")]
    assert guard.get("/api/state").json()["station"]["fluid_percent"] == 72


def test_mjpeg_watches_only_while_streaming_and_keeps_the_rate() -> None:
    watchers = []
    frames = [np.full((32, 32, 3), i, dtype=np.uint8) for i in range(100)]
    counter = iter(frames)

    class Watch:
        def __enter__(self) -> None:
            watchers.append(1)

        def __exit__(self, *_: object) -> None:
            watchers.pop()

    async def take(count: int) -> tuple[list[bytes], float]:
        stream = streams.mjpeg_stream(Watch, lambda: next(counter), streams.FrameEncoder(), 10)
        started = time.monotonic()
        parts = [await anext(stream) for _ in range(count)]
        elapsed = time.monotonic() - started
        assert watchers == [1]
        await stream.aclose()
        return parts, elapsed

    parts, elapsed = asyncio.run(take(6))
    assert watchers == []
    assert all(p.startswith(b"--frame\r\nContent-Type: image/jpeg") for p in parts)
    assert all(b"\xff\xd8" in p for p in parts)
    assert elapsed >= 0.45  # six parts at <= 10 fps need at least five intervals


def test_mjpeg_shows_no_signal_when_there_is_no_frame() -> None:
    async def first() -> bytes:
        stream = streams.mjpeg_stream(
            lambda: __import__("contextlib").nullcontext(), lambda: None, streams.FrameEncoder(), 5
        )
        part = await anext(stream)
        await stream.aclose()
        return part

    assert b"\xff\xd8" in asyncio.run(first())


def test_sse_replays_after_last_event_id_and_asks_to_resync_when_too_old() -> None:
    bus = EventBus()
    for i in range(5):
        bus.publish("entry", {"n": i})

    async def read(after: int | None, count: int) -> list[bytes]:
        stream = streams.sse_stream(bus, after, lambda e: e.data)
        out = [await anext(stream) for _ in range(count)]
        await stream.aclose()
        return out

    messages = asyncio.run(read(3, 3))
    assert messages[0] == b"retry: 2000\n\n"
    assert messages[1:] == [
        b'id: 4\nevent: entry\ndata: {"n":3}\n\n',
        b'id: 5\nevent: entry\ndata: {"n":4}\n\n',
    ]
    for i in range(600):  # more than the bus keeps
        bus.publish("entry", {"n": i})
    assert b"event: resync" in asyncio.run(read(2, 2))[1]


@pytest.mark.parametrize("path", ["/live/events", "/live/stream.mjpg"])
@pytest.mark.parametrize("leaves", ["disabled", "logged_out"])
def test_an_open_stream_ends_when_its_guard_may_no_longer_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, leaves: str
) -> None:
    """Even while events keep flowing: a busy gate never lets a heartbeat time out."""
    monkeypatch.setattr(live, "SESSION_CHECK_SECONDS", 0.2)
    app, runtime = make_app(tmp_path)
    guard = client_for(app, "security")
    ended = threading.Event()

    def watch() -> None:
        with guard.stream("GET", path) as answer:
            assert answer.status_code == 200
            for _ in answer.iter_bytes():
                runtime.bus.publish("entry", {"id": "busy"})
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert not ended.wait(1.0)  # a guard who may watch keeps watching
    if leaves == "disabled":
        disable_user(runtime.engine, "security", actor="admin")
    else:
        assert guard.post("/logout", follow_redirects=False).status_code == 303
    assert ended.wait(5.0), f"{path} still streams to a guard who was {leaves}"


def test_a_reloaded_page_replays_the_last_visits_not_the_last_re_saves() -> None:
    """An entry is re-sent every half second while its visitor stands there; a page
    opened after an override must still show the last FEED_BACKLOG visits."""
    bus = EventBus()
    visits = [f"visit-{n}" for n in range(FEED_BACKLOG + 10)]
    for visit in visits:
        for outcome in ["pending"] * 4 + ["admitted"]:
            bus.publish("entry", {"id": visit, "outcome": outcome})
            bus.publish("state", {"state": "checking"})
    bus.publish("override", {"action": "lockdown_on"})
    replayed = bus.recent(replay_point(bus.recent()))
    shown = {e.data.get("id") for e in replayed if e.kind == "entry"}
    assert shown == set(visits[-(FEED_BACKLOG - 1) :])  # and the override: FEED_BACKLOG items


def test_ids_beyond_any_database_integer_are_refused_not_crashed(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    guard = client_for(app, "security")
    assert form(guard, "/live/alerts/9223372036854775808/ack").status_code == 422
    assert guard.post("/api/alerts/99999999999999999999/ack").status_code == 422
    assert form(guard, "/live/alerts/0/ack").status_code == 422


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "12\u00b2", "-1", "1e3", " 7"])
def test_an_event_id_that_is_not_plain_digits_is_ignored(value: str) -> None:
    assert streams.parse_last_event_id(value, None) is None
    assert streams.parse_last_event_id(None, value) is None
    assert streams.parse_last_event_id(value, "42") == 42
