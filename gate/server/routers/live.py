"""The security guard's page: video, gate state, live feed, alerts and overrides.

Overrides are plain HTML forms (they work even if the script fails) that post,
then redirect back (POST/redirect/GET), so a reload never repeats an unlock.
The runtime writes the override's audit row itself; the panel only insists on
a reason first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate.errors import GateError
from gate.events import Event
from gate.server import queries, streams, texts
from gate.server.i18n import N_
from gate.server.textinput import Text
from gate.server.web import (
    CurrentUser,
    RowId,
    cookie_user,
    panel,
    redirect,
    render,
    require,
    translator,
)
from gate.store.models import Role

GUARD_ROLES = frozenset({Role.SECURITY})
SESSION_CHECK_SECONDS = 5.0  # how soon an open stream notices its guard was logged out
security_only = require(*GUARD_ROLES)
router = APIRouter(prefix="/live", dependencies=[Depends(security_only)])
Guard = Annotated[CurrentUser, Depends(security_only)]
Reason = Annotated[Text(500), Form()]
Switch = Annotated[Literal["on", "off"], Form()]

FEED_KINDS = frozenset({"state", "entry", "alert", "alert_ack", "station", "override", "prompt"})
FEED_BACKLOG = 30  # feed items a freshly opened page replays from the bus
DONE_MESSAGES = {
    "unlock": N_("Door unlocked once."),
    "lockdown_on": N_("Lockdown is on."),
    "lockdown_off": N_("Lockdown is off."),
    "emergency_on": N_("Emergency release is on."),
    "emergency_off": N_("Emergency release is off."),
    "emergency_fire": N_(
        "Staff emergency release has ended, but the fire alarm still holds the door released."
    ),
    "occupancy": N_("Occupancy count reset."),
    "ack": N_("Alert acknowledged."),
}
UI_TEXTS = {  # words the page's script needs for items it builds itself
    "ok": N_("OK"),
    "offline": N_("Offline"),
    "ack": N_("Acknowledge"),
    "alert": N_("Alert"),
    "override": N_("Override"),
    "station": N_("Station"),
}
REASON_REQUIRED = N_("Please give a reason (at least 3 characters).")
ALERT_NOT_OPEN = N_(
    "This alert is not waiting for acknowledgement: it was already acknowledged, "
    "or it does not exist at this gate."
)
MIN_REASON = 3


def clean_reason(reason: str) -> str:
    """A real reason, not whitespace: it is what the audit log is read for later."""
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON:
        raise GateError("reason_required")
    return reason


def replay_point(events: list[Event]) -> int:
    """Bus id after which the page's script should replay, to show the last feed items.

    Items, not events: the runtime re-sends an entry as it progresses (every half second
    while the visitor stands there), and the page shows one line per visit.
    """
    items: set[object] = set()
    for event in reversed(events):
        if event.kind not in FEED_KINDS - {"state", "prompt"}:
            continue
        items.add(("entry", event.data.get("id")) if event.kind == "entry" else event.id)
        if len(items) > FEED_BACKLOG:
            return event.id
    return 0


@router.get("")
async def live_page(
    request: Request,
    done: Annotated[Text(32), Query()] = "",
    error: Annotated[Text(32), Query()] = "",
) -> Response:
    _ = translator(request)
    return await _page(
        request,
        _(DONE_MESSAGES[done]) if done in DONE_MESSAGES else "",
        _(REASON_REQUIRED) if error == "reason_required" else "",
    )


async def _page(request: Request, done: str, error: str, status_code: int = 200) -> Response:
    """The page; ``done`` and ``error`` are ready texts (never echoed from the URL)."""
    p = panel(request)
    _ = translator(request)
    # Taken before the alerts are read: every alert published up to here is in the
    # database, so the page's list is the truth for them and the replay must not
    # bring back one acknowledged since.
    drawn = p.runtime.bus.last_id
    alerts = await run_in_threadpool(queries.open_alerts, p.engine, p.settings.gate_id)
    return render(
        request,
        "live.html",
        {
            "snapshot": p.runtime.snapshot(),
            "alerts": alerts,
            "alerts_drawn": drawn,
            "replay_after": replay_point(p.runtime.bus.recent()),
            "texts": {**texts.catalog(_), "ui": {k: _(v) for k, v in UI_TEXTS.items()}},
            "done": done,
            "error": error,
        },
        status_code,
    )


def _feed_data(event: Event) -> dict[str, object] | None:
    return {**event.data, "at": event.at} if event.kind in FEED_KINDS else None


@router.get("/events")
async def live_events(
    request: Request,
    after: Annotated[Text(32), Query()] = "",
    last_event_id: Annotated[Text(32), Header()] = "",
) -> Response:
    p = panel(request)
    stream = streams.sse_stream(
        p.runtime.bus, streams.parse_last_event_id(last_event_id, after), _feed_data
    )
    return streams.endless_response(
        stream, partial(_until_watch_ends, request), "text/event-stream"
    )


@router.get("/stream.mjpg")
async def live_video(request: Request) -> Response:
    p = panel(request)
    stream = streams.mjpeg_stream(
        p.runtime.watch, p.runtime.latest_frame, p.frames, p.settings.server.mjpeg_fps
    )
    return streams.endless_response(
        stream,
        partial(_until_watch_ends, request),
        f"multipart/x-mixed-replace; boundary={streams.MJPEG_BOUNDARY}",
    )


async def _until_watch_ends(request: Request) -> None:
    """A guard's stream lasts until the gate stops or the guard may no longer watch:
    logged out, disabled, re-passworded or no longer on security. Asked every few
    seconds, whether events flow or not."""
    stopping = asyncio.ensure_future(panel(request).runtime.stopping())
    try:
        while not stopping.done():
            user = await run_in_threadpool(cookie_user, request)
            if user is None or not user.may(GUARD_ROLES):
                return
            await asyncio.wait([stopping], timeout=SESSION_CHECK_SECONDS)
    finally:
        stopping.cancel()


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(request: Request, alert_id: RowId, user: Guard) -> Response:
    p = panel(request)
    alert = await run_in_threadpool(
        queries.acknowledge_alert, p.engine, alert_id, p.settings.gate_id, user.username
    )
    if alert is None:
        _ = translator(request)
        return await _page(request, "", _(ALERT_NOT_OPEN), 404)
    p.runtime.bus.publish("alert_ack", {"id": alert_id, "by": user.username})
    return redirect(request, "/live?done=ack")


async def _override(
    request: Request, reason: str, done: str, call: Callable[[str], Awaitable[str | None]]
) -> Response:
    """Run one override with a checked reason; an empty reason re-shows the page with a hint.

    ``call`` may return a more exact ``done`` key than the one asked for.

    A GateError from the runtime (it may refuse, e.g. an unlock while the
    station is offline) is shown to the guard, translated where it is a known
    refusal, with 409.
    """
    try:
        cleaned = clean_reason(reason)
    except GateError:
        return redirect(request, "/live?error=reason_required")
    try:
        done = await call(cleaned) or done
    except GateError as exc:
        refusal = texts.label(texts.COMMAND_REFUSALS, exc, translator(request))
        return await _page(request, "", refusal, 409)
    return redirect(request, f"/live?done={done}")


@router.post("/unlock")
async def unlock(request: Request, reason: Reason, user: Guard) -> Response:
    runtime = panel(request).runtime
    return await _override(
        request, reason, "unlock", lambda r: runtime.override_unlock(user.username, r)
    )


@router.post("/lockdown")
async def lockdown(request: Request, on: Switch, reason: Reason, user: Guard) -> Response:
    runtime = panel(request).runtime
    return await _override(
        request,
        reason,
        f"lockdown_{on}",
        lambda r: runtime.set_lockdown(user.username, on == "on", r),
    )


@router.post("/emergency")
async def emergency(request: Request, on: Switch, reason: Reason, user: Guard) -> Response:
    runtime = panel(request).runtime

    async def switch(cleaned: str) -> str | None:
        await runtime.set_emergency(user.username, on == "on", cleaned)
        # Ended, yet still in emergency: only the fire input holds the gate there now.
        if on == "off" and runtime.snapshot().get("mode") == "emergency":
            return "emergency_fire"
        return None

    return await _override(request, reason, f"emergency_{on}", switch)


@router.post("/occupancy/reset")
async def reset_occupancy(request: Request, reason: Reason, user: Guard) -> Response:
    runtime = panel(request).runtime
    return await _override(
        request, reason, "occupancy", lambda r: runtime.reset_occupancy(user.username, r)
    )
