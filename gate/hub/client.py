"""The gate's replication task: its outbox to the hub, the hub's orders to its door.

It runs beside the runtime's loops and waits on nothing of theirs: store reads and
HTTP calls happen on a thread of its own, and the camera → door path never waits
for it. While the hub is away it backs off (1 s, 2 s, 4 s … at most a minute) and
the outbox simply grows; once the hub answers again it sends from the position the
hub acknowledged. Orders are carried out through the runtime's own standing-order
path, audited under the hub user's name, and acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gate import metrics
from gate.config import HubSettings
from gate.errors import GateError
from gate.hub.outbox import (
    ACKED,
    ORDERS_ACKED,
    ORDERS_APPLIED,
    Backlog,
    backlog,
    drop_sent,
    get_cursor,
    read_batch,
    set_cursor,
)
from gate.server.i18n import local_time
from gate.store.records import audit_detail

log = logging.getLogger("gate.hub")

MAX_BACKOFF_SECONDS = 60.0
STANDING_ORDERS = {
    "lockdown_on": ("set_lockdown", True),
    "lockdown_off": ("set_lockdown", False),
    "emergency_on": ("set_emergency", True),
    "emergency_off": ("set_emergency", False),
}


class HubUnavailable(Exception):
    """No answer, or the hub's own failure (5xx): try again later."""


class HubRefusal(Exception):
    """The hub said no (4xx): the status and its one line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


def read_token(hub: HubSettings) -> str:
    if hub.token_file is None:
        raise GateError("hub.url is set but hub.token_file is not")
    try:
        token = hub.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise GateError(f"cannot read hub.token_file {hub.token_file}: {exc.strerror}") from None
    if not token:
        raise GateError(f"hub.token_file {hub.token_file} is empty")
    return token


class HubConnection:
    """The gate's calls to the hub's gate API, blocking (run them off the event loop)."""

    def __init__(self, hub: HubSettings, token: str) -> None:
        assert hub.url is not None
        self.base = hub.url.rstrip("/") + "/api/gate"
        self.token = token
        self.timeout = hub.timeout_seconds

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            if exc.code >= 500:
                raise HubUnavailable(f"{exc.code}: {detail}") from None
            raise HubRefusal(exc.code, detail) from None
        except (OSError, ValueError) as exc:  # refused, reset, timed out, not JSON
            raise HubUnavailable(str(exc) or type(exc).__name__) from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("detail", ""))[:300]
    except (OSError, ValueError, AttributeError):
        return exc.reason if isinstance(exc.reason, str) else ""


class Replicator:
    """Sends the outbox in order, from the position the hub acknowledged."""

    def __init__(self, engine: Any, gate_id: str, hub: HubSettings, connection: HubConnection):
        self.engine = engine
        self.gate_id = gate_id
        self.batch_size = hub.batch_size
        self.connection = connection
        self.acked: int | None = None  # unknown until the hub says, at start and after a gap

    def push(self, status: dict[str, Any]) -> int:
        """Send everything pending (at least one report, so the hub sees the gate alive);
        returns the number of records sent."""
        if self.acked is None:
            self.acked = int(self.connection.call("GET", "/position")["acked_seq"])
            set_cursor(self.engine, ACKED, self.acked)
        sent = 0
        while True:
            batch = read_batch(self.engine, self.gate_id, self.acked, self.batch_size)
            pending = backlog(self.engine, self.gate_id, self.acked)
            body = {
                "from_seq": batch.from_seq,
                "to_seq": batch.to_seq,
                "sent_at": datetime.now(UTC).isoformat(),
                "status": status | {"backlog": pending.records, "lag_s": round(pending.lag_s, 3)},
                "records": batch.records,
            }
            try:
                answer = self.connection.call("POST", "/batches", body)
            except HubRefusal as exc:
                if exc.status == 409:  # the hub holds less than we thought: ask it again
                    self.acked = None
                raise
            self.acked = int(answer["acked_seq"])
            set_cursor(self.engine, ACKED, self.acked)
            sent += len(batch.records)
            if batch.to_seq == batch.from_seq:  # an empty report: nothing more to send
                break
        drop_sent(self.engine, self.gate_id, self.acked)
        return sent

    def backlog(self) -> Backlog:
        after = self.acked if self.acked is not None else get_cursor(self.engine, ACKED)
        return backlog(self.engine, self.gate_id, after)


class HubClient:
    """The replication task of one running gate (`gate.runtime.GateRuntime`)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.hub: HubSettings = settings.hub
        self.gate_id: str = settings.gate_id
        self.engine = runtime.engine
        self.connection = HubConnection(self.hub, read_token(self.hub))
        self.replicator = Replicator(self.engine, self.gate_id, self.hub, self.connection)
        self.last_success: float | None = None
        self.last_error: str = ""
        self.figures = Backlog(0, 0.0)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gate-hub")

    async def run(self) -> None:
        """Report and take orders until cancelled; a failure only delays the next try."""
        failures = 0
        try:
            while True:
                try:
                    await self.sync()
                    failures = 0
                    delay = self.hub.interval_seconds
                except (HubUnavailable, HubRefusal) as exc:
                    failures += 1
                    delay = self._backoff(failures, exc)
                except Exception as exc:  # a bug here must never stop the door
                    failures += 1
                    log.exception("hub replication failed")
                    delay = self._backoff(failures, exc)
                await self._refresh_figures()
                await asyncio.sleep(delay)
        finally:
            self._thread.shutdown(wait=False, cancel_futures=True)

    def _backoff(self, failures: int, exc: Exception) -> float:
        self.last_error = str(exc)[:300]
        if failures == 1:
            log.warning("hub unreachable or refusing (%s); the outbox keeps the records", exc)
        ceiling = min(MAX_BACKOFF_SECONDS, self.hub.interval_seconds * 2 ** (failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    async def sync(self) -> None:
        await self._off_loop(self.replicator.push, self._status())
        await self._take_orders()
        self.last_success = time.time()
        self.last_error = ""
        metrics.HUB_LAST_SUCCESS.set(self.last_success)

    async def _take_orders(self) -> None:
        acked = await self._off_loop(get_cursor, self.engine, ORDERS_ACKED)
        answer = await self._off_loop(self.connection.call, "GET", f"/orders?after={acked}")
        applied = await self._off_loop(get_cursor, self.engine, ORDERS_APPLIED)
        for order in answer["orders"]:
            order_id = int(order["id"])
            result = "done"
            if order_id > applied:  # fetched again before its ack got through: done already
                result = await self._carry_out(order)
                await self._off_loop(set_cursor, self.engine, ORDERS_APPLIED, order_id)
                applied = order_id
            await self._off_loop(
                self.connection.call, "POST", f"/orders/{order_id}/ack", {"result": result}
            )
            await self._off_loop(set_cursor, self.engine, ORDERS_ACKED, order_id)

    async def _carry_out(self, order: dict[str, Any]) -> str:
        actor = f"{str(order['actor'])[:59]}@hub"
        reason = str(order.get("reason") or "")[:500]
        action = str(order["action"])
        log.warning("hub order %s: %s by %s", order["id"], action, actor)
        if action in STANDING_ORDERS:
            method, on = STANDING_ORDERS[action]
            detail = audit_detail(hub_order=order["id"])
            await getattr(self.runtime, method)(actor, on, reason, detail)
            return "done"
        if action == "alert_ack":
            from gate.server.queries import acknowledge_alert

            try:
                alert_id = int(order["subject"])
            except (TypeError, ValueError):
                return "refused"
            alert = await self._off_loop(
                acknowledge_alert, self.engine, alert_id, self.gate_id, actor
            )
            if alert is None:
                return "not_open"
            self.runtime.bus.publish("alert_ack", {"id": alert_id, "by": actor})
            return "done"
        return "unknown"

    def _status(self) -> dict[str, Any]:
        state = self.runtime.snapshot()
        return {
            "mode": state["mode"],
            "state": state["state"],
            "occupancy": state["occupancy"],
            "capacity": state["capacity"],
            "camera_healthy": state["camera"]["healthy"],
            "station_link": state["station"]["link"],
            "fluid_percent": state["station"]["fluid_percent"],
        }

    async def _refresh_figures(self) -> None:
        try:
            self.figures = await self._off_loop(self.replicator.backlog)
        except Exception:  # the store busy or away: the runtime reports that itself
            log.debug("hub backlog not read", exc_info=True)
            return
        metrics.HUB_BACKLOG.set(self.figures.records)
        metrics.HUB_LAG.set(self.figures.lag_s)

    def report(self) -> dict[str, Any]:
        """For the panel and `gate hub status`."""
        success = self.last_success
        zone = ZoneInfo(self.runtime.settings.server.timezone)
        return {
            "url": self.hub.url,
            "backlog": self.figures.records,
            "lag_s": round(self.figures.lag_s, 1),
            "last_success": success,
            "last_success_local": (
                local_time(datetime.fromtimestamp(success, UTC), zone) if success else ""
            ),
            "last_error": self.last_error,
        }

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
