"""The hub panel on real PostgreSQL: doors by centre, online or offline, entries of
every door, alerts acknowledged through the door, orders only from security staff,
and every hub text in Vietnamese."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from gate.config import HubSettings
from gate.hub.app import LOCALE_DIR, create_hub_app
from gate.hub.client import HubConnection, Replicator
from gate.hub.gates import add_gate
from gate.hub.models import HubGate, HubOrder
from gate.server.i18n import LOCALE_DIR as GATE_LOCALE_DIR
from gate.store.db import session
from tests.conftest import POSTGRES_URL
from tests.hub_support import (
    fresh_schema,
    gate_store,
    hub_server,
    hub_settings,
    throwaway_database,
    write_visits,
)
from tests.panel_support import add_users, login

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def hub_database() -> Iterator[str]:
    yield from throwaway_database(POSTGRES_URL)


@pytest.fixture
def site(hub_database: str, tmp_path: Path) -> Iterator[tuple[Engine, TestClient]]:
    """A hub with two doors in one centre that reported, and one elsewhere that never did."""
    for engine, url in fresh_schema(hub_database):
        settings = hub_settings(tmp_path, url)
        add_users(engine)
        tokens = {g: add_gate(engine, g, "Trung tâm 1") for g in ("door-a", "door-b")}
        add_gate(engine, "door-c", "Trung tâm 2")
        with hub_server(settings, engine) as server:
            for gate_id, token in tokens.items():
                store = gate_store(tmp_path / f"{gate_id}.db", gate_id)
                write_visits(store, gate_id, 8)
                connection = HubConnection(HubSettings(url=server.url), token)
                Replicator(store, gate_id, HubSettings(url=server.url), connection).push(
                    {"mode": "normal", "occupancy": 3 if gate_id == "door-a" else 4}
                )
        yield engine, TestClient(create_hub_app(settings, engine), client=("10.0.0.5", 50000))


def as_user(client: TestClient, role: str) -> TestClient:
    client.headers["x-csrf-token"] = login(client, role)
    return client


def test_the_overview_groups_doors_by_centre_and_tells_offline_ones(
    site: tuple[Engine, TestClient],
) -> None:
    engine, client = site
    page = as_user(client, "security").get("/site").text
    assert 'data-gate="door-a" data-online="yes"' in page
    assert 'data-gate="door-c" data-online="no"' in page
    assert ">7<" in page  # Trung tâm 1: 3 + 4 people inside
    assert 'data-field="site-admitted">12<' in page  # 8 visits at each door, 2 of them denied
    assert 'data-field="site-denied">4<' in page
    assert "Tổng quan toàn khu" in page  # Vietnamese first
    # a door silent for longer than offline_after_seconds turns offline
    with session(engine) as s:
        gate = s.get(HubGate, "door-b")
        assert gate is not None
        gate.last_report_at = datetime.now(UTC) - timedelta(minutes=5)
        s.add(gate)
        s.commit()
    assert 'data-gate="door-b" data-online="no"' in client.get("/site").text
    only = client.get("/site", params={"centre": "Trung tâm 2"}).text
    assert 'data-gate="door-c"' in only and 'data-gate="door-a"' not in only


def test_entries_of_every_door_with_a_door_filter_and_csv(
    site: tuple[Engine, TestClient],
) -> None:
    _engine, client = site
    as_user(client, "manager")
    page = client.get("/site/entries").text
    assert 'data-gate="door-a"' in page and 'data-gate="door-b"' in page
    only_b = client.get("/site/entries", params={"gate": "door-b"}).text
    assert 'data-gate="door-a"' not in only_b and only_b.count('data-gate="door-b"') == 8
    csv = client.get("/site/entries.csv").text.splitlines()
    assert csv[0].lstrip("\ufeff").startswith("gate,id,seen")
    assert len(csv) == 1 + 16
    assert client.get("/site/alerts").status_code == 403  # alerts are security's


def test_an_alert_is_acknowledged_through_its_door_and_orders_need_security(
    site: tuple[Engine, TestClient],
) -> None:
    engine, client = site
    as_user(client, "security")
    page = client.get("/site/alerts").text
    assert 'data-gate="door-a" data-alert="' in page
    alert_id = page.split('data-gate="door-a" data-alert="')[1].split('"')[0]
    assert (
        client.post(f"/site/alerts/door-a/{alert_id}/ack", follow_redirects=False).status_code
        == 303
    )
    with session(engine) as s:
        (order,) = s.scalars(select(HubOrder))
    assert (order.gate_id, order.action, order.subject) == ("door-a", "alert_ack", alert_id)
    assert "Đã gửi tới cổng" in client.get("/site/alerts").text
    # a site-wide lockdown is one order per door
    sent = client.post("/site/orders", data={"action": "lockdown_on", "reason": "drill"})
    assert sent.status_code == 200 and "Đã ra lệnh phong tỏa" in sent.text
    with session(engine) as s:
        lockdowns = s.scalars(select(HubOrder.gate_id).where(HubOrder.action == "lockdown_on"))
        assert sorted(lockdowns) == ["door-a", "door-b", "door-c"]
    # no CSRF token, no order; a manager gives none; nor an unknown door
    del client.headers["x-csrf-token"]
    assert (
        client.post("/site/orders", data={"action": "lockdown_off", "reason": "x"}).status_code
        == 403
    )
    manager = as_user(client, "manager")
    assert (
        manager.post("/site/orders", data={"action": "lockdown_off", "reason": "x"}).status_code
        == 403
    )
    guard = as_user(client, "security")
    unknown = guard.post(
        "/site/orders", data={"action": "lockdown_off", "reason": "x", "gate": "nope"}
    )
    assert unknown.status_code == 400
    with session(engine) as s:
        assert {o.action for o in s.scalars(select(HubOrder))} == {"alert_ack", "lockdown_on"}


def test_every_hub_text_has_a_vietnamese_translation() -> None:
    with open(LOCALE_DIR / "messages.pot", "rb") as pot:
        wanted = {m.id for m in read_po(pot) if m.id}
    known = set()
    for folder in (LOCALE_DIR, GATE_LOCALE_DIR):
        with open(folder / "vi" / "LC_MESSAGES" / "messages.mo", "rb") as mo:
            known |= {m.id for m in read_mo(mo) if m.id and m.string}
    assert wanted - known == set()
    with open(LOCALE_DIR / "vi" / "LC_MESSAGES" / "messages.po", "rb") as po:
        sources = {m.id: m.string for m in read_po(po) if m.id and m.string}
    with open(LOCALE_DIR / "vi" / "LC_MESSAGES" / "messages.mo", "rb") as mo:
        assert {m.id: m.string for m in read_mo(mo) if m.id} == sources
