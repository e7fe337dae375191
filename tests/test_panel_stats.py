"""Statistics: local-time buckets, compliance, denials, doses, occupancy, SVG charts."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from gate.server import charts, statistics
from gate.store.models import Entry, StationLog
from tests.panel_support import client_for, make_app

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


def entry(ref: int, at: datetime, outcome: str, label: str | None = "mask") -> dict:
    return {
        "id": str(uuid.uuid4()),
        "gate_id": "gate-1",
        "unlock_ref": ref,
        "outcome": outcome,
        "mask_label": label,
        "seen_at": at,
        "sanitized": False,
        "door_opened": False,
    }


def test_figures_are_bucketed_in_local_time(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    rows = [
        entry(1, local(20, 6, 30), "admitted"),  # 23:30 UTC the day before
        entry(2, local(20, 6, 40), "denied_no_mask", "no_mask"),
        entry(3, local(20, 9, 5), "admitted_reminded", "incorrect_mask"),
        entry(4, local(20, 9, 10), "not_sanitized"),
        entry(5, local(19, 23, 59), "admitted"),
        entry(6, local(21, 0, 0), "admitted"),  # next day: outside
        entry(7, local(20, 10), "pending", None),
    ]
    logs = [
        {"gate_id": "gate-1", "at": local(20, 6, 31), "kind": "dispensed", "value": None},
        {"gate_id": "gate-1", "at": local(20, 9, 6), "kind": "dispensed", "value": None},
        {"gate_id": "gate-1", "at": local(19, 12), "kind": "refill", "value": 90},
        {"gate_id": "gate-1", "at": local(20, 7, 0), "kind": "exit", "value": None},
        {"gate_id": "gate-1", "at": local(20, 7, 5), "kind": "exit", "value": None},
    ]
    with runtime.engine.begin() as connection:
        connection.execute(insert(Entry), rows)
        connection.execute(insert(StationLog), logs)
    stats = statistics.compute(runtime.engine, date(2026, 11, 20), 7, ZONE, None)
    assert stats.days[-1] == date(2026, 11, 20) and len(stats.days) == 7
    assert stats.hourly["admitted"][6] == 1 and stats.hourly["denied"][6] == 1
    assert stats.hourly["admitted"][9] == 1 and stats.hourly["denied"][9] == 1
    assert stats.hourly["pending"][10] == 1
    assert stats.daily["admitted"][-2:] == [1, 2] and stats.total == 6
    assert dict(stats.denials) == {"denied_no_mask": 1, "not_sanitized": 1}
    assert stats.compliance == 3 / 5  # mask on 3 of 5 checked (the pending one is unchecked)
    assert stats.doses[-1] == 2 and stats.refills[-2] == 1
    # 06:30 one in, 07:00 and 07:05 two out (never below zero), 09:05 one in.
    assert stats.occupancy[26] == 1 and stats.occupancy[28] == 0 and stats.occupancy[36] == 1
    manager = client_for(app, "manager")
    page = manager.get("/stats?day=2026-11-20&days=7").text
    assert page.count("<svg") == 4 and "60,0 %" in page  # a Vietnamese decimal comma
    # The table beside the charts, as a manager copies it: day, admitted, denied, pending,
    # doses, refills, each row its own day's figures.
    assert "<tr><td>2026-11-19</td><td>1</td><td>0</td><td>0</td><td>0</td><td>1</td></tr>" in page
    assert "<tr><td>2026-11-20</td><td>2</td><td>2</td><td>1</td><td>2</td><td>0</td></tr>" in page
    manager.post("/lang", data={"lang": "en", "csrf_token": manager.headers["x-csrf-token"]})
    assert "60.0 %" in manager.get("/stats?day=2026-11-20&days=7").text
    assert 'href="/stats/daily.csv?day=2026-11-20&amp;days=7&amp;gate=" download' in page
    export = client_for(app, "manager").get("/stats/daily.csv?day=2026-11-20&days=7")
    assert export.headers["content-disposition"] == 'attachment; filename="stats-2026-11-20-7d.csv"'
    rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert rows[0] == ["day", "admitted", "not_admitted", "pending", "doses", "refills"]
    assert rows[-2:] == [
        ["2026-11-19", "1", "0", "0", "0", "1"],
        ["2026-11-20", "2", "2", "1", "2", "0"],
    ]
    assert [row[0] for row in rows[1:]] == [d.isoformat() for d in stats.days]


def test_stats_page_refuses_bad_input(tmp_path: Path) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app, "manager")
    for query in (
        "day=2026-02-30",
        "day=tomorrow",
        "days=8",
        "days=-1",
        "gate=<b>x</b>",
        "day=1900-01-01",
    ):
        for path in ("/stats", "/stats/daily.csv"):
            answer = client.get(f"{path}?{query}")
            assert answer.status_code in (400, 422), (path, query)
            assert "<b>x</b>" not in answer.text
    assert client.get("/api/stats?days=30").json()["compliance"] is None


def test_chart_text_is_escaped_and_axis_is_rounded() -> None:
    svg = charts.bar_chart("<t>", ["<a>", "b"], [charts.Series("<s>", [3, 7])])
    assert "<t>" not in svg and "&lt;t&gt;" in svg and "&lt;a&gt;" in svg
    assert ">10<" in svg  # 7 rounds the axis up to 10
    assert charts.step_chart("x", [], []).startswith("<svg")


def test_occupancy_never_goes_below_zero() -> None:
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    moves = [(midnight + timedelta(minutes=5), -1), (midnight + timedelta(minutes=20), 1)]
    curve = statistics.occupancy_curve(moves, midnight)
    assert curve[:3] == [0, 1, 1] and len(curve) == 96
