"""The station as the gate's runtime sees it: an asyncio API over the serial link.

Owns reconnecting: a supervisor task opens a new ``SerialLink`` session whenever
the last one is lost, with backoff while the port is missing. Commands go out
from the event loop one at a time (the link is stop-and-wait) and their acks come
back from the link's reader thread as futures. A command whose ack was lost is
reported as an error, never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from firmware_bridge import firmware
from firmware_bridge import messages as m
from gate.config import StationSettings
from gate.errors import GateError
from gate.sanitizer.link import (
    EventFilter,
    HelloInfo,
    LinkDown,
    LinkError,
    LinkMetrics,
    SerialLink,
    VersionMismatch,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
U32_MAX = 0xFFFFFFFF
# The MCU drops a host silent for 1.5 s; three heartbeats must fit in that.
HEARTBEAT_MAX_SECONDS = firmware.HEARTBEAT_MAX_MS / 3000
SUBSCRIBER_QUEUE_SIZE = 1024


class LinkState(StrEnum):
    CONNECTED = "connected"
    DEGRADED = "degraded"  # retransmits or late heartbeat answers lately
    OFFLINE = "offline"


class StationError(GateError):
    """A station command failed; the message says whether it may have run."""


@dataclass(frozen=True)
class StationEvent:
    kind: str
    value: int | None = None
    ref: int | None = None
    at: float = 0.0  # time.monotonic() when the host learned it


@dataclass(frozen=True)
class StationStatus:
    relay_unlocked: bool
    pump_running: bool
    fluid_percent: int
    door_open: bool
    fire: bool
    tamper: bool
    hands: bool
    firmware: str


@dataclass(frozen=True)
class StationLimits:
    """Limits the host may set in the firmware; it clamps them to its own hard maxima."""

    unlock_max_ms: int = firmware.UNLOCK_MAX_MS
    dispense_max_ms: int = firmware.DISPENSE_MAX_MS
    held_open_ms: int = 30000
    heartbeat_ms: int = firmware.HEARTBEAT_MAX_MS
    fluid_low_pct: int = 15


class Station:
    """Dispenser and door on one MCU, reached over a serial port that may come and go."""

    def __init__(
        self,
        port: str,
        settings: StationSettings,
        *,
        backoff_max_seconds: float = 5.0,
        degraded_hold_seconds: float = 3.0,
    ) -> None:
        self.port = port
        self.settings = settings
        self.backoff_max_seconds = backoff_max_seconds
        self.degraded_hold_seconds = degraded_hold_seconds
        self.last_error: str | None = None
        self._metrics = LinkMetrics()
        self._events = EventFilter()
        self._state = LinkState.OFFLINE
        self._link: SerialLink | None = None
        self._hello: HelloInfo | None = None
        self._limits: StationLimits | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="station")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._command_lock = asyncio.Lock()
        self._subscribers: list[asyncio.Queue[StationEvent]] = []
        self._hands = False
        self._fire: bool | None = None  # as last reported to subscribers; None: never
        self._hands_waiters: set[asyncio.Future[None]] = set()
        self._dispense_waiters: dict[int, asyncio.Future[int]] = {}
        self._dispense_refs = itertools.count(1)
        self._last_trouble = 0.0
        self._ever_connected = False
        self._connecting: SerialLink | None = None
        self._early_events: list[tuple[str, int, int]] = []

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Connect if the station is there; otherwise stay OFFLINE and keep trying.

        Raises StationError only for firmware this gate cannot talk to.
        """
        self._loop = asyncio.get_running_loop()
        try:
            await self._connect()
        except VersionMismatch as exc:
            raise StationError(str(exc)) from None
        except LinkError as exc:
            self.last_error = str(exc)
            log.warning("%s; retrying in the background", exc)
        self._supervisor = asyncio.create_task(self._supervise(), name="station-supervisor")

    async def close(self) -> None:
        """Lock the door if we still can, then let go of the port."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._link is not None:
            with contextlib.suppress(StationError):
                await self.lock()
            await self._drop_link()
        self._executor.shutdown(wait=False)

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def metrics(self) -> LinkMetrics:
        """A snapshot of the link counters (retransmits, crc_errors, rtt_ms_*, reconnects…)."""
        return dataclasses.replace(self._metrics)

    @property
    def firmware(self) -> str:
        return self._hello.firmware if self._hello else ""

    def subscribe(self) -> asyncio.Queue[StationEvent]:
        """A queue that receives every event from now on, link_* transitions included."""
        queue: asyncio.Queue[StationEvent] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.append(queue)
        return queue

    # -- commands -----------------------------------------------------------------

    async def wait_for_hands(self, timeout: float) -> bool:
        """True as soon as hands are under the dispenser, False after ``timeout`` seconds."""
        if self._hands:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._hands_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._hands_waiters.discard(waiter)

    async def dispense(self, ms: int | None = None) -> int:
        """Run the pump for ``ms`` (default: the configured dose) and return the ms it ran.

        The firmware caps the time and stops early if the tank runs empty.
        """
        ms = self.settings.dose_ms if ms is None else ms
        ref = next(self._dispense_refs) & U32_MAX
        done = asyncio.get_running_loop().create_future()
        self._dispense_waiters[ref] = done
        try:
            granted = await self._command(
                "dispense", m.encode_command(m.CMD_DISPENSE, _clamp(ms, 0xFFFF), ref)
            )
            try:
                return await asyncio.wait_for(done, granted[0] / 1000 + 2.0)
            except TimeoutError:
                raise StationError("dispense: the station never reported the dose") from None
        finally:
            self._dispense_waiters.pop(ref, None)

    async def unlock(self, seconds: float, ref: int = 0) -> None:
        """Release the strike for ``seconds`` (the firmware caps it); ``ref`` comes back in door events."""
        ms = _clamp(round(seconds * 1000), U32_MAX)
        (granted,) = await self._command(
            "unlock", m.encode_command(m.CMD_UNLOCK, ms, ref & U32_MAX)
        )
        if granted < ms:
            log.info("station capped unlock %s to %d ms", ref, granted)

    async def lock(self) -> None:
        await self._command("lock", m.encode_command(m.CMD_LOCK))

    async def status(self) -> StationStatus:
        flags, fluid, _, _ = await self._command("status", m.encode_command(m.CMD_STATUS))
        self._hands = bool(flags & m.STATUS_HANDS)
        return StationStatus(
            relay_unlocked=bool(flags & m.STATUS_RELAY),
            pump_running=bool(flags & m.STATUS_PUMP),
            fluid_percent=fluid,
            door_open=bool(flags & m.STATUS_DOOR_OPEN),
            fire=bool(flags & m.STATUS_FIRE),
            tamper=bool(flags & m.STATUS_TAMPER),
            hands=self._hands,
            firmware=self.firmware,
        )

    async def configure(self, limits: StationLimits) -> StationLimits:
        """Set limits (kept and re-sent after every reconnect); returns what the firmware took."""
        self._limits = limits
        return StationLimits(*await self._command("configure", _configure_payload(limits)))

    async def _command(self, what: str, payload: bytes) -> tuple[int, ...]:
        # Stop-and-wait: one command on the line at a time. The line is released when
        # the link settles the command, not when our caller stops waiting for it, so a
        # caller's timeout can never let the next command overtake an unacked seq.
        await self._command_lock.acquire()
        link = self._link
        try:
            if link is None:
                raise LinkDown(f"station offline ({self.last_error or 'not connected'})")
            settled = asyncio.wrap_future(link.submit(payload))
        except LinkError as exc:
            self._command_lock.release()
            raise StationError(f"station {what}: {exc}") from None
        settled.add_done_callback(self._release_line)
        try:
            reply = await asyncio.shield(settled)
        except LinkError as exc:
            raise StationError(
                f"station {what}: link lost before the ack ({exc}); not retried, it may have run"
            ) from None
        decoded = m.decode_reply(reply)
        if decoded is None:
            raise StationError(f"station {what}: unreadable reply {reply.hex()}")
        rsp, values = decoded
        if rsp == m.RSP_REFUSED:
            if values[0] == m.REFUSED_NO_SESSION:
                link.lose("station dropped the session (it missed our heartbeat)")
            reason = m.REFUSAL_TEXT.get(values[0], f"reason {values[0]}")
            raise StationError(f"station refused {what}: {reason}")
        return values

    def _release_line(self, settled: asyncio.Future[bytes]) -> None:
        if not settled.cancelled():
            settled.exception()  # seen here: a caller who gave up will not look
        self._command_lock.release()

    # -- connection management ---------------------------------------------------

    async def _in_worker(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _connect(self) -> None:
        settings = self.settings
        link = SerialLink(
            self.port,
            baudrate=settings.baudrate,
            ack_timeout=settings.ack_timeout_seconds,
            retries=settings.retries,
            heartbeat=min(settings.heartbeat_seconds, HEARTBEAT_MAX_SECONDS),
            metrics=self._metrics,
            events=self._events,
            on_event=self._threadsafe(lambda *event: self._on_link_event(link, *event)),
            on_lost=self._threadsafe(lambda reason: self._on_lost(link)),
            on_trouble=self._threadsafe(self._on_trouble),
        )
        self._connecting, self._early_events = link, []
        try:
            self._hello = await self._in_worker(link.connect)
        finally:
            self._connecting = None
        self._lost.clear()
        self._link = link
        if not link.alive:  # lost between hello and here: its callback saw no owner
            self._lost.set()
        self.last_error = None
        if self._ever_connected:
            self._metrics.reconnects += 1
        self._ever_connected = True
        for event in self._early_events:  # the events the station kept while unplugged
            self._on_event(*event)
        self._early_events = []
        try:
            if self._limits is not None:
                await self.configure(self._limits)
            self._reconcile_fire(await self.status())  # and whether hands are already there
        except StationError as exc:
            log.warning("station setup after connect failed: %s", exc)
        # Announced last: what the station says about the fire input must reach the gate
        # before "connected" does, or a gate that still thinks the fire is on would
        # send its release to the door first.
        self._set_state(LinkState.CONNECTED)

    def _reconcile_fire(self, status: StationStatus) -> None:
        """Report the fire input as the station sees it now, if that is news.

        The station keeps only its last few events while unplugged, so a ``fire_off``
        can be lost under others; and a restarted gate never saw the ``fire_on`` that
        its predecessor got. Either way the gate would hold the wrong mode, and with it
        a released door, for as long as the link lasts.
        """
        if self._fire is None and not status.fire:
            self._fire = False  # the gate starts out assuming no fire: nothing to say
        elif status.fire != self._fire:
            self._on_event("fire_on" if status.fire else "fire_off", 0, 0)

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            if self._link is None:
                try:
                    await self._connect()
                    backoff = 0.1
                except LinkError as exc:
                    if self.last_error != str(exc):
                        (log.error if isinstance(exc, VersionMismatch) else log.warning)("%s", exc)
                    self.last_error = str(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_seconds)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.degraded_hold_seconds / 3)
            if self._lost.is_set():
                self.last_error = self._link.lost_reason
                await self._drop_link()
            elif (
                self._state is LinkState.DEGRADED
                and time.monotonic() - self._last_trouble > self.degraded_hold_seconds
            ):
                self._set_state(LinkState.CONNECTED)

    async def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await self._in_worker(link.close)
        self._set_state(LinkState.OFFLINE)

    # -- events -------------------------------------------------------------------

    def _threadsafe(self, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a callback so link threads can call it; it then runs on the event loop."""

        def call(*args: object) -> None:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # loop closing under us
                    loop.call_soon_threadsafe(callback, *args)

        return call

    def _on_link_event(self, link: SerialLink, name: str, value: int, ref: int) -> None:
        if link is self._link:
            self._on_event(name, value, ref)
        elif link is self._connecting:
            self._early_events.append((name, value, ref))

    def _on_event(self, name: str, value: int, ref: int) -> None:
        if name in ("hands_present", "hands_absent"):
            self._hands = name == "hands_present"
            if self._hands:
                for waiter in self._hands_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        elif name in ("fire_on", "fire_off"):
            self._fire = name == "fire_on"
        elif name == "dispensed":
            waiter = self._dispense_waiters.get(ref)
            if waiter is not None and not waiter.done():
                waiter.set_result(value)
        self._publish(StationEvent(name, value, ref))

    def _on_lost(self, link: SerialLink) -> None:
        if link is self._link:
            self._lost.set()

    def _on_trouble(self) -> None:
        self._last_trouble = time.monotonic()
        if self._state is LinkState.CONNECTED:
            self._set_state(LinkState.DEGRADED)

    def _set_state(self, state: LinkState) -> None:
        if state is not self._state:
            self._state = state
            log.info("station link %s", state)
            self._publish(StationEvent(f"link_{state}"))

    def _publish(self, event: StationEvent) -> None:
        event = dataclasses.replace(event, at=time.monotonic())
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a stalled subscriber loses its oldest event, not the link
            queue.put_nowait(event)


def _clamp(value: int, high: int) -> int:
    return max(0, min(value, high))


def _configure_payload(limits: StationLimits) -> bytes:
    return m.encode_command(
        m.CMD_CONFIGURE,
        _clamp(limits.unlock_max_ms, U32_MAX),
        _clamp(limits.dispense_max_ms, 0xFFFF),
        _clamp(limits.held_open_ms, U32_MAX),
        _clamp(limits.heartbeat_ms, 0xFFFF),
        _clamp(limits.fluid_low_pct, 100),
    )
