"""What the soak measures and what must hold: the station's own log of what it did,
checked against the store, the camera's ground truth and the fault log.

The store's times come from the gate's clock, which the soak steps; they are put
back on the real clock with the offsets the soak set before anything is compared.
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gate.soak.scene import Visit
from gate.store.models import Entry, Outcome

RELOCK_GRACE_SECONDS = 1.0
WARM_UP_SECONDS = 600.0  # the ten minutes; a short soak uses its first third
LIFE_WARM_UP_SECONDS = 60.0  # a (re)started gate loads its models and fills its caches
CALM_MARGIN_SECONDS = (25.0, 5.0)  # no fault this long before / after a visit to call it calm
STREAMS_OF_THE_SOAK = 3  # the kiosk and two live views
STARVED_FRACTION = 0.7  # analysing fewer of the camera's frames than this: starved
SAMPLE_REACH_SECONDS = 5.0  # a sample's rate covers the seconds before it


def process_usage(pid: int) -> tuple[float, int, int] | None:
    """(resident MB, open fds, threads) of a process, from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
    return rss_kb / 1024, fds, int(fields.get("Threads", "0"))


def scrape_metrics(port: int) -> dict[str, float]:
    """The gate's /metrics, each metric summed over its labels; {} when it does not answer."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
    except (OSError, http.client.HTTPException):
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            key = name.split("{", 1)[0]
            values[key] = values.get(key, 0.0) + float(value)
    return values


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def wall(moment: datetime) -> float:
    """A stored time (naive from SQLite) as a POSIX timestamp."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def decision_ms(seen: datetime, first: datetime | None, decided: datetime | None) -> float | None:
    """From the face first seen to the gate's first decision about it."""
    decision = first or decided
    if decision is None:
        return None
    ms = (wall(decision) - wall(seen)) * 1000
    return ms if 0 <= ms < 10_000 else None  # across a clock step: no figure


def read_actuations(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def count_by_kind(faults: list) -> dict[str, int]:
    return dict(Counter(f.kind for f in faults))


@dataclass
class Check:
    """Every invariant of the issue, over one run's evidence."""

    visits: list[Visit]
    entries: list[Entry]
    alerts: list[tuple[int, str]]
    audit_actions: list[str]
    actuations: list[dict[str, Any]]
    faults: list
    relay_periods: list[tuple[float, float, bool]]
    overrides: list[tuple[float, float]]
    clock_periods: list[tuple[float, float, int]]
    lives: list
    kiosk_stale: list[tuple[float, float, str, str]]
    announced: dict[str, str]
    fps_samples: list[tuple[float, float]]
    camera_fps: float
    camera_started: float
    unlock_seconds: float
    ended: float

    def __post_init__(self) -> None:
        self._ends = [v.end for v in self.visits]
        self.seen = {e.id: self.real_time(e.seen_at) for e in self.entries}
        self.starved_misses = 0

    def real_time(self, moment: datetime) -> float:
        """A stored time on the real clock: the offset in force when it was written."""
        t = wall(moment)
        for start, end, offset in self.clock_periods:
            if start <= t - offset <= end:
                return t - offset
        return t

    def visit_at(self, t: float) -> Visit | None:
        rel = t - self.camera_started
        i = bisect.bisect_right(self._ends, rel)
        if i < len(self.visits) and self.visits[i].start <= rel:
            return self.visits[i]
        return None

    def fire_windows(self) -> list[tuple[float, float]]:
        # The emergency release is a 30 s pulse the firmware ends by itself or on a lock.
        return [
            (f.started - 1, (f.recovered or f.ended) + 35) for f in self.faults if f.kind == "fire"
        ]

    def violations(self) -> list[str]:
        found: list[str] = []
        by_ref = {e.unlock_ref: e for e in self.entries}
        fires = self.fire_windows()
        override_matches = 0
        for act in self.actuations:
            if act["kind"] != "unlock":
                continue
            t, ref = act["t"], act["ref"]
            if ref == 0:
                if any(a <= t <= b for a, b in fires):
                    continue
                if any(asked - 1 <= t <= answered + 3 for asked, answered in self.overrides):
                    override_matches += 1
                    continue
                found.append(f"unlock at {t:.1f} with ref 0 and no override or fire")
                continue
            entry = by_ref.get(ref)
            if entry is None:
                found.append(f"unlock at {t:.1f} (ref {ref}) with no entry in the store")
            elif Outcome(entry.outcome).denied:
                found.append(
                    f"unlock at {t:.1f} after a {entry.outcome} decision (entry {entry.id})"
                )
        if override_matches > self.audit_actions.count("override_unlock"):
            found.append("more override unlocks than override_unlock audit rows")
        found += self._ground_truth()
        found += self._relocks(fires)
        found += self._faults()
        found += [
            f"kiosk showed {shown!r} while the gate's prompt was {gate!r} for {b - a:.1f} s at {a:.1f}"
            for a, b, shown, gate in self.kiosk_stale
        ]
        found += self._exits()
        return found

    def _ground_truth(self) -> list[str]:
        found: list[str] = []
        admitted: Counter[int] = Counter()
        logged: set[int] = set()
        for entry in self.entries:
            visit = self.visit_at(self.seen[entry.id] + 0.05)
            if visit is None:
                continue
            logged.add(visit.index)
            if Outcome(entry.outcome).admitted:
                admitted[visit.index] += 1
                if not visit.kind.may_be_admitted:
                    found.append(f"{visit.key} was admitted (entry {entry.id})")
        found += [f"visitor #{i} admitted {n} times" for i, n in admitted.items() if n > 1]
        for visit in self.visits:
            if visit.kind.name == "masked" and visit.index not in logged and self._calm(visit):
                if self._starved(visit):
                    self.starved_misses += 1
                else:
                    found.append(f"{visit.key} in a calm moment left no entry")
        stored = {e.id for e in self.entries}
        found += [
            f"entry {i} ({outcome}) announced but not stored"
            for i, outcome in self.announced.items()
            if i not in stored
        ]
        return found

    def _starved(self, visit: Visit) -> bool:
        """The gate analysed too few frames to follow a face (a machine too busy for it):
        a visitor missed then is a figure of the machine, not an entry the store lost."""
        start = self.camera_started + visit.start - SAMPLE_REACH_SECONDS
        end = self.camera_started + visit.end + SAMPLE_REACH_SECONDS
        rates = [fps for t, fps in self.fps_samples if start <= t <= end]
        return not rates or min(rates) < STARVED_FRACTION * self.camera_fps

    def _calm(self, visit: Visit) -> bool:
        """No fault near the visit, and the gate up (and warm) all through it."""
        start = self.camera_started + visit.start
        end = self.camera_started + visit.end
        before, after = CALM_MARGIN_SECONDS
        for f in self.faults:
            if f.started < end + after and (f.recovered or f.ended) > start - before:
                return False
        for life in self.lives:
            if life.started + LIFE_WARM_UP_SECONDS <= start and (life.ended or self.ended) >= end:
                return True
        return False

    def _relocks(self, fires: list[tuple[float, float]]) -> list[str]:
        found: list[str] = []
        unlocks = [a for a in self.actuations if a["kind"] == "unlock"]
        for start, end, fire in self.relay_periods:
            if fire or any(a <= start <= b for a, b in fires):
                continue
            pulses = [a["ms"] for a in unlocks if start - 1.5 <= a["t"] <= end]
            if not pulses:
                found.append(f"relay released at {start:.1f} with no unlock the station ran")
                continue
            allowed = max(pulses) / 1000 + RELOCK_GRACE_SECONDS
            if end - start > allowed + 0.5:  # two relay polls of slack
                found.append(
                    f"relay released {end - start:.1f} s at {start:.1f} (pulse {allowed:.1f})"
                )
        return found

    def _faults(self) -> list[str]:
        found: list[str] = []
        from gate.soak.faults import FAULT_KINDS

        expected = {k.name: k.alerts for k in FAULT_KINDS}
        for f in self.faults:
            low, high = f.alert_ids
            raised = {kind for i, kind in self.alerts if low < i <= high}
            if expected[f.kind] and not expected[f.kind] & raised:
                found.append(
                    f"{f.kind} at {f.started:.1f} raised none of {sorted(expected[f.kind])}"
                )
            if f.recovered is None:
                found.append(f"{f.kind} at {f.started:.1f}: the gate was not normal again")
            answers = f.detail.get("answers")
            if answers and set(answers) - {401, 429}:
                found.append(f"wrong logins at {f.started:.1f} answered {answers}")
            if f.kind == "event_crowd":
                if f.detail.get("connected") != 50:
                    found.append(
                        f"event crowd at {f.started:.1f}: {f.detail.get('connected')}/50 served"
                    )
                left = f.detail.get("sse_clients_after")
                if left is None or left > STREAMS_OF_THE_SOAK:
                    found.append(f"event crowd at {f.started:.1f}: {left} streams still open")
        refused = sum(f.detail.get("answers", {}).get(401, 0) for f in self.faults)
        if self.audit_actions.count("login_failed") < refused:
            found.append("wrong logins refused without a login_failed audit row")
        return found

    def _exits(self) -> list[str]:
        """Every exit of the gate but the last (the soak's own stop) must have a cause."""
        causes = ("gate_killed", "disk_full", "database_restart")
        found = []
        for life in self.lives[:-1]:
            if not any(
                f.kind in causes and f.started - 1 <= life.ended <= (f.recovered or f.ended) + 5
                for f in self.faults
            ):
                found.append(
                    f"gate exited with {life.code} at {life.ended:.1f}: {life.stderr_tail}"
                )
        return found

    def entry_log(self) -> list[dict[str, Any]]:
        """Each entry on the real clock, with the visitor the camera showed then."""
        log = []
        for e in sorted(self.entries, key=lambda e: self.seen[e.id]):
            visit = self.visit_at(self.seen[e.id] + 0.05)
            log.append(
                {
                    "seen": round(self.seen[e.id], 2),
                    "visitor": visit.key if visit else None,
                    "outcome": e.outcome,
                    "ref": e.unlock_ref,
                    "id": e.id,
                }
            )
        return log

    def outcome_counts(self) -> dict[str, int]:
        return dict(Counter(e.outcome for e in self.entries))

    def latencies(self) -> list[float]:
        """Decision latency of each decided entry, in the order the visitors came."""
        ordered = sorted(self.entries, key=lambda e: self.seen[e.id])
        return [
            ms
            for e in ordered
            if (ms := decision_ms(e.seen_at, e.first_decided_at, e.decided_at)) is not None
        ]


def pooled_slope(samples: list[dict[str, Any]], key: str, lives: list, warm_up: float) -> float:
    """Growth per hour within each life of the process, pooled: a restart resets memory,
    so a leak shows as growth inside lives, not across them."""
    started = {life.pid: life.started for life in lives}
    groups: dict[int, list[tuple[float, float]]] = {}
    for s in samples:
        pid, value = s.get("gate_pid"), s.get(key)
        if pid is None or value is None or pid not in started:
            continue
        if s["t"] < warm_up or s["_wall"] - started[pid] < LIFE_WARM_UP_SECONDS:
            continue
        groups.setdefault(pid, []).append((s["t"] / 3600, float(value)))
    sxx = sxy = 0.0
    for points in groups.values():
        if len(points) < 3:
            continue
        mx = sum(p[0] for p in points) / len(points)
        my = sum(p[1] for p in points) / len(points)
        sxx += sum((p[0] - mx) ** 2 for p in points)
        sxy += sum((p[0] - mx) * (p[1] - my) for p in points)
    return sxy / sxx if sxx > 0 else float("nan")


def figures(
    samples: list[dict[str, Any]], minutes: float, check: Check, began: float
) -> dict[str, Any]:
    """The issue's --json figures (growth after the warm-up; latency first vs last 10 %)."""
    for s in samples:
        s["_wall"] = began + s["t"]
    warm_up = min(WARM_UP_SECONDS, minutes * 60 / 3)
    after = [s for s in samples if s["t"] >= warm_up]
    hours = (after[-1]["t"] - after[0]["t"]) / 3600 if len(after) > 1 else 0.0
    rss = pooled_slope(samples, "gate_rss_mb", check.lives, warm_up)
    fds = pooled_slope(samples, "gate_fds", check.lives, warm_up)
    threads = pooled_slope(samples, "gate_threads", check.lives, warm_up)
    for s in samples:
        del s["_wall"]
    latencies = check.latencies()
    tenth = max(1, len(latencies) // 10)
    return {
        "warm_up_minutes": round(warm_up / 60, 1),
        "rss_slope_mb_per_h": _round(rss, 2),
        "fd_growth": _round(fds * hours, 1),
        "thread_growth": _round(threads * hours, 1),
        "wal_max_mb": max((s.get("wal_mb", 0) for s in samples), default=0),
        "latency_p95_first_ms": _round(percentile(latencies[:tenth], 95), 1),
        "latency_p95_last_ms": _round(percentile(latencies[-tenth:], 95), 1),
    }


def _round(value: float, digits: int) -> float | None:
    return None if value != value else round(value, digits)  # NaN: no figure
