"""The hub and the gates' replication as real processes on real PostgreSQL: killed at
random moments, and cut off from each other by a proxy the test cuts. Afterwards the
hub holds every record of every gate exactly once, row for row as the gates hold them."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, func, select

from gate.hub.gates import add_gate
from gate.hub.models import HubRecord
from gate.store.db import session
from tests.conftest import POSTGRES_URL
from tests.hub_support import (
    fresh_schema,
    gate_rows,
    gate_store,
    hub_rows,
    throwaway_database,
    write_visits,
)
from tests.panel_support import REPO, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
KILLS = int(os.environ.get("HUB_TEST_KILLS", "20"))
CUT_VISITS = int(os.environ.get("HUB_TEST_CUT_VISITS", "600"))  # 2 records and 3 writes each
ENV = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}


@pytest.fixture(scope="module")
def hub_database() -> Iterator[str]:
    yield from throwaway_database(POSTGRES_URL)


class HubProcess:
    """`gate hub` on its own config, started and SIGKILLed at will."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.port = free_port()
        self.config = tmp_path / "hub.toml"
        self.config.write_text(
            f'data_dir = "{tmp_path / "hub"}"\n[server]\nport = {self.port}\n'
            f"[hub]\ndatabase_url = '{database_url}'\n",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gate", "hub", "--config", str(self.config)],
            env=ENV,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3000):
            try:
                httpx2.get(f"{self.url}login", timeout=1)
                return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the hub did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


@pytest.fixture
def hub(hub_database: str, tmp_path: Path) -> Iterator[tuple[Engine, HubProcess]]:
    for engine, url in fresh_schema(hub_database):
        process = HubProcess(tmp_path, url)
        process.start()
        try:
            yield engine, process
        finally:
            process.kill()


def pusher(store: Path, gate_id: str, hub_url: str, token: str, drain: bool = False):  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hub_pusher", str(store), gate_id, hub_url, token]
        + (["--drain"] if drain else []),
        env=ENV,
        cwd=REPO,
    )


def drain_and_compare(engine: Engine, gates: dict[str, tuple[Path, str]], hub_url: str) -> None:
    """Let each gate send what it still holds, then hold the hub against every store."""
    for gate_id, (store, token) in gates.items():
        assert pusher(store, gate_id, hub_url, token, drain=True).wait(300) == 0
    for gate_id, (store, _token) in gates.items():
        expected = gate_rows(gate_store(store, gate_id))
        assert hub_rows(engine, gate_id) == expected
        with session(engine) as s:
            count = s.scalar(
                select(func.count()).select_from(HubRecord).where(HubRecord.gate_id == gate_id)
            )
        assert count == len(expected)  # exactly once each


def test_gates_and_hub_killed_at_random_moments_lose_and_duplicate_nothing(
    hub: tuple[Engine, HubProcess], tmp_path: Path
) -> None:
    engine, hub_process = hub
    gates = {}
    for gate_id in ("door-a", "door-b"):
        store = tmp_path / f"{gate_id}.db"
        write_visits(gate_store(store, gate_id), gate_id, 100)
        gates[gate_id] = (store, add_gate(engine, gate_id))
    rng = random.Random(20)
    for _round in range(KILLS):
        running = {g: pusher(s, g, hub_process.url, t) for g, (s, t) in gates.items()}
        time.sleep(rng.uniform(0.5, 2.0))
        running["door-a"].send_signal(signal.SIGKILL)  # a gate, somewhere in a batch
        time.sleep(rng.uniform(0.1, 1.0))
        hub_process.kill()  # the hub, while door-b keeps sending
        hub_process.start()
        time.sleep(rng.uniform(0.1, 0.5))
        for process in running.values():
            process.send_signal(signal.SIGKILL)
            process.wait()
    drain_and_compare(engine, gates, hub_process.url)


class CuttableProxy:
    """A TCP proxy between gate and hub that the test can cut: while cut it refuses new
    connections and has dropped the open ones, as a pulled cable would end them."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()
                self.open.discard(end)

    def set_cut(self, cut: bool) -> None:
        if cut:
            self.cut.set()
            for end in list(self.open):
                end.close()
        else:
            self.cut.clear()


def hub_count(engine: Engine) -> int:
    with session(engine) as s:
        return s.scalar(select(func.count()).select_from(HubRecord)) or 0


def settled_count(engine: Engine, quiet: float = 3.0) -> int:
    """The hub's record count once it has not changed for `quiet` seconds."""
    count = hub_count(engine)
    while True:
        time.sleep(quiet)
        now = hub_count(engine)
        if now == count:
            return count
        count = now


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_gate_cut_off_from_the_hub_catches_up_once_the_link_is_back(
    hub: tuple[Engine, HubProcess], tmp_path: Path
) -> None:
    engine, hub_process = hub
    proxy = CuttableProxy(hub_process.port)
    store_path = tmp_path / "door-a.db"
    token = add_gate(engine, "door-a")
    store = gate_store(store_path, "door-a")
    gate = pusher(store_path, "door-a", proxy.url, token)
    try:
        wait_for(lambda: hub_count(engine) > 0, 300, "the gate never reached the hub")
        proxy.set_cut(True)
        # A batch the hub had wholly received before the cut still commits: count once
        # the hub has been quiet for a few of the gate's report intervals.
        at_cut = settled_count(engine)
        # the door goes on: its own writes and this test's, none reaching the hub
        write_visits(store, "door-a", CUT_VISITS)
        time.sleep(3)  # the gate tries to report, and cannot
        assert hub_count(engine) == at_cut
        assert len(gate_rows(store)) > at_cut + CUT_VISITS * 2
        proxy.set_cut(False)
        started = time.monotonic()
        wait_for(lambda: hub_count(engine) >= len(gate_rows(store)) - 50, 300, "no catching up")
        caught_up = time.monotonic() - started
    finally:
        gate.send_signal(signal.SIGKILL)
        gate.wait()
    drain_and_compare(engine, {"door-a": (store_path, token)}, proxy.url)
    print(
        f"network cut: {len(gate_rows(store)) - at_cut} records behind, caught up in {caught_up:.1f} s"
    )
