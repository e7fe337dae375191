"""Turning query-string text into checked filter values, for pages and the API alike.

Anything that does not parse is a BadInput (answered 400 with the reason),
never a 500 and never a silently ignored filter: a manager exporting "last
week" must not get "everything" because of a typo, in a value or in a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.dependencies.models import Dependant

from gate.server.i18n import N_, fill
from gate.server.queries import Cursor, EntryFilter
from gate.store.models import Outcome

MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_TEXT = 64


class BadInput(ValueError):
    """A filter value the user can fix. The message names the field; the problem is an
    English message id, shown translated on pages (with ``params`` filled in)."""

    def __init__(self, field: str, problem: str, **params: object) -> None:
        self.field, self.problem, self.params = field, problem, params
        super().__init__(self.translated(str))

    def translated(self, translate: Callable[[str], str]) -> str:
        return f"{self.field}: {fill(translate(self.problem), self.params)}"


@dataclass(frozen=True)
class EntryQuery:
    """The raw filter texts as they came, kept for re-filling the form and paging links."""

    start: str = ""
    end: str = ""
    outcome: str = ""
    gate: str = ""

    def params(self) -> dict[str, str]:
        return {
            k: v
            for k, v in {
                "from": self.start,
                "to": self.end,
                "outcome": self.outcome,
                "gate": self.gate,
            }.items()
            if v
        }


def parse_moment(text: str, field: str, zone: ZoneInfo, end_of_day: bool = False) -> datetime:
    """'YYYY-MM-DD' (a whole local day) or 'YYYY-MM-DDTHH:MM[:SS]' local time, to UTC.

    For the end of a range a bare date means "through that day", so the
    exclusive bound is the next local midnight.
    """
    if len(text) > 32:
        raise BadInput(field, N_("too long"))
    whole_day = len(text) == 10
    try:
        if whole_day:
            moment = datetime.combine(date.fromisoformat(text), time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(field, N_("not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")) from None
    # The year is checked on the day as written, before a day is added: 9999-12-31
    # would overflow, and "to 2100-12-31" ends at 2101-01-01 yet is within the limit.
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise BadInput(
            field, N_("year must be between %(low)s and %(high)s"), low=MIN_YEAR, high=MAX_YEAR
        )
    if whole_day and end_of_day:
        moment += timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(ZoneInfo("UTC"))


def known_parameters_only(request: Request) -> None:
    """A dependency for filtered pages: a query parameter the endpoint does not read is
    a BadInput naming it, so "?form=" or "?start=" is refused rather than ignored.

    The names come from the endpoint's own declared parameters (its dependencies'
    included), so a parameter added to an endpoint is accepted without a list to update.
    """
    known: set[str] = set()
    pending: list[Dependant] = [request.scope["route"].dependant]
    while pending:
        dependant = pending.pop()
        known.update(field.alias for field in dependant.query_params)
        pending.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise BadInput(
            unknown[0][:MAX_TEXT],
            N_("unknown parameter (use %(known)s)"),
            known=", ".join(sorted(known)),
        )


def parse_entry_filter(query: EntryQuery, zone: ZoneInfo, gates: list[str]) -> EntryFilter:
    start = parse_moment(query.start, "from", zone) if query.start else None
    end = parse_moment(query.end, "to", zone, end_of_day=True) if query.end else None
    if start is not None and end is not None and end <= start:
        raise BadInput("to", N_("must be after from"))
    outcome = None
    if query.outcome:
        try:
            outcome = Outcome(query.outcome)
        except ValueError:
            raise BadInput("outcome", N_("unknown value")) from None
    if query.gate and query.gate not in gates:
        raise BadInput("gate", N_("unknown gate"))
    return EntryFilter(start, end, outcome, query.gate or None)


def parse_page_position(before: str, after: str) -> tuple[Cursor | None, Cursor | None]:
    """The page asked for: older than ``before`` or newer than ``after``, never both
    (one of them would be dropped in silence)."""
    if before and after:
        raise BadInput("after", N_("give before or after, not both"))
    return _cursor(before, "before"), _cursor(after, "after")


def _cursor(text: str, field: str) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.decode(text)
    except ValueError:
        raise BadInput(field, N_("not a page position from this panel")) from None


def parse_day(text: str | None, zone: ZoneInfo) -> date:
    """A local calendar day for the statistics page; today when not given."""
    if not text:
        return datetime.now(zone).date()
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None or not MIN_YEAR <= day.year <= MAX_YEAR:
        raise BadInput("day", N_("not a date (use YYYY-MM-DD)"))
    return day
