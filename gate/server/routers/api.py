"""JSON API under /api, with the same roles as the pages and its OpenAPI docs behind login.

Authentication is the panel's session cookie; state-changing calls send the
session's CSRF token in the ``X-CSRF-Token`` header (``GET /api/me`` returns it).
Every time it returns is ISO 8601 with its offset, in server.timezone
("2026-11-25T23:30:00+07:00"): the wall-clock time the pages and the CSV show,
and still one exact instant for a program.
The docs page is rendered here from the schema rather than by Swagger UI,
which would pull its scripts from a CDN.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from gate.errors import GateError
from gate.server import queries
from gate.server.filters import (
    BadInput,
    known_parameters_only,
    parse_entry_filter,
    parse_page_position,
)
from gate.server.i18n import N_
from gate.server.routers.entries import Filters, snapshot_file
from gate.server.routers.live import clean_reason
from gate.server.routers.stats import Day, Gate, figures
from gate.server.textinput import Text
from gate.server.users import list_users
from gate.server.web import (
    CurrentUser,
    RowId,
    any_user,
    ensure_session,
    panel,
    render,
    require,
)
from gate.store.models import Role, as_utc


class Problem(BaseModel):
    """Every refusal but a 422's: one sentence, in English."""

    detail: str


PROBLEMS: dict[int, dict[str, Any]] = {
    400: {"model": Problem, "description": "A value the caller can fix; the detail names it."},
    401: {"model": Problem, "description": "Not logged in."},
    403: {
        "model": Problem,
        "description": "The role may not do this, or the X-CSRF-Token header is missing or wrong.",
    },
    404: {"model": Problem, "description": "No such open alert at this gate."},
    409: {"model": Problem, "description": "The gate refused the order (station offline, …)."},
    413: {
        "description": "Request body over 64 KiB.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route can answer besides the login and role checks every one has,
    for the schema (422 FastAPI adds itself to each route that takes input)."""
    return {status: PROBLEMS[status] for status in statuses}


router = APIRouter(prefix="/api", tags=["api"], responses=problems(401, 403))
logged_in = any_user()
security_only = require(Role.SECURITY)
manager_only = require(Role.MANAGER)
admin_only = require(Role.ADMIN)
Guard = Annotated[CurrentUser, Depends(security_only)]


class Me(BaseModel):
    username: str
    role: Role
    csrf_token: str


class OverrideIn(BaseModel):
    reason: Annotated[Text(500), Field(min_length=3)]


class SwitchIn(OverrideIn):
    on: StrictBool = Field(description="JSON true or false; nothing else reads as a switch.")


class EntryOut(BaseModel):
    id: str
    gate_id: str
    seen_at: AwareDatetime
    outcome: str
    mask_label: str | None
    mask_score: float | None
    sanitized: bool
    door_opened: bool
    has_snapshot: bool = Field(
        description="This panel can serve the picture (another gate keeps its own on its disk)."
    )


class EntryPageOut(BaseModel):
    entries: list[EntryOut]
    newer: str | None = Field(description="Pass as ?after= for the page of newer entries.")
    older: str | None = Field(description="Pass as ?before= for the page of older entries.")


class AlertOut(BaseModel):
    id: int
    gate_id: str
    kind: str
    severity: str
    message: str
    raised_at: AwareDatetime


class UserOut(BaseModel):
    username: str
    role: str
    disabled: bool
    locked_until: AwareDatetime | None


Out = TypeVar("Out", bound=BaseModel)


def _out(model: type[Out], source: Any, zone: ZoneInfo, **given: Any) -> Out:
    """``model`` from ``source``'s attributes, its times moved into the panel's zone.

    The store hands back UTC (naive from SQLite); a bare UTC time in the JSON
    read as local time is seven hours off in Ho Chi Minh City.
    """
    values = {k: getattr(source, k) for k in model.model_fields if k not in given}
    return model(
        **{
            k: as_utc(v).astimezone(zone) if isinstance(v, datetime) else v
            for k, v in values.items()
        },
        **given,
    )


@router.get("/me", response_model=Me)
async def me(request: Request, user: Annotated[CurrentUser, Depends(logged_in)]) -> Me:
    return Me(username=user.username, role=user.role, csrf_token=ensure_session(request).csrf)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(logged_in)])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[Depends(logged_in)])
async def docs(request: Request) -> Response:
    return render(request, "api_docs.html", {"schema": request.app.openapi()})


# -- security ------------------------------------------------------------------------------


@router.get("/state", dependencies=[Depends(security_only)])
async def state(request: Request) -> dict[str, Any]:
    """The runtime's snapshot: state, mode, prompt, occupancy, camera and station health."""
    return panel(request).runtime.snapshot()


@router.get("/alerts", response_model=list[AlertOut], dependencies=[Depends(security_only)])
async def alerts(request: Request, response: Response) -> list[AlertOut]:
    """This gate's open alerts, critical ones first (at most 100).

    The ``X-Total-Count`` header counts all of them, so a client knows when
    acknowledging these will bring more into view, as the live page says.
    """
    p = panel(request)
    alerts = await run_in_threadpool(queries.open_alerts, p.engine, p.settings.gate_id)
    response.headers["X-Total-Count"] = str(len(alerts.shown) + alerts.more)
    return [_out(AlertOut, a, p.zone) for a in alerts.shown]


@router.post("/alerts/{alert_id}/ack", status_code=204, responses=problems(404, 413))
async def ack(request: Request, alert_id: RowId, user: Guard) -> Response:
    p = panel(request)
    if (
        await run_in_threadpool(
            queries.acknowledge_alert, p.engine, alert_id, p.settings.gate_id, user.username
        )
        is None
    ):
        raise HTTPException(404, "no such open alert")
    p.runtime.bus.publish("alert_ack", {"id": alert_id, "by": user.username})
    return Response(status_code=204)


async def _run(request: Request, call: Any) -> dict[str, Any]:
    """Carry out one order and answer with the gate's state after it.

    The state, not just "done": ending a staff emergency during a fire leaves
    the mode at ``emergency``, and the client must see that the door stays free.
    """
    try:
        await call
    except GateError as exc:
        raise HTTPException(409, str(exc)) from None
    return panel(request).runtime.snapshot()


def _reason(body: OverrideIn) -> str:
    try:
        return clean_reason(body.reason)
    except GateError:
        raise BadInput("reason", N_("at least 3 characters")) from None


@router.post("/overrides/unlock", responses=problems(400, 409, 413))
async def unlock(request: Request, body: OverrideIn, user: Guard) -> dict[str, Any]:
    runtime = panel(request).runtime
    return await _run(request, runtime.override_unlock(user.username, _reason(body)))


@router.post("/overrides/lockdown", responses=problems(400, 409, 413))
async def lockdown(request: Request, body: SwitchIn, user: Guard) -> dict[str, Any]:
    runtime = panel(request).runtime
    return await _run(request, runtime.set_lockdown(user.username, body.on, _reason(body)))


@router.post("/overrides/emergency", responses=problems(400, 409, 413))
async def emergency(request: Request, body: SwitchIn, user: Guard) -> dict[str, Any]:
    runtime = panel(request).runtime
    return await _run(request, runtime.set_emergency(user.username, body.on, _reason(body)))


# -- manager -------------------------------------------------------------------------------


@router.get(
    "/entries",
    response_model=EntryPageOut,
    dependencies=[Depends(manager_only), Depends(known_parameters_only)],
    responses=problems(400),
)
async def entries(
    request: Request,
    query: Filters,
    before: Annotated[Text(64), Query(description="Older than this page position.")] = "",
    after: Annotated[
        Text(64), Query(description="Newer than this page position; not with before.")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EntryPageOut:
    p = panel(request)
    gates = await run_in_threadpool(queries.gate_ids, p.engine)
    flt = parse_entry_filter(query, p.zone, gates)
    older_than, newer_than = parse_page_position(before, after)
    page = await run_in_threadpool(
        queries.list_entries, p.engine, flt, limit, older_than, newer_than
    )
    data_dir = p.settings.data_dir
    served = await run_in_threadpool(
        lambda: [snapshot_file(data_dir, r.snapshot_path) is not None for r in page.rows]
    )
    return EntryPageOut(
        entries=[
            _out(EntryOut, r, p.zone, has_snapshot=here)
            for r, here in zip(page.rows, served, strict=True)
        ],
        newer=page.newer.encode() if page.newer else None,
        older=page.older.encode() if page.older else None,
    )


@router.get(
    "/stats",
    dependencies=[Depends(manager_only), Depends(known_parameters_only)],
    responses=problems(400),
)
async def stats(
    request: Request,
    day: Day = "",
    days: Annotated[int, Query()] = 7,
    gate: Gate = "",
) -> dict[str, Any]:
    """The statistics page's figures; hours and days are local to server.timezone."""
    result, _gates = await figures(request, day, days, gate)
    return {
        "day": result.day,
        "days": result.days,
        "hourly": result.hourly,
        "daily": result.daily,
        "denials": dict(result.denials),
        "masks": result.masks,
        "compliance": result.compliance,
        "doses": result.doses,
        "refills": result.refills,
        "occupancy_15min": result.occupancy,
    }


# -- admin ---------------------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], dependencies=[Depends(admin_only)])
async def users(request: Request) -> list[UserOut]:
    p = panel(request)
    rows = await run_in_threadpool(list_users, p.engine)
    return [_out(UserOut, u, p.zone) for u in rows]
