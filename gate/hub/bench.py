"""`gate bench hub`: simulated gates pushing a day of traffic each into a hub on
PostgreSQL, concurrently, then the replication lag at a steady site-wide rate and the
entries page's query time at the size reached.

The hub runs as a process of its own (`gate hub`), so its peak memory is its own.
Each simulated gate builds its records as a gate's store would hand them over
(an entry when the visitor is seen, its update when the visit ends, an alert per
denial, a dose or an exit in the station log) and sends them with the gate's own
client (`HubConnection`), in batches of `batch` records.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from gate.config import HubSettings
from gate.errors import GateError
from gate.hub import site
from gate.hub.client import HubConnection, HubUnavailable
from gate.hub.db import open_hub_database
from gate.hub.gates import add_gate
from gate.hub.models import HubRecord, RecordKind
from gate.store.db import session

SITE_VISITS_PER_SECOND = 5.0
QUERY_SAMPLES = 60


class SimulatedGate:
    """One door's records in the order its outbox would number them."""

    def __init__(self, gate_id: str, token: str, hub_url: str, batch: int) -> None:
        self.gate_id = gate_id
        self.seq = 0
        self.acked = 0
        self.ids = {"alert": 0, "station": 0}
        hub = HubSettings(url=hub_url, batch_size=batch, timeout_seconds=60)
        self.connection = HubConnection(hub, token)
        self.batch = batch
        self.pending: list[tuple[dict[str, Any], float]] = []  # record, written at
        self.rng = random.Random(gate_id)

    def _add(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.pending.append(
            ({"seq": self.seq, "kind": kind, "id": record_id, "data": data}, time.time())
        )

    def visit(self, at: datetime) -> None:
        entry_id = str(uuid.uuid4())
        entry = {
            "id": entry_id,
            "gate_id": self.gate_id,
            "unlock_ref": self.rng.getrandbits(32),
            "outcome": "pending",
            "seen_at": at.isoformat(),
        }
        self._add("entry", entry_id, entry)
        denied = self.rng.random() < 0.2
        finished = (at + timedelta(seconds=8)).isoformat()
        outcome = "denied_no_mask" if denied else "admitted"
        self._add(
            "entry",
            entry_id,
            entry
            | {
                "outcome": outcome,
                "mask_label": "mask",
                "mask_score": 0.93,
                "finished_at": finished,
            },
        )
        kind = "alert" if denied else "station"
        self.ids[kind] += 1
        if denied:
            data = {
                "id": self.ids[kind],
                "gate_id": self.gate_id,
                "kind": "no_mask",
                "severity": "warning",
                "message": "ask_mask",
                "entry_id": entry_id,
                "raised_at": finished,
            }
        else:
            data = {
                "id": self.ids[kind],
                "gate_id": self.gate_id,
                "kind": "dispensed",
                "value": 600,
                "at": finished,
            }
        self._add(kind, str(self.ids[kind]), data)

    def push(self) -> list[float]:
        """Send everything pending; the lag of each record, from its write to the ack."""
        lags = []
        while self.pending:
            part, self.pending = self.pending[: self.batch], self.pending[self.batch :]
            body = {
                "from_seq": self.acked,
                "to_seq": part[-1][0]["seq"],
                "sent_at": datetime.now(UTC).isoformat(),
                "records": [record for record, _ in part],
            }
            while True:
                try:
                    self.acked = int(self.connection.call("POST", "/batches", body)["acked_seq"])
                    break
                except HubUnavailable:
                    time.sleep(0.5)
            now = time.time()
            lags += [now - written for _, written in part]
        return lags


def _schema_url(url: str, schema: str) -> str:
    return (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


class HubUnderTest:
    """A fresh schema in the given PostgreSQL database and `gate hub` serving it."""

    def __init__(self, database_url: str, folder: Path) -> None:
        if make_url(database_url).get_backend_name() != "postgresql":
            raise GateError("the hub benchmark needs a PostgreSQL database_url")
        self.admin = create_engine(database_url)
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.url = _schema_url(database_url, self.schema)
        self.engine: Engine = open_hub_database(self.url)
        with socket_port() as port:
            self.port = port
        config = folder / "hub.toml"
        config.write_text(
            f"data_dir = \"{folder}\"\n[server]\nport = {self.port}\n[hub]\ndatabase_url = '{self.url}'\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gate", "hub", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, connection: HubConnection) -> None:
        for _ in range(3000):  # five minutes: a loaded machine starts Python slowly
            try:
                connection.call("GET", "/position")
                return
            except HubUnavailable:
                time.sleep(0.1)
        raise GateError("the hub under test did not start")

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def close(self, keep: bool) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.engine.dispose()
        if not keep:
            with self.admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


class socket_port:
    """A free TCP port on 127.0.0.1."""

    def __enter__(self) -> int:
        import socket

        self.probe = socket.socket()
        self.probe.bind(("127.0.0.1", 0))
        return self.probe.getsockname()[1]

    def __exit__(self, *_exc: object) -> None:
        self.probe.close()


def fill_entries(engine: Engine, gate_ids: list[str], rows: int) -> None:
    """Bring the entries table to `rows` rows with synthetic past visits, in SQL, spread
    over the gates and the past year: the size at which the page query is timed."""
    with session(engine) as s:
        have = (
            s.scalar(select(func.count()).select_from(HubRecord).where(HubRecord.kind == "entry"))
            or 0
        )
    missing = rows - have
    step = 1_000_000
    for start in range(0, max(0, missing), step):
        count = min(step, missing - start)
        with engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO hub_record (gate_id, kind, record_id, version, at, received_at, data)
                    SELECT (CAST(:gates AS text[]))[1 + n % cardinality(CAST(:gates AS text[]))],
                           'entry', 'fill-' || (:start + n), 0,
                           now() - ((:start + n) * interval '3 seconds') - interval '1 day', now(),
                           jsonb_build_object('outcome', CASE WHEN n % 5 = 0 THEN 'denied_no_mask' ELSE 'admitted' END)
                    FROM generate_series(1, :count) AS n
                    """
                ),
                {"gates": gate_ids, "start": start, "count": count},
            )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE hub_record"))


def time_queries(engine: Engine, gate_ids: list[str]) -> float:
    """p95 of the entries page (newest 100, all doors or one door, now and further back)."""
    rng = random.Random(7)
    times = []
    with session(engine) as s:
        oldest = s.scalar(select(func.min(HubRecord.at)).where(HubRecord.kind == "entry"))
    now = datetime.now(UTC)
    for n in range(QUERY_SAMPLES):
        gates = None if n % 2 else [rng.choice(gate_ids)]
        before = None
        if oldest is not None and n % 3 == 2:
            before = oldest + (now - oldest) * rng.random()
        started = time.perf_counter()
        site.records(engine, RecordKind.ENTRY, gates, before, 100)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.quantiles(times, n=20)[18], 2)


def run_hub_bench(
    database_url: str,
    gates: int = 50,
    visits: int = 2000,
    batch: int = 500,
    lag_seconds: float = 20.0,
    rows: int = 0,
    keep: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gate-bench-hub-") as folder:
        hub = HubUnderTest(database_url, Path(folder))
        try:
            return _measure(hub, gates, visits, batch, lag_seconds, rows)
        finally:
            hub.close(keep)


def _measure(
    hub: HubUnderTest, gates: int, visits: int, batch: int, lag_seconds: float, rows: int
) -> dict[str, Any]:
    simulated = [
        SimulatedGate(
            f"bench-{n:03d}",
            add_gate(hub.engine, f"bench-{n:03d}", f"Centre {n // 5}"),
            hub.hub_url,
            batch,
        )
        for n in range(gates)
    ]
    hub.wait_ready(simulated[0].connection)
    # a day of traffic each, pushed by all gates at once
    day = datetime.now(UTC) - timedelta(days=1)
    for gate in simulated:
        for n in range(visits):
            gate.visit(day + timedelta(seconds=n * 86400 / visits))
    records = sum(len(g.pending) for g in simulated)
    started = time.perf_counter()
    with ThreadPoolExecutor(gates) as pool:
        list(pool.map(SimulatedGate.push, simulated))
    ingest_seconds = time.perf_counter() - started
    # steady traffic: 5 visits a second across the site, each gate reporting every second
    lags = _steady(simulated, lag_seconds)
    gate_ids = [g.gate_id for g in simulated]
    if rows:
        fill_entries(hub.engine, gate_ids, rows)
    with session(hub.engine) as s:
        entry_rows = s.scalar(
            select(func.count()).select_from(HubRecord).where(HubRecord.kind == "entry")
        )
    quantiles = statistics.quantiles(lags, n=20) if len(lags) > 1 else [0.0] * 19
    return {
        "gates": gates,
        "records": records,
        "ingest_records_per_s": round(records / ingest_seconds, 1),
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p95_s": round(quantiles[18], 3) if lags else None,
        "rows": entry_rows,
        "query_p95_ms": time_queries(hub.engine, gate_ids),
        "peak_rss_mb": hub.peak_rss_mb(),
    }


def _steady(simulated: list[SimulatedGate], seconds: float) -> list[float]:
    """Visits arriving at SITE_VISITS_PER_SECOND spread over the gates, each gate sending
    what it has once a second on its own thread; the lag of every record."""
    lags: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    per_gate = SITE_VISITS_PER_SECOND / len(simulated)

    def run(gate: SimulatedGate) -> None:
        owed = gate.rng.random()
        while time.monotonic() < stop:
            owed += per_gate
            while owed >= 1:
                owed -= 1
                gate.visit(datetime.now(UTC))
            got = gate.push()
            with lock:
                lags.extend(got)
            time.sleep(1.0)

    threads = [threading.Thread(target=run, args=(g,)) for g in simulated]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return lags
