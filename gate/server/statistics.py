"""Figures for the statistics page, bucketed in the gate's local time zone.

The database groups by UTC hour (portable between SQLite and PostgreSQL); the
hours are then moved into local days and hours here. That is exact for zones
with whole-hour offsets such as Asia/Ho_Chi_Minh; a half-hour zone would see
each bucket shifted by thirty minutes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from gate.server import queries
from gate.store.models import Outcome, local_midnight

PERIODS = (7, 14, 30, 90)
OCCUPANCY_STEP = timedelta(minutes=15)
ADMITTED = {Outcome.ADMITTED.value, Outcome.ADMITTED_REMINDED.value}
NOT_DENIALS = ADMITTED | {Outcome.PENDING.value}
GROUPS = ("admitted", "denied", "pending")  # what group() sorts outcomes into, in order


def group(outcome: str) -> str:
    """'admitted', 'denied' (refused or never completed) or 'pending'."""
    if outcome in ADMITTED:
        return "admitted"
    return "pending" if outcome == Outcome.PENDING.value else "denied"


@dataclass
class Stats:
    day: date
    days: list[date]
    hourly: dict[str, list[int]] = field(default_factory=dict)  # group -> 24 counts on `day`
    daily: dict[str, list[int]] = field(default_factory=dict)  # group -> count per day
    denials: list[tuple[str, int]] = field(default_factory=list)  # (outcome, count), most first
    masks: dict[str, int] = field(default_factory=dict)
    doses: list[int] = field(default_factory=list)  # per day
    refills: list[int] = field(default_factory=list)  # per day
    occupancy: list[int] = field(default_factory=list)  # at each OCCUPANCY_STEP of `day`

    def daily_rows(self) -> list[tuple[str, int, int, int, int, int]]:
        """The page's daily table and its CSV: day, one count per group, doses, refills."""
        return [
            (d.isoformat(), *(self.daily[g][i] for g in GROUPS), self.doses[i], self.refills[i])
            for i, d in enumerate(self.days)
        ]

    @property
    def total(self) -> int:
        return sum(sum(v) for v in self.daily.values())

    @property
    def compliance(self) -> float | None:
        """Share of checked visitors whose mask was worn correctly; None with nobody checked."""
        checked = sum(self.masks.values())
        return self.masks.get("mask", 0) / checked if checked else None


def compute(engine: Engine, day: date, period: int, zone: ZoneInfo, gate_id: str | None) -> Stats:
    days = [day - timedelta(days=period - 1 - i) for i in range(period)]
    start, end = local_midnight(days[0], zone), local_midnight(day + timedelta(days=1), zone)
    stats = Stats(day=day, days=days)
    index = {d: i for i, d in enumerate(days)}
    stats.hourly = {g: [0] * 24 for g in GROUPS}
    stats.daily = {g: [0] * period for g in GROUPS}
    denials: Counter[str] = Counter()
    for hour, outcome, count in queries.hourly_outcomes(engine, start, end, gate_id):
        local = hour.astimezone(zone)
        if local.date() not in index:
            continue
        g = group(outcome)
        stats.daily[g][index[local.date()]] += count
        if local.date() == day:
            stats.hourly[g][local.hour] += count
        if outcome not in NOT_DENIALS:
            denials[outcome] += count
    stats.denials = denials.most_common()
    stats.masks = {
        str(k): v
        for k, v in queries.mask_labels(engine, start, end, gate_id).items()
        if k is not None
    }
    stats.doses, stats.refills = [0] * period, [0] * period
    for hour, kind, count in queries.hourly_station(
        engine, start, end, gate_id, ("dispensed", "refill")
    ):
        local_day = hour.astimezone(zone).date()
        if local_day in index:
            target = stats.doses if kind == "dispensed" else stats.refills
            target[index[local_day]] += count
    stats.occupancy = occupancy_curve(
        queries.occupancy_moves(engine, local_midnight(day, zone), end, gate_id),
        local_midnight(day, zone),
    )
    return stats


def occupancy_curve(moves: list[tuple[datetime, int]], midnight: datetime) -> list[int]:
    """People inside at the end of each step of the day, counted from zero at midnight.

    Never below zero: an exit without a counted entry (someone let in by a
    key, or before midnight) must not make the building look "owed" people.
    """
    steps = int(timedelta(days=1) / OCCUPANCY_STEP)
    curve, inside, position = [], 0, 0
    for step in range(steps):
        limit = midnight + OCCUPANCY_STEP * (step + 1)
        while position < len(moves) and moves[position][0] < limit:
            inside = max(0, inside + moves[position][1])
            position += 1
        curve.append(inside)
    return curve
