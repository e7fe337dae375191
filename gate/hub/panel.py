"""The hub panel: the site at a glance, every door's entries, alerts and audit, and
site-wide orders. The gate panel's look, roles, accounts and login, by import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate.errors import GateError
from gate.hub import orders, site
from gate.hub.models import OrderAction, RecordKind
from gate.server.csvexport import csv_download
from gate.server.i18n import N_
from gate.server.web import (
    CurrentUser,
    NotAuthenticated,
    panel,
    redirect,
    render,
    require,
    translator,
    user_of,
)
from gate.store.models import Role, local_midnight

router = APIRouter()
Viewer = Annotated[CurrentUser, Depends(require(Role.SECURITY, Role.MANAGER))]
Manager = Annotated[CurrentUser, Depends(require(Role.MANAGER))]
Guard = Annotated[CurrentUser, Depends(require(Role.SECURITY))]
Name = Annotated[str, Query(max_length=200)]
Reason = Annotated[str, Form(max_length=500)]

NAV = (
    ("/site", N_("Site"), frozenset({Role.SECURITY, Role.MANAGER})),
    ("/site/entries", N_("Entries"), frozenset({Role.MANAGER})),
    ("/site/alerts", N_("Alerts"), frozenset({Role.SECURITY})),
    ("/site/audit", N_("Audit log"), frozenset({Role.MANAGER})),
)
ORDER_DONE = {
    OrderAction.LOCKDOWN_ON: N_("Lockdown ordered."),
    OrderAction.LOCKDOWN_OFF: N_("Lockdown lifted."),
    OrderAction.EMERGENCY_ON: N_("Emergency release ordered."),
    OrderAction.EMERGENCY_OFF: N_("Emergency release lifted."),
}
ENTRY_COLUMNS = ("gate", "id", "seen", "outcome", "mask_label", "mask_score", "received")


@router.get("/")
async def home(request: Request) -> Response:
    if user_of(request) is None:
        raise NotAuthenticated()
    return redirect(request, "/site")


def _scope(request: Request, centre: str, gate: str) -> tuple[str | None, list[str] | None]:
    """The centre asked for (None: all) and the doors it covers (None: all doors)."""
    engine = panel(request).engine
    chosen = centre if centre in site.centres(engine) else None
    if gate:
        return chosen, [gate]
    return chosen, None if chosen is None else site.gate_ids(engine, chosen)


@router.get("/site")
async def overview(request: Request, user: Viewer, centre: Name = "", done: Name = "") -> Response:
    p = panel(request)
    chosen, _gates = await run_in_threadpool(_scope, request, centre, "")
    today = local_midnight(datetime.now(p.zone).date(), p.zone)
    found = await run_in_threadpool(
        site.overview, p.engine, today, p.settings.hub.offline_after_seconds, chosen
    )
    _ = translator(request)
    return render(
        request,
        "hub_site.html",
        {
            "centres": found,
            "all_centres": await run_in_threadpool(site.centres, p.engine),
            "centre": chosen,
            "recent_orders": await run_in_threadpool(orders.recent, p.engine, 10),
            "may_order": user.may(frozenset({Role.SECURITY})),
            "message": _(ORDER_DONE[OrderAction(done)]) if done in ORDER_DONE else "",
        },
    )


@router.post("/site/orders")
async def give_order(
    request: Request,
    user: Guard,
    action: Annotated[OrderAction, Form()],
    reason: Reason,
    gate: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Lockdown or emergency release, or their lifting, for one door or (no door) all."""
    if action not in orders.STANDING:
        raise GateError("not a site-wide order")
    targets = [gate] if gate else None
    await run_in_threadpool(
        orders.issue, panel(request).engine, user.username, action, targets, reason.strip()
    )
    return redirect(request, "/site?" + urlencode({"done": action.value}))


def _when(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/site/entries")
async def entries(
    request: Request, _user: Manager, centre: Name = "", gate: Name = "", before: Name = ""
) -> Response:
    p = panel(request)
    chosen, gates = await run_in_threadpool(_scope, request, centre, gate)
    rows = await run_in_threadpool(
        site.records, p.engine, RecordKind.ENTRY, gates, _when(before), 100
    )
    older = ""
    if len(rows) == 100:
        older = "/site/entries?" + urlencode(
            {"centre": chosen or "", "gate": gate, "before": rows[-1].at.isoformat()}
        )
    query = urlencode({"centre": chosen or "", "gate": gate})
    return render(
        request,
        "hub_entries.html",
        {
            "rows": rows,
            "gates": await run_in_threadpool(site.gate_ids, p.engine, chosen),
            "all_centres": await run_in_threadpool(site.centres, p.engine),
            "centre": chosen,
            "gate": gate,
            "older_url": older,
            "export_url": f"/site/entries.csv?{query}",
        },
    )


@router.get("/site/entries.csv")
async def export(request: Request, _user: Manager, centre: Name = "", gate: Name = "") -> Response:
    p = panel(request)
    _chosen, gates = await run_in_threadpool(_scope, request, centre, gate)

    def rows() -> Any:
        for page in site.all_records(p.engine, RecordKind.ENTRY, gates):
            yield [
                (
                    r.gate_id,
                    r.record_id,
                    r.at,
                    r.data.get("outcome"),
                    r.data.get("mask_label"),
                    r.data.get("mask_score"),
                    r.received_at,
                )
                for r in page
            ]

    return csv_download(
        "site-entries.csv", ENTRY_COLUMNS, rows(), p.zone, p.settings.server.csv_separator
    )


@router.get("/site/alerts")
async def alerts(request: Request, _user: Guard, centre: Name = "", gate: Name = "") -> Response:
    p = panel(request)
    chosen, gates = await run_in_threadpool(_scope, request, centre, gate)
    rows = await run_in_threadpool(site.open_alerts, p.engine, gates)
    pending = {
        (o.gate_id, o.subject)
        for o in await run_in_threadpool(orders.recent, p.engine, 500)
        if o.action == OrderAction.ACK_ALERT.value and o.acked_at is None
    }
    return render(
        request,
        "hub_alerts.html",
        {
            "rows": rows,
            "pending": pending,
            "all_centres": await run_in_threadpool(site.centres, p.engine),
            "centre": chosen,
        },
    )


@router.post("/site/alerts/{gate}/{alert_id}/ack")
async def acknowledge(request: Request, gate: str, alert_id: int, user: Guard) -> Response:
    """Sent to the door as an order: the door acknowledges its own alert, and the
    acknowledgement comes back here with the door's next report."""
    await run_in_threadpool(
        orders.issue,
        panel(request).engine,
        user.username,
        OrderAction.ACK_ALERT,
        [gate],
        "",
        str(alert_id),
    )
    return redirect(request, "/site/alerts")


@router.get("/site/audit")
async def audit(request: Request, _user: Manager, centre: Name = "", gate: Name = "") -> Response:
    p = panel(request)
    chosen, gates = await run_in_threadpool(_scope, request, centre, gate)
    return render(
        request,
        "hub_audit.html",
        {
            "doors": await run_in_threadpool(site.records, p.engine, RecordKind.AUDIT, gates),
            "hub": await run_in_threadpool(site.hub_audit, p.engine),
            "all_centres": await run_in_threadpool(site.centres, p.engine),
            "centre": chosen,
        },
    )
