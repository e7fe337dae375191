"""The hub's ingest and order API against real PostgreSQL, over real HTTP, fed by a
gate's real SQLite store through its outbox."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from gate.config import HubSettings
from gate.hub import orders
from gate.hub.client import HubConnection, HubRefusal, Replicator
from gate.hub.gates import add_gate, gate_for_token, new_token, token_hash
from gate.hub.models import HubGate, HubOrder, HubRecord, OrderAction
from gate.hub.outbox import PendingBatch, read_batch
from gate.store.db import session
from gate.store.models import Entry, Outbox
from gate.store.records import save_entry
from tests.conftest import POSTGRES_URL
from tests.hub_support import (
    gate_rows,
    gate_store,
    hub_rows,
    running_hub,
    throwaway_database,
    write_visits,
)
from tests.panel_support import LiveServer, free_port

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="session")
def hub_database() -> Iterator[str]:
    yield from throwaway_database(POSTGRES_URL)


@pytest.fixture
def hub(hub_database: str, tmp_path: Path) -> Iterator[tuple[Engine, LiveServer]]:
    yield from running_hub(hub_database, tmp_path)


def connect(server: LiveServer, token: str) -> HubConnection:
    return HubConnection(HubSettings(url=server.url), token)


def replicator(store: Engine, gate_id: str, server: LiveServer, token: str) -> Replicator:
    return Replicator(
        store, gate_id, HubSettings(url=server.url, batch_size=50), connect(server, token)
    )


def send(server: LiveServer, token: str, body: bytes | dict[str, Any]) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + "/api/gate/batches",
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def body_of(batch: PendingBatch, sent_at: datetime | None = None, **changes: Any) -> dict[str, Any]:
    """A batch as the gate sends it, with `changes` on top."""
    return {
        "from_seq": batch.from_seq,
        "to_seq": batch.to_seq,
        "sent_at": (sent_at or datetime.now(UTC)).isoformat(),
        "records": batch.records,
    } | changes


def held(engine: Engine) -> dict[tuple[str, str], tuple[Any, ...]]:
    with session(engine) as s:
        return {
            (r.kind, r.record_id): (r.version, r.received_at, r.data)
            for r in s.scalars(select(HubRecord))
        }


def announce_oversized(server: LiveServer, token: str) -> tuple[int, str]:
    """Announce a 5 MB batch and wait for the answer before sending it: the hub answers
    from the header alone and never reads such a body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/api/gate/batches")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Content-Length", str(5 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read().decode()


def hub_state(engine: Engine) -> tuple[int, list[tuple[Any, ...]]]:
    """What a refused batch must leave alone: the positions and every record."""
    with session(engine) as s:
        acked = s.scalar(select(func.sum(HubGate.acked_seq))) or 0
        rows = s.execute(
            select(
                HubRecord.gate_id, HubRecord.kind, HubRecord.record_id, HubRecord.version
            ).order_by(HubRecord.gate_id, HubRecord.kind, HubRecord.record_id)
        ).all()
    return acked, [tuple(r) for r in rows]


def test_every_write_enters_the_outbox_in_order(engine: Engine) -> None:
    from gate.store.records import ensure_gate, log_station

    ensure_gate(engine, "g1")
    entry = Entry(gate_id="g1", unlock_ref=1, outcome="pending", seen_at=datetime.now(UTC))
    save_entry(engine, entry)
    log_station(engine, "g1", "exit")
    entry.outcome = "admitted"
    save_entry(engine, entry)
    with session(engine) as s:
        kinds = [(o.kind, o.record_id) for o in s.scalars(select(Outbox).order_by(Outbox.seq))]
    assert kinds == [("entry", entry.id), ("station", "1"), ("entry", entry.id)]
    batch = read_batch(engine, "g1", 0, 100)
    # one record per row, at the newest version the batch holds, with its current content
    assert [(r["kind"], r["seq"]) for r in batch.records] == [("station", 2), ("entry", 3)]
    assert batch.records[1]["data"]["outcome"] == "admitted"


def test_a_gate_joins_and_the_hub_matches_its_store_row_by_row(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token = add_gate(engine, "door-a", "Centre 1")
    store = gate_store(tmp_path / "a.db", "door-a")
    write_visits(store, "door-a", 120)
    sent = replicator(store, "door-a", server, token).push({"mode": "normal"})
    assert sent > 0
    assert hub_rows(engine, "door-a") == gate_rows(store)
    with session(engine) as s:
        gate = s.get(HubGate, "door-a")
        assert gate is not None and gate.status["mode"] == "normal"
        assert gate.status["backlog"] == 0  # the last report: nothing left to send
    # later updates follow; nothing pending is left
    write_visits(store, "door-a", 5)
    replicator(store, "door-a", server, token).push({})
    assert hub_rows(engine, "door-a") == gate_rows(store)


def test_the_hub_keeps_only_a_hash_of_each_token(hub: tuple[Engine, LiveServer]) -> None:
    engine, _server = hub
    token = add_gate(engine, "door-a")
    with session(engine) as s:
        stored = s.get(HubGate, "door-a")
    assert stored is not None and stored.token_hash == token_hash(token) != token
    assert gate_for_token(engine, token) is not None
    assert gate_for_token(engine, token[:-1]) is None
    replaced = new_token(engine, "door-a")  # the door box was stolen
    assert gate_for_token(engine, token) is None
    found = gate_for_token(engine, replaced)
    assert found is not None and found.id == "door-a"


def test_a_token_writes_reads_and_acknowledges_only_its_own_gate(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token_a = add_gate(engine, "door-a")
    add_gate(engine, "door-b")
    store_b = gate_store(tmp_path / "b.db", "door-b")
    write_visits(store_b, "door-b", 3)
    before = hub_state(engine)
    # A sends B's records under its own token: refused whole
    batch = read_batch(store_b, "door-b", 0, 100)
    status, detail = send(server, token_a, body_of(batch))
    assert status == 403 and "belongs to gate door-b" in detail
    assert hub_state(engine) == before
    # orders: A sees none of B's, and cannot acknowledge B's
    (order_b,) = orders.issue(engine, "chief", OrderAction.LOCKDOWN_ON, ["door-b"], "drill")
    assert connect(server, token_a).call("GET", "/orders?after=0") == {"orders": []}
    with pytest.raises(HubRefusal) as refused:
        connect(server, token_a).call("POST", f"/orders/{order_b.id}/ack", {"result": "done"})
    assert refused.value.status == 404
    with session(engine) as s:
        assert s.get(HubOrder, order_b.id).acked_at is None  # type: ignore[union-attr]
    # A cannot give orders at all: the gate API has no such call
    with pytest.raises(HubRefusal) as refused:
        connect(server, token_a).call("POST", "/orders", {"action": "lockdown_on"})
    assert refused.value.status in (404, 405)
    # an unknown token reads nothing
    with pytest.raises(HubRefusal) as refused:
        connect(server, "not-a-token").call("GET", "/position")
    assert refused.value.status == 401


def test_a_replayed_batch_changes_nothing_and_an_older_version_never_wins(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token = add_gate(engine, "door-a")
    store = gate_store(tmp_path / "a.db", "door-a")
    write_visits(store, "door-a", 10)
    batch = read_batch(store, "door-a", 0, 1000)
    assert send(server, token, body_of(batch))[0] == 200
    first = held(engine)
    assert send(server, token, body_of(batch))[0] == 200  # the same batch again
    # an entry as it was at its first write (pending), with that write's older number
    entry = next(r for r in batch.records if r["kind"] == "entry")
    stale = {**entry, "seq": 1, "data": {**entry["data"], "outcome": "pending"}}
    assert send(server, token, body_of(batch, from_seq=0, to_seq=1, records=[stale]))[0] == 200
    assert held(engine) == first
    assert first[("entry", entry["id"])][2]["outcome"] != "pending"
    # and a newer one does replace it
    fresh = {**entry, "seq": batch.to_seq + 1, "data": {**entry["data"], "mask_score": 0.5}}
    newer = body_of(batch, from_seq=batch.to_seq, to_seq=batch.to_seq + 1, records=[fresh])
    assert send(server, token, newer)[0] == 200
    assert held(engine)[("entry", entry["id"])][2]["mask_score"] == 0.5


def test_oversized_malformed_and_out_of_order_batches_are_refused_whole(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token = add_gate(engine, "door-a")
    store = gate_store(tmp_path / "a.db", "door-a")
    write_visits(store, "door-a", 10)
    batch = read_batch(store, "door-a", 0, 1000)
    good = body_of(batch)
    before = hub_state(engine)
    swapped = [batch.records[1], batch.records[0], *batch.records[2:]]
    broken_entry = [
        *batch.records[:-1],
        {**batch.records[-1], "data": {"id": batch.records[-1]["id"]}},
    ]
    cases = {
        "oversized": (announce_oversized(server, token), 413),
        "too many records": (send(server, token, {**good, "records": batch.records * 40}), 422),
        "not JSON": (send(server, token, b"{not json"), 422),
        "unknown field": (send(server, token, {**good, "extra": 1}), 422),
        "record missing its fields": (send(server, token, {**good, "records": broken_entry}), 422),
        "records out of order": (send(server, token, {**good, "records": swapped}), 422),
        "a gap before the batch": (
            send(server, token, {**good, "from_seq": 5, "records": batch.records[5:]}),
            409,
        ),
        "to before from": (
            send(server, token, {**good, "from_seq": 9, "to_seq": 3, "records": []}),
            422,
        ),
    }
    for name, ((status, detail), wanted) in cases.items():
        assert status == wanted, (name, status, detail)
        assert "Traceback" not in detail
        assert hub_state(engine) == before, name
    assert send(server, token, good)[0] == 200
    assert hub_rows(engine, "door-a") == gate_rows(store)


def test_a_gate_whose_clock_is_ten_minutes_off_still_lands_every_record(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token = add_gate(engine, "door-a")
    store = gate_store(tmp_path / "a.db", "door-a")
    for skew in (timedelta(minutes=10), timedelta(minutes=-10)):
        write_visits(store, "door-a", 5, at=datetime.now(UTC) + skew)
        acked = connect(server, token).call("GET", "/position")["acked_seq"]
        batch = read_batch(store, "door-a", acked, 1000)
        assert send(server, token, body_of(batch, datetime.now(UTC) + skew))[0] == 200
        with session(engine) as s:
            gate = s.get(HubGate, "door-a")
            assert gate is not None and abs(gate.clock_offset_s - skew.total_seconds()) < 30  # type: ignore[operator]
    assert hub_rows(engine, "door-a") == gate_rows(store)
    with session(engine) as s:
        entries = list(s.scalars(select(HubRecord).where(HubRecord.kind == "entry")))
    skews = {round((e.at - e.received_at).total_seconds() / 60) for e in entries}
    assert skews == {10, -10}  # the gate's own time and the hub's, both kept


def test_gate_hub_status_shows_the_backlog_with_the_hub_up_or_away(
    hub: tuple[Engine, LiveServer], tmp_path: Path
) -> None:
    engine, server = hub
    token = add_gate(engine, "door-a")
    data = tmp_path / "gate"
    store = gate_store(data / "gate.db", "door-a")
    write_visits(store, "door-a", 4)
    (data / "hub-token").write_text(token)
    config = tmp_path / "gate.toml"

    def status(url: str) -> dict[str, Any]:
        config.write_text(
            f'gate_id = "door-a"\ndata_dir = "{data}"\n'
            f'[hub]\nurl = "{url}"\ntoken_file = "{data / "hub-token"}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        done = subprocess.run(
            [sys.executable, "-m", "gate", "hub", "status", "--json", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)

    away = status(f"http://127.0.0.1:{free_port()}/")
    assert not away["reachable"] and away["backlog"] == 4 * 3 + 1  # 3 writes a visit, 1 audit
    replicator(store, "door-a", server, token).push({})
    up = status(server.url)
    assert up["reachable"] and up["backlog"] == 0 and up["acked_seq"] == 13
