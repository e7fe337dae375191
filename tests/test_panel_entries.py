"""Entry list, paging, detail, snapshots and the CSV export, including hostile input."""

from __future__ import annotations

import csv
import html
import io
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from sqlalchemy import Engine, insert, select

from gate.server.csvexport import safe_cell
from gate.server.queries import Cursor, EntryFilter, iter_entry_batches, list_entries
from gate.store.db import session
from gate.store.models import Alert, Entry, Gate, Outcome, User
from tests.panel_support import client_for, make_app, make_runtime

START = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 08:00 in Ho Chi Minh City
REFS = itertools.count()  # unlock_ref is unique per gate
OUTCOMES = [Outcome.ADMITTED, Outcome.DENIED_NO_MASK, Outcome.ADMITTED, Outcome.NOT_SANITIZED]


def seed(
    engine: Engine, count: int, gate_id: str = "gate-1", same_time: int = 1, **fields: object
) -> list[dict[str, object]]:
    """``count`` entries a minute apart (``same_time`` share each timestamp, to test ties)."""
    rows = [
        {
            "id": str(uuid.uuid4()),
            "gate_id": gate_id,
            "unlock_ref": next(REFS),
            "outcome": OUTCOMES[i % len(OUTCOMES)].value,
            "mask_label": "mask",
            "mask_score": 0.9,
            "seen_at": START + timedelta(minutes=i // same_time),
            "first_label": None,
            "sanitized": False,
            "door_opened": False,
            "snapshot_path": None,
            **fields,
        }
        for i in range(count)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Entry), rows)
    return rows


def newest_first(rows: list[dict[str, object]]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (r["seen_at"], r["id"]), reverse=True)]


def test_keyset_paging_visits_every_row_once_both_ways(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    rows = seed(runtime.engine, 53, same_time=4)  # ties on seen_at across page edges
    seen, pages, cursor = [], [], None
    while True:
        page = list_entries(runtime.engine, EntryFilter(), 10, before=cursor)
        pages.append(page)
        seen += [r.id for r in page.rows]
        if page.older is None:
            break
        cursor = page.older
    assert seen == newest_first(rows)
    assert len(pages) == 6 and pages[0].newer is None
    back = list_entries(runtime.engine, EntryFilter(), 10, after=pages[2].newer)
    assert [r.id for r in back.rows] == [r.id for r in pages[1].rows]


def test_filters_combine(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    with runtime.engine.begin() as connection:
        connection.execute(insert(Gate), [{"id": "gate-2", "name": "", "created_at": START}])
    rows = seed(runtime.engine, 40) + seed(runtime.engine, 8, gate_id="gate-2")
    flt = EntryFilter(
        START + timedelta(minutes=10),
        START + timedelta(minutes=30),
        Outcome.DENIED_NO_MASK,
        "gate-1",
    )
    got = [r.id for r in list_entries(runtime.engine, flt, 100).rows]
    expected = [
        r
        for r in rows
        if r["gate_id"] == "gate-1"
        and r["outcome"] == "denied_no_mask"
        and flt.start <= r["seen_at"] < flt.end
    ]  # type: ignore[operator]
    assert got == newest_first(expected) and len(got) == 5


def test_page_filters_take_local_dates(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    seed(runtime.engine, 3, seen_at=datetime(2026, 11, 20, 17, 30, tzinfo=UTC))  # 00:30 on 21st
    client = client_for(app, "manager")
    assert client.get("/entries?from=2026-11-21&to=2026-11-21").text.count("/entries/") == 3 + 1
    assert client.get("/entries?from=2026-11-20&to=2026-11-20").text.count("/entries/") == 1


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-45",
        "from=yesterday",
        "to=9999-01-01",
        "from=2026-11-21&to=2026-11-20",
        "outcome=<script>",
        "gate=nowhere",
        "before=123",
        "before=1.2.3",
        "after=-1.x",
        "limit=0",
        "limit=-5",
        "limit=abc",
        "limit=10000000000000000000000",
        "from=" + "9" * 40,
        "gate=" + "g" * 100,
    ],
)
def test_hostile_filters_get_a_clean_4xx(tmp_path: Path, query: str) -> None:
    app, _runtime = make_app(tmp_path)
    client = client_for(app, "manager")
    paths = ["/entries", "/api/entries"]
    if not query.startswith(("before", "after", "limit")):  # the export has no paging
        paths.append("/entries/export.csv")
    for path in paths:
        answer = client.get(f"{path}?{query}", headers={"accept": "text/html"})
        assert answer.status_code in (400, 422), (path, query, answer.status_code)
        assert "<script>" not in answer.text


def test_detail_and_snapshot_only_inside_the_data_dir(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.jpg"
    outside.write_bytes(b"secret")
    (tmp_path / "snapshots" / "link.jpg").symlink_to(outside)
    good = seed(runtime.engine, 1, snapshot_path=str(tmp_path / "snapshots" / "a.jpg"))[0]
    bad = [
        seed(runtime.engine, 1, snapshot_path=p)[0]
        for p in (
            str(outside),
            str(tmp_path / "snapshots" / ".." / ".." / outside.name),
            str(tmp_path / "snapshots" / "link.jpg"),
            str(tmp_path / "secret_key"),
        )
    ]
    client = client_for(app, "manager")
    assert client.get(f"/entries/{good['id']}").status_code == 200
    image = client.get(f"/entries/{good['id']}/snapshot")
    assert image.status_code == 200 and image.content == b"\xff\xd8jpeg"
    for row in bad:
        assert client.get(f"/entries/{row['id']}/snapshot").status_code == 404
    # The API says a picture is there only where this panel can serve it: not for a path
    # outside its data dir, nor for another gate's picture, kept on that gate's disk.
    elsewhere = seed(runtime.engine, 1, snapshot_path="/var/lib/other-gate/snapshots/b.jpg")[0]
    listed = {e["id"]: e["has_snapshot"] for e in client.get("/api/entries").json()["entries"]}
    assert listed[good["id"]] and not listed[elsewhere["id"]]
    assert not any(listed[row["id"]] for row in bad)
    assert client.get("/entries/not-a-uuid").status_code == 404
    assert client_for(app, "security").get(f"/entries/{good['id']}/snapshot").status_code == 403


def test_csv_export_streams_everything_filtered_and_safe(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    rows = seed(runtime.engine, 12_345)
    hostile = {"outcome": "admitted"}  # outside the outcome filter checked below
    seed(runtime.engine, 2, mask_label='=HYPERLINK("http://x")', **hostile)
    seed(runtime.engine, 1, mask_label="+1", first_label="@SUM(A1)", **hostile)
    seed(runtime.engine, 1, mask_label="\tx", first_label="-2", **hostile)
    client = client_for(app, "manager")
    with client.stream("GET", "/entries/export.csv") as answer:
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        chunks = list(answer.iter_bytes())
    body = b"".join(chunks).decode("utf-8")
    assert body.startswith("\ufeffid,gate,seen,outcome")
    table = list(csv.reader(io.StringIO(body.removeprefix("\ufeff"))))
    assert len(table) == 1 + len(rows) + 4
    exported = {row[0] for row in table[1:]}
    assert {r["id"] for r in rows} <= exported
    for row in table[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    cells = {cell for row in table for cell in row}
    assert {'\'=HYPERLINK("http://x")', "'+1", "'@SUM(A1)", "'\tx", "'-2"} <= cells
    first = next(r for r in table[1:] if r[0] == newest_first(rows)[0])
    assert first[2] == "2026-11-28 21:44:00"  # 20th 01:00 UTC + 12344 min = 28th 14:44 UTC, +7 h
    filtered = client.get("/entries/export.csv?outcome=denied_no_mask").text
    assert len(filtered.strip().splitlines()) == 1 + sum(
        r["outcome"] == "denied_no_mask" for r in rows
    )


def test_csv_export_for_a_decimal_comma_spreadsheet(tmp_path: Path) -> None:
    """With `csv_separator = ";"` cells split on ";" and numbers carry a decimal comma,
    as Excel reads them under a Vietnamese number format; text stays guarded."""
    app, runtime = make_app(tmp_path, csv_separator=";")
    rows = seed(runtime.engine, 3, mask_score=0.875)
    seed(runtime.engine, 1, mask_label="=1+2;x", mask_score=1.0)
    client = client_for(app, "manager")
    body = client.get("/entries/export.csv").content.decode("utf-8-sig")
    assert body.startswith("id;gate;seen;outcome;outcome_text;mask_label;mask_score;")
    table = list(csv.reader(io.StringIO(body), delimiter=";"))
    header, lines = table[0], table[1:]
    assert len(lines) == len(rows) + 1 and all(len(line) == len(header) for line in lines)
    score, label = header.index("mask_score"), header.index("mask_label")
    assert sorted(line[score] for line in lines) == ["0,875", "0,875", "0,875", "1,0"]
    assert "'=1+2;x" in {line[label] for line in lines}  # quoted, so its ';' splits nothing
    daily = client.get("/stats/daily.csv").content.decode("utf-8-sig")
    assert daily.startswith("day;admitted;not_admitted;pending;doses;refills\r\n")


def test_csv_export_says_each_outcome_in_words_in_the_managers_language(tmp_path: Path) -> None:
    """The code stays for formulas; beside it, words a manager reads without a key."""
    app, runtime = make_app(tmp_path)
    seed(runtime.engine, 1, outcome="denied_no_mask")
    client = client_for(app, "manager")

    def exported() -> dict[str, str]:
        body = client.get("/entries/export.csv").content.decode("utf-8-sig")
        header, row = list(csv.reader(io.StringIO(body)))
        return dict(zip(header, row, strict=True))

    row = exported()
    assert row["outcome"] == "denied_no_mask"
    assert row["outcome_text"] == "Từ chối: không đeo khẩu trang"
    client.post("/lang", data={"lang": "en", "csrf_token": client.headers["x-csrf-token"]})
    assert exported()["outcome_text"] == "Denied: no mask"


def test_export_batches_are_bounded(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    seed(runtime.engine, 2_500)
    sizes = [len(batch) for batch in iter_entry_batches(runtime.engine, EntryFilter(), 1000)]
    assert sizes == [1000, 1000, 500]


def test_safe_cell_leaves_ordinary_values_alone() -> None:
    zone = __import__("zoneinfo").ZoneInfo("Asia/Ho_Chi_Minh")
    assert safe_cell("mask", zone) == "mask"
    assert (
        safe_cell(0.5, zone) == 0.5 and safe_cell(True, zone) == 1 and safe_cell(None, zone) == ""
    )
    assert safe_cell("\rcmd", zone) == "'\rcmd"


def test_cursor_round_trip_and_refusals() -> None:
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), str(uuid.uuid4()))
    assert Cursor.decode(cursor.encode()) == cursor
    for text in ("", "1", "x.y", "1." + "0" * 36, "99999999999999999999." + cursor.id):
        with pytest.raises(ValueError):
            Cursor.decode(text)


FILTERED = ("/entries", "/entries/export.csv", "/api/entries")


def test_a_date_at_the_end_of_the_calendar_is_refused_cleanly(tmp_path: Path) -> None:
    """The day after 9999-12-31 does not exist: the year check comes before it is added."""
    app, _runtime = make_app(tmp_path)
    client = client_for(app, "manager")
    for path in FILTERED:
        for query in ("to=9999-12-31", "from=9999-12-31"):
            answer = client.get(f"{path}?{query}", headers={"accept": "application/json"})
            assert answer.status_code == 400, (path, query)
            field = query.partition("=")[0]
            assert answer.json() == {"detail": f"{field}: year must be between 2000 and 2100"}


def test_the_last_day_of_the_allowed_years_is_a_valid_end(tmp_path: Path) -> None:
    app, runtime = make_app(tmp_path)
    late = seed(runtime.engine, 1, seen_at=datetime(2100, 12, 31, 12, 0, tzinfo=UTC))[0]
    seed(runtime.engine, 1, seen_at=datetime(1999, 12, 31, 12, 0, tzinfo=UTC))
    client = client_for(app, "manager")
    query = "from=2000-01-01&to=2100-12-31"
    for path in FILTERED:
        assert client.get(f"{path}?{query}").status_code == 200, path
    assert [e["id"] for e in client.get(f"/api/entries?{query}").json()["entries"]] == [late["id"]]
    assert client.get(f"/entries/export.csv?{query}").text.count("\n") == 2  # header + 1


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/entries", "form=2026-11-27"),
        ("/entries", "outcome=admitted&gates=gate-1"),
        ("/entries/export.csv", "form=2026-11-27"),
        ("/entries/export.csv", "before=" + "1" * 10),  # the export has no paging
        ("/api/entries", "start=2026-11-27"),
        ("/api/entries", "from=2026-11-27&end=2026-11-28"),
        ("/stats", "gates=gate-1"),
        ("/stats/daily.csv", "period=30"),
        ("/api/stats", "dya=2026-11-20"),
        ("/audit", "actions=login"),
    ],
)
def test_a_misspelled_filter_is_refused_not_ignored(tmp_path: Path, path: str, query: str) -> None:
    app, runtime = make_app(tmp_path)
    seed(runtime.engine, 3)
    client = client_for(app, "manager")
    answer = client.get(f"{path}?{query}", headers={"accept": "application/json"})
    wrong = query.rpartition("&")[2].partition("=")[0]
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(f"{wrong}: unknown parameter (use ")


def test_every_parameter_the_panel_sends_is_accepted(tmp_path: Path) -> None:
    """The filter forms, paging links and export links the pages build, followed as a
    browser would: none of them may trip the unknown-parameter check."""
    app, runtime = make_app(tmp_path)
    seed(runtime.engine, 30)
    client = client_for(app, "manager")
    page = client.get(
        "/entries?from=2026-11-20&to=2026-11-21&outcome=admitted&gate=gate-1&limit=25"
    )
    assert page.status_code == 200
    links = re.findall(r'href="(/(?:entries|stats|audit)[^"]*\?[^"]*)"', page.text)
    older = client.get("/entries?limit=10").text
    links += re.findall(r'href="(/entries\?[^"]*)"', older)
    newer = client.get(html.unescape(links[-1])).text
    links += re.findall(r'href="(/entries\?[^"]*)"', newer)
    stats = client.get("/stats?day=2026-11-20&days=7&gate=gate-1").text
    links += re.findall(r'href="(/stats/daily\.csv\?[^"]*)"', stats)
    assert {"before", "after", "limit"} <= {
        name for link in links for name in parse_qs(html.unescape(link).partition("?")[2])
    }
    for link in links:
        assert client.get(html.unescape(link)).status_code == 200, link
    assert client.get("/audit?action=login&before=5").status_code == 200
    assert client.get("/api/entries?from=2026-11-20&limit=5&before=").status_code == 200
    assert client.get("/api/stats?day=2026-11-20&days=7&gate=").status_code == 200


def test_the_api_gives_times_with_their_offset_in_the_panels_zone(tmp_path: Path) -> None:
    """A bare "16:30:00" reads as local time to anyone who sees 23:30 on the page."""
    app, runtime = make_app(tmp_path)
    seen = datetime(2026, 11, 25, 16, 30, tzinfo=UTC)  # 23:30 in Ho Chi Minh City
    seed(runtime.engine, 1, seen_at=seen)
    with session(runtime.engine) as db:
        db.add(Alert(gate_id="gate-1", kind="station", severity="critical", raised_at=seen))
        user = db.scalars(select(User).where(User.username == "security")).one()
        user.locked_until = seen
        db.add(user)
        db.commit()
    admin = client_for(app, "admin")
    (entry,) = admin.get("/api/entries").json()["entries"]
    (alert,) = admin.get("/api/alerts").json()
    (locked,) = [u for u in admin.get("/api/users").json() if u["locked_until"]]
    assert entry["seen_at"] == alert["raised_at"] == locked["locked_until"]
    assert entry["seen_at"] == "2026-11-25T23:30:00+07:00"
    assert datetime.fromisoformat(entry["seen_at"]) == seen
    assert "23:30:00" in client_for(app, "manager").get("/entries/export.csv").text
    docs = admin.get("/api/docs").text  # the panel speaks Vietnamese unless told otherwise
    assert "kèm độ lệch so với UTC, theo múi giờ Asia/Ho_Chi_Minh" in docs


def test_the_export_has_the_first_check_beside_its_label(tmp_path: Path) -> None:
    """A visitor refused for no mask who then put one on: both steps, as the detail page
    shows them, with the first one's time local like the others."""
    app, runtime = make_app(tmp_path)
    first = datetime(2026, 11, 25, 16, 30, 5, tzinfo=UTC)
    seed(runtime.engine, 1, first_label="no_mask", first_decided_at=first, decided_at=first)
    body = client_for(app, "manager").get("/entries/export.csv").content.decode("utf-8-sig")
    header, row = list(csv.reader(io.StringIO(body)))
    assert header[header.index("first_label") + 1] == "first_decided"
    exported = dict(zip(header, row, strict=True))
    assert exported["first_label"] == "no_mask"
    assert exported["first_decided"] == exported["decided"] == "2026-11-25 23:30:05"


def test_a_page_explains_a_mistake_in_the_users_language_and_the_api_in_english(
    tmp_path: Path,
) -> None:
    app, _runtime = make_app(tmp_path)
    manager = client_for(app, "manager")
    page = {"accept": "text/html"}
    cases = {
        "/entries?from=2026-11-28&to=2026-11-01": "to: phải sau thời điểm bắt đầu",
        "/entries?from=1999-01-01": "from: năm phải trong khoảng 2000 đến 2100",
        "/entries?form=2026-11-01": "form: tham số không hợp lệ (dùng after, before,",
        "/stats?days=5": "days: phải là một trong 7, 14, 30, 90",
    }
    for path, vietnamese in cases.items():
        answer = manager.get(path, headers=page)
        assert answer.status_code == 400 and vietnamese in html.unescape(answer.text), path
    api = manager.get("/api/entries?from=2026-11-28&to=2026-11-01")
    assert api.status_code == 400 and api.json() == {"detail": "to: must be after from"}
    guard = client_for(app, "security")
    refused = guard.get("/entries", headers=page)
    assert refused.status_code == 403 and "vai trò của bạn không được phép" in refused.text
    assert "Không tìm thấy trang" in manager.get("/no-such-page", headers=page).text
