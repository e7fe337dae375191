"""Statistics page: charts as inline SVG, each with its numbers in a table beside it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gate.server import charts, queries, statistics
from gate.server.csvexport import csv_download
from gate.server.filters import BadInput, known_parameters_only, parse_day
from gate.server.i18n import N_
from gate.server.textinput import Text
from gate.server.web import panel, render, require, translator
from gate.store.models import Role

router = APIRouter(prefix="/stats", dependencies=[Depends(require(Role.MANAGER))])
DAILY_HEADER = ("day", "admitted", "not_admitted", "pending", "doses", "refills")
Day = Annotated[Text(10), Query()]
Gate = Annotated[Text(64), Query()]


async def figures(
    request: Request, day: str, days: int, gate: str
) -> tuple[statistics.Stats, list[str]]:
    """Checked inputs to computed figures; shared with the CSV export and the JSON API."""
    p = panel(request)
    if days not in statistics.PERIODS:
        raise BadInput(
            "days", N_("one of %(choices)s"), choices=", ".join(map(str, statistics.PERIODS))
        )
    gates = await run_in_threadpool(queries.gate_ids, p.engine)
    if gate and gate not in gates:
        raise BadInput("gate", N_("unknown gate"))
    stats = await run_in_threadpool(
        statistics.compute, p.engine, parse_day(day, p.zone), days, p.zone, gate or None
    )
    return stats, gates


@router.get("/daily.csv", dependencies=[Depends(known_parameters_only)])
async def daily_csv(request: Request, day: Day = "", days: int = 7, gate: Gate = "") -> Response:
    """The daily table of the page, for a spreadsheet: one row per local day."""
    stats, _gates = await figures(request, day, days, gate)
    name = f"stats-{stats.day.isoformat()}-{days}d{'-' + gate if gate else ''}.csv"
    p = panel(request)
    return csv_download(
        name, DAILY_HEADER, [stats.daily_rows()], p.zone, p.settings.server.csv_separator
    )


@router.get("", dependencies=[Depends(known_parameters_only)])
async def stats_page(request: Request, day: Day = "", days: int = 7, gate: Gate = "") -> Response:
    _ = translator(request)
    stats, gates = await figures(request, day, days, gate)
    chosen = stats.day
    day_labels = [d.strftime("%d/%m") for d in stats.days]
    hours = [f"{h:02d}" for h in range(24)]
    names = {"admitted": _("Admitted"), "denied": _("Not admitted"), "pending": _("Pending")}
    step_labels = [f"{h:02d}:00" if m == 0 else "" for h in range(24) for m in (0, 15, 30, 45)]
    return render(
        request,
        "stats.html",
        {
            "stats": stats,
            "day": chosen.isoformat(),
            "days": days,
            "gate": gate,
            "gates": gates,
            "periods": statistics.PERIODS,
            "day_labels": day_labels,
            "hours": hours,
            "group_names": names,
            "hourly_chart": charts.bar_chart(
                _("Entries per hour"),
                hours,
                [charts.Series(names[g], v) for g, v in stats.hourly.items()],
            ),
            "daily_chart": charts.bar_chart(
                _("Entries per day"),
                day_labels,
                [charts.Series(names[g], v) for g, v in stats.daily.items()],
            ),
            "doses_chart": charts.bar_chart(
                _("Sanitizer doses per day"), day_labels, [charts.Series(_("Doses"), stats.doses)]
            ),
            "occupancy_chart": charts.step_chart(
                _("Occupancy over the day"), step_labels, stats.occupancy
            ),
        },
    )
