"""Site-wide orders carried out by a real gate (simulated camera, real models, emulated
station) reporting to a real hub on PostgreSQL over HTTP: through the gate's own
standing-order path, audited under the hub user's name, acknowledged, and an order
fetched again not carried out again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from gate.assembly import assemble
from gate.config import load_settings
from gate.hub import orders
from gate.hub.gates import add_gate
from gate.hub.models import HubOrder, HubRecord, OrderAction
from gate.hub.outbox import ORDERS_ACKED, set_cursor
from gate.store.db import session
from gate.store.models import AuditEvent
from tests.conftest import POSTGRES_URL
from tests.hub_support import running_hub, throwaway_database
from tests.panel_support import LiveServer
from tests.test_runtime import NOBODY, until

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def hub_database() -> Iterator[str]:
    yield from throwaway_database(POSTGRES_URL)


@pytest.fixture
def hub(hub_database: str, tmp_path: Path) -> Iterator[tuple[Engine, LiveServer]]:
    yield from running_hub(hub_database, tmp_path)


def acked(engine: Engine, order_id: int | None) -> bool:
    with session(engine) as s:
        order = s.get(HubOrder, order_id)
        return order is not None and order.acked_at is not None


async def test_a_hub_order_is_carried_out_once_audited_and_acknowledged(
    hub: tuple[Engine, LiveServer], data_dir: Path
) -> None:
    engine, server = hub
    token_file = data_dir / "hub-token"
    token_file.write_text(add_gate(engine, "door-a") + "\n")
    settings = load_settings(
        gate_id="door-a",
        data_dir=data_dir,
        hub={"url": server.url, "token_file": str(token_file), "interval_seconds": 0.2},
    )
    async with assemble(settings, visitors=NOBODY) as gate:
        task = asyncio.create_task(gate.runtime.run())
        try:
            await asyncio.wait_for(gate.runtime.started.wait(), 60)
            (order,) = orders.issue(engine, "chief", OrderAction.LOCKDOWN_ON, None, "drill")
            await until(lambda: gate.runtime.controller.mode.value == "lockdown", 30)
            await until(lambda: acked(engine, order.id), 30)
            # the ack was lost, say: the gate fetches the order again, and does nothing
            set_cursor(gate.runtime.engine, ORDERS_ACKED, 0)
            await asyncio.sleep(2)
            (lift,) = orders.issue(engine, "chief", OrderAction.LOCKDOWN_OFF, ["door-a"], "over")
            await until(lambda: gate.runtime.controller.mode.value == "normal", 30)
            await until(lambda: acked(engine, lift.id), 30)
            with session(gate.runtime.engine) as s:
                audited = [
                    (a.actor, a.action, a.reason)
                    for a in s.scalars(
                        select(AuditEvent).where(AuditEvent.action.like("lockdown%"))
                    )
                ]
            assert audited == [
                ("chief@hub", "lockdown_on", "drill"),
                ("chief@hub", "lockdown_off", "over"),
            ]

            # the door's audit reaches the hub with its next report
            def at_hub() -> int:
                with session(engine) as s:
                    found = s.scalars(select(HubRecord).where(HubRecord.kind == "audit"))
                    return sum(1 for r in found if r.data["actor"] == "chief@hub")

            await until(lambda: at_hub() == 2, 30)
        finally:
            gate.runtime.stop()
            await task
